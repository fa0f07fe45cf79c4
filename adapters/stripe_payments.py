"""The payment gateway on Stripe: PaymentIntents confirmed at creation, and refunds.

Each call sends the idempotency key of the order and the saga's attempt
(:func:`application.external.charge_idempotency_key`). stripe-python's own network
retries (``max_network_retries``) resend the request with the same key, so a retry after
a timeout or a dropped connection replays Stripe's stored response instead of charging
again.

Settings come from the environment:

- ``STRIPE_API_KEY`` (required): the secret key, ``sk_test_...`` outside production.
- ``STRIPE_API_BASE`` (optional): another API address, e.g. the local fake's
  ``http://127.0.0.1:12111``. Unset means Stripe's own API.
- ``STRIPE_CONNECT_TIMEOUT_SECONDS`` (default 3), ``STRIPE_READ_TIMEOUT_SECONDS``
  (default 10) and ``STRIPE_MAX_NETWORK_RETRIES`` (default 2). One call can take up to
  (retries + 1) x (connect + read timeout) plus the retry delays, about 41 s with the
  defaults, so the function's timeout must be longer.

Logs carry the order id, attempt, payment id, amount and status. They never carry the API
key, the payment method or a request payload, and Stripe's error messages are logged with
object ids such as ``pm_...`` masked.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

import stripe
from aws_lambda_powertools import Logger

from adapters.settings import environment, http_url, number_setting, require_setting
from application.external import (
    PaymentAlreadyRefundedError,
    PaymentConfigurationError,
    PaymentDeclinedError,
    PaymentError,
    PaymentResult,
    PaymentTransientError,
    RefundResult,
    charge_idempotency_key,
    refund_idempotency_key,
)

logger = Logger(service="orders", child=True)

STRIPE_API_KEY: Final = "STRIPE_API_KEY"
STRIPE_API_BASE: Final = "STRIPE_API_BASE"
STRIPE_CONNECT_TIMEOUT_SECONDS: Final = "STRIPE_CONNECT_TIMEOUT_SECONDS"
STRIPE_READ_TIMEOUT_SECONDS: Final = "STRIPE_READ_TIMEOUT_SECONDS"
STRIPE_MAX_NETWORK_RETRIES: Final = "STRIPE_MAX_NETWORK_RETRIES"

ACCEPTED_CHARGE_STATUSES: Final = frozenset({"succeeded", "processing"})
ACCEPTED_REFUND_STATUSES: Final = frozenset({"succeeded", "pending"})
# Invalid-request codes that are the customer's business, not an operator's.
_DECLINING_REQUEST_CODES: Final = frozenset({"amount_too_small", "amount_too_large"})
_MASKED_ID = re.compile(r"\b(pm|tok|src|card|seti|sk|rk|pk)_[A-Za-z0-9_]+")

# Ids of the call under way, so the retry log lines of the HTTP client can name them.
_call_context: ContextVar[Mapping[str, object] | None] = ContextVar(
    "stripe_call_context", default=None
)


@dataclass(frozen=True)
class StripeSettings:
    """How to reach Stripe and how long to wait; the delays are in seconds."""

    api_key: str = field(repr=False)
    api_base: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_network_retries: int = 2
    retry_initial_delay: float = 0.5
    retry_max_delay: float = 4.0

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> StripeSettings:
        """Read the settings; raise :class:`adapters.settings.SettingError` if invalid."""
        values = environment(env)
        api_key = require_setting(
            values, STRIPE_API_KEY, "set it to a Stripe secret key (sk_test_... for tests)"
        )
        api_base = values.get(STRIPE_API_BASE, "").strip()
        return cls(
            api_key=api_key,
            api_base=http_url(STRIPE_API_BASE, api_base) if api_base else None,
            connect_timeout=number_setting(
                values, STRIPE_CONNECT_TIMEOUT_SECONDS, 3.0, minimum=0.1, maximum=60
            ),
            read_timeout=number_setting(
                values, STRIPE_READ_TIMEOUT_SECONDS, 10.0, minimum=0.1, maximum=80
            ),
            max_network_retries=int(
                number_setting(values, STRIPE_MAX_NETWORK_RETRIES, 2, minimum=0, maximum=5)
            ),
        )


class _RetryDelayRequestsClient(stripe.RequestsClient):
    """stripe-python's ``requests`` client with retry delays taken from the settings.

    NOTE: this overrides the private ``_sleep_time_seconds`` of stripe-python 16.x, whose
    built-in delays cannot be lowered below 0.5 s; check it when upgrading stripe.
    """

    def __init__(
        self, *, timeout: tuple[float, float], initial_delay: float, max_delay: float
    ) -> None:
        super().__init__(timeout=timeout)
        self._initial_delay = initial_delay
        self._max_delay = max_delay

    def _sleep_time_seconds(self, num_retries: int) -> float:
        delay = min(self._initial_delay * 2.0 ** (num_retries - 1), self._max_delay)
        delay *= random.uniform(0.5, 1.0)  # jitter spreads out concurrent retries
        logger.warning(
            "Retrying a Stripe request with the same idempotency key",
            extra={**(_call_context.get() or {}), "retry": num_retries, "delay_seconds": delay},
        )
        return delay


def build_client(settings: StripeSettings) -> stripe.StripeClient:
    """Build a :class:`stripe.StripeClient` with bounded timeouts and retries."""
    http_client = _RetryDelayRequestsClient(
        timeout=(settings.connect_timeout, settings.read_timeout),
        initial_delay=settings.retry_initial_delay,
        max_delay=settings.retry_max_delay,
    )
    return stripe.StripeClient(
        settings.api_key,
        http_client=http_client,
        base_addresses={"api": settings.api_base} if settings.api_base else None,
        max_network_retries=settings.max_network_retries,
    )


class StripePaymentGateway:
    """:class:`application.external.PaymentGateway` on Stripe's PaymentIntents API."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    @classmethod
    def from_settings(cls, settings: StripeSettings) -> StripePaymentGateway:
        return cls(build_client(settings))

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> StripePaymentGateway:
        return cls.from_settings(StripeSettings.from_environment(env))

    def charge(
        self,
        *,
        order_id: str,
        attempt: int,
        amount: int,
        currency: str,
        payment_method: str,
        customer_id: str,
    ) -> PaymentResult:
        """Create and confirm a PaymentIntent in one request.

        ``allow_redirects=never`` keeps redirect-based payment methods out, so the API needs
        no ``return_url``, and ``error_on_requires_action`` fails a card that requires 3-D
        Secure, because the customer is not present when the saga charges. ``customer_id``
        is this system's id, not a Stripe Customer, so it goes into the metadata only.
        """
        key = charge_idempotency_key(order_id, attempt)
        ids = {"order_id": order_id, "attempt": attempt, "action": "charge"}
        params: stripe.params.PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": payment_method,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "confirm": True,
            "error_on_requires_action": True,
            "description": f"Order {order_id}",
            "metadata": {"order_id": order_id, "customer_id": customer_id, "attempt": str(attempt)},
        }
        try:
            with _logged_call(ids):
                intent = self._client.v1.payment_intents.create(params, {"idempotency_key": key})
        except stripe.StripeError as error:
            raise _translate(error, ids, amount=amount) from None

        result = PaymentResult(
            payment_id=intent.id,
            status=intent.status,
            amount=intent.amount,
            currency=intent.currency.upper(),
            charge_id=_object_id(intent.latest_charge),
            replayed=_replayed(intent),
        )
        details = {
            **ids,
            "payment_id": result.payment_id,
            "amount": result.amount,
            "currency": result.currency,
            "status": result.status,
            "replayed": result.replayed,
        }
        if result.status not in ACCEPTED_CHARGE_STATUSES:
            # Confirmation needs the customer (3-D Secure), who is not present in the saga.
            logger.info("Charge needs customer action and counts as declined", extra=details)
            raise PaymentDeclinedError(
                f"Stripe charge for order {order_id} attempt {attempt} ended in status "
                f"{result.status!r} (payment {result.payment_id}); the card needs the "
                "customer's authentication, which an order placed through the API cannot give",
                order_id=order_id,
                attempt=attempt,
                decline_code="authentication_required",
                customer_message="Your bank asked to authenticate this payment; use another card.",
            )
        logger.info("Charge accepted", extra=details)
        return result

    def refund(
        self, *, order_id: str, payment_id: str, attempt: int, amount: int | None = None
    ) -> RefundResult:
        key = refund_idempotency_key(order_id, attempt)
        ids = {
            "order_id": order_id,
            "attempt": attempt,
            "action": "refund",
            "payment_id": payment_id,
        }
        params: stripe.params.RefundCreateParams = {
            "payment_intent": payment_id,
            "metadata": {"order_id": order_id, "attempt": str(attempt)},
        }
        if amount is not None:
            params["amount"] = amount
        try:
            with _logged_call(ids):
                refund = self._client.v1.refunds.create(params, {"idempotency_key": key})
        except stripe.StripeError as error:
            raise _translate(error, ids, amount=amount) from None

        result = RefundResult(
            refund_id=refund.id,
            payment_id=_object_id(refund.payment_intent) or payment_id,
            status=refund.status or "unknown",
            amount=refund.amount,
            currency=refund.currency.upper(),
            replayed=_replayed(refund),
        )
        details = {
            **ids,
            "refund_id": result.refund_id,
            "amount": result.amount,
            "currency": result.currency,
            "status": result.status,
            "replayed": result.replayed,
        }
        if result.status not in ACCEPTED_REFUND_STATUSES:
            logger.error("Refund not accepted", extra=details)
            raise PaymentConfigurationError(
                f"Stripe refund {result.refund_id} of payment {payment_id} for order "
                f"{order_id} attempt {attempt} has status {result.status!r}; an operator "
                "has to refund the customer another way",
                order_id=order_id,
                attempt=attempt,
            )
        logger.info("Refund accepted", extra=details)
        return result


@contextmanager
def _logged_call(ids: Mapping[str, object]) -> Iterator[None]:
    token = _call_context.set(ids)
    try:
        yield
    finally:
        _call_context.reset(token)


def _translate(
    error: stripe.StripeError, ids: Mapping[str, object], *, amount: int | None
) -> PaymentError:
    """Map a stripe-python error onto the port's errors, and log it once."""
    order_id = str(ids["order_id"])
    attempt = int(str(ids["attempt"]))
    action = str(ids["action"])
    details = {
        **ids,
        "amount": amount,
        "http_status": error.http_status,
        "stripe_code": error.code,
        "stripe_error": type(error).__name__,
        "request_id": error.request_id,
    }
    context = (
        f"Stripe {action} for order {order_id} attempt {attempt} failed with "
        f"{type(error).__name__} (HTTP {error.http_status}, code {error.code}, "
        f"request {error.request_id}): {_masked(error.user_message).rstrip('.')}"
    )

    if isinstance(error, stripe.CardError):
        decline_code = (error.error.decline_code if error.error else None) or error.code
        details["decline_code"] = decline_code
        details["payment_id"] = _declined_payment_id(error)
        logger.info("Charge declined", extra=details)
        return PaymentDeclinedError(
            f"{context}; the decline is final for this attempt",
            order_id=order_id,
            attempt=attempt,
            decline_code=decline_code or "card_declined",
            customer_message=error.user_message or "Your card was declined.",
        )
    if isinstance(error, stripe.IdempotencyError):
        logger.error("Idempotency key reused with other parameters", extra=details)
        return PaymentConfigurationError(
            f"{context}; this attempt was first sent with other parameters, so a changed "
            "request needs a new attempt number",
            order_id=order_id,
            attempt=attempt,
        )
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError) or (
        isinstance(error, stripe.APIError)
        and (error.http_status is None or error.http_status >= 500 or error.http_status == 409)
    ):
        answered = error.http_status is not None
        details["outcome_known"] = answered
        logger.warning("Stripe call failed transiently", extra=details)
        if answered:
            return PaymentTransientError(
                f"{context}; Stripe answered with an error, retry with the next attempt",
                order_id=order_id,
                attempt=attempt,
                outcome_known=True,
            )
        return PaymentTransientError(
            f"{context}; the outcome is unknown, retry with the same attempt",
            order_id=order_id,
            attempt=attempt,
        )
    if isinstance(error, stripe.InvalidRequestError):
        if error.code == "charge_already_refunded":
            logger.warning("Payment already refunded", extra=details)
            return PaymentAlreadyRefundedError(
                f"{context}; nothing is left to refund", order_id=order_id, attempt=attempt
            )
        if action == "charge" and error.code in _DECLINING_REQUEST_CODES:
            logger.info("Charge amount rejected", extra=details)
            return PaymentDeclinedError(
                f"{context}; the order total is outside the amounts Stripe accepts",
                order_id=order_id,
                attempt=attempt,
                decline_code=error.code or "invalid_amount",
                customer_message=error.user_message or "The order total cannot be charged.",
            )
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        advice = "check STRIPE_API_KEY and the key's permissions"
    else:
        advice = "fix the request or the settings; sending it unchanged fails again"
    logger.error("Stripe call rejected", extra=details)
    return PaymentConfigurationError(f"{context}; {advice}", order_id=order_id, attempt=attempt)


def _object_id(value: object) -> str | None:
    """Return the id of an expandable field, which is an id or an expanded object."""
    if value is None or isinstance(value, str):
        return value
    object_id = getattr(value, "id", None)
    return object_id if isinstance(object_id, str) else None


def _replayed(resource: stripe.StripeObject) -> bool:
    response = resource.last_response
    return response is not None and response.headers.get("Idempotent-Replayed") == "true"


def _declined_payment_id(error: stripe.CardError) -> str | None:
    body = error.json_body
    if not isinstance(body, dict):
        return None
    intent = body.get("error", {}).get("payment_intent")
    return intent.get("id") if isinstance(intent, dict) else None


def _masked(message: str | None) -> str:
    """Mask payment method, token and key ids, which Stripe may quote in a message."""
    return _MASKED_ID.sub(lambda match: f"{match.group(1)}_***", message or "no message")
