"""A local stand-in for the part of the Stripe API that the payment adapter uses.

It serves on 127.0.0.1 and keeps PaymentIntents, charges and refunds in memory:

- ``POST /v1/payment_intents`` (form-encoded, create-and-confirm with ``confirm=true``),
  ``GET /v1/payment_intents`` and ``GET /v1/payment_intents/{id}``;
- ``POST /v1/refunds``, ``GET /v1/refunds`` and ``GET /v1/refunds/{id}``;
- the admin API of :mod:`infra.local.fake_http` (``/_fake/state``, ``/_fake/failures``).

Behaviour modelled on Stripe's API reference:

- Requests need ``Authorization: Bearer sk_test_...`` (any key with that prefix), or
  HTTP basic auth with the key as the user name; otherwise 401.
- ``Idempotency-Key`` (at most 255 characters) is scoped to the API key. The first response
  of a request that reached the endpoint (a 2xx, or a 402 decline) is stored. The same key
  with the same method, path and parameters replays it with ``Idempotent-Replayed: true``,
  and the same key with anything else is a 400 ``idempotency_error``. Requests rejected by
  validation are not stored, so they can be corrected and sent again under the same key.
- Test payment methods: ``pm_card_visa`` and ``pm_card_mastercard`` succeed, and the
  ``pm_card_*chargeDeclined*`` ones in :data:`TEST_PAYMENT_METHODS` fail with a 402
  ``card_error``. Any other payment method is a 400 ``resource_missing``.

Start it in-process with ``FakeStripe(port=0).start()`` and point the adapter at it with
:meth:`FakeStripe.environment`, or run ``python -m infra.local.fake_stripe --port 12111``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import re
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from domain.money import CURRENCIES
from infra.local.fake_http import (
    MAX_FIELDS,
    FakeHttpApi,
    Request,
    Response,
    StoredResponse,
    new_id,
    parse_int,
)

API_KEY_PREFIX: Final = "sk_test_"
LOCAL_API_KEY: Final = "sk_test_local_fake"
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
MAX_METADATA_KEYS: Final = 50
MAX_METADATA_KEY_LENGTH: Final = 40
MAX_METADATA_VALUE_LENGTH: Final = 500
MAX_DESCRIPTION_LENGTH: Final = 1000
MAX_PARAMETER_DEPTH: Final = 3
MAX_AMOUNT: Final = 99_999_999  # Stripe's limit of eight digits
DEFAULT_MINIMUM_AMOUNT: Final = 1
# Stripe's minimum charge amounts for common currencies, in minor units.
# NOTE: other currencies accept any positive amount here, where Stripe has its own minimums.
MINIMUM_AMOUNTS: Final[Mapping[str, int]] = {
    "usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "cad": 50, "aud": 50, "chf": 50,
}  # fmt: skip
REFUND_REASONS: Final = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
MAX_LIST_LIMIT: Final = 100

_PARAMETER_NAME = re.compile(r"^([A-Za-z0-9_]+)((?:\[[A-Za-z0-9_.\-]*\])*)$")
_PARAMETER_INDEX = re.compile(r"\[([^\[\]]*)\]")
_OBJECT_PATH = re.compile(r"^/v1/(payment_intents|refunds)/([A-Za-z0-9_]+)$")

_PAYMENT_INTENT_PARAMETERS: Final = frozenset({
    "amount", "currency", "payment_method", "confirm", "payment_method_types",
    "allowed_payment_method_types", "automatic_payment_methods", "return_url", "metadata",
    "description", "customer", "expand", "off_session", "error_on_requires_action",
    "capture_method", "receipt_email", "statement_descriptor_suffix",
})  # fmt: skip
_TYPE_PARAMETERS: Final = ("payment_method_types", "allowed_payment_method_types")
_REFUND_PARAMETERS: Final = frozenset(
    {"payment_intent", "charge", "amount", "reason", "metadata", "expand"}
)


@dataclass(frozen=True)
class SimulatedCard:
    """Behaviour of a test payment method: success, or a card error."""

    brand: str
    last4: str
    error_code: str | None = None
    decline_code: str | None = None
    message: str | None = None


TEST_PAYMENT_METHODS: Final[Mapping[str, SimulatedCard]] = {
    "pm_card_visa": SimulatedCard("visa", "4242"),
    "pm_card_mastercard": SimulatedCard("mastercard", "4444"),
    "pm_card_visa_chargeDeclined": SimulatedCard(
        "visa", "0002", "card_declined", "generic_decline", "Your card was declined."
    ),
    "pm_card_chargeDeclined": SimulatedCard(
        "visa", "0002", "card_declined", "generic_decline", "Your card was declined."
    ),
    "pm_card_chargeDeclinedInsufficientFunds": SimulatedCard(
        "visa", "9995", "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_chargeDeclinedExpiredCard": SimulatedCard(
        "visa", "0069", "expired_card", "expired_card", "Your card has expired."
    ),
}


class StripeRequestError(Exception):
    """A request Stripe would reject before running the endpoint; nothing is stored."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.response = stripe_error(status, message, error_type=error_type, code=code, param=param)


def stripe_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    **details: Any,
) -> Response:
    """Build an error response in Stripe's shape: ``{"error": {"type": ..., ...}}``."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if code is not None:
        error["code"] = code
    if param is not None:
        error["param"] = param
    error.update(details)
    return Response(status, {"error": error})


class FakeStripe(FakeHttpApi):
    """In-memory PaymentIntents, charges and refunds behind Stripe's HTTP API."""

    name = "fake-stripe"

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self._payment_intents: dict[str, dict[str, Any]] = {}
        self._charges: dict[str, dict[str, Any]] = {}
        self._refunds: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[tuple[str, str], StoredResponse] = {}

    def start(self) -> FakeStripe:
        super().start()
        return self

    def __enter__(self) -> FakeStripe:
        super().__enter__()
        return self

    def environment(self) -> dict[str, str]:
        """Return the environment variables that point the Stripe adapter at this fake."""
        return {"STRIPE_API_BASE": self.url, "STRIPE_API_KEY": LOCAL_API_KEY}

    # --- Python admin API -------------------------------------------------------------

    def payment_intents(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._payment_intents.values()))

    def charges(self) -> list[dict[str, Any]]:
        """Return every charge, oldest first. Declined ones have ``status == "failed"``."""
        with self.lock:
            return copy.deepcopy(list(self._charges.values()))

    def refunds(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(list(self._refunds.values()))

    # --- FakeHttpApi hooks ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "payment_intents": copy.deepcopy(list(self._payment_intents.values())),
            "charges": copy.deepcopy(list(self._charges.values())),
            "refunds": copy.deepcopy(list(self._refunds.values())),
        }

    def clear_state(self) -> None:
        self._payment_intents.clear()
        self._charges.clear()
        self._refunds.clear()
        self._idempotent.clear()

    def authorize(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return stripe_error(
                401, "No API key provided; send 'Authorization: Bearer sk_test_...'."
            )
        key = _api_key(header)
        if key is None or not key.startswith(API_KEY_PREFIX) or key == API_KEY_PREFIX:
            return stripe_error(
                401,
                f"Invalid API key provided: {_mask(key or header)}. This fake accepts only "
                f"test secret keys, which start with {API_KEY_PREFIX!r}.",
            )
        return None

    def failure_response(self, mode: str) -> Response:
        if mode == "status_429":
            return stripe_error(
                429,
                "Too many requests hit the API too quickly (failure injected by the fake).",
                code="rate_limit",
            )
        return stripe_error(
            500,
            "An unexpected error occurred while processing the request (failure injected "
            "by the fake); nothing was changed.",
            error_type="api_error",
        )

    def error_response(self, status: int, message: str) -> Response:
        error_type = "api_error" if status >= 500 else "invalid_request_error"
        return stripe_error(status, message, error_type=error_type)

    def handle_api(self, request: Request) -> Response:
        request_id = new_id("req")
        headers = {"Request-Id": request_id}
        if "stripe-version" in request.headers:
            headers["Stripe-Version"] = request.headers["stripe-version"]
        try:
            if request.method == "POST":
                response = self._handle_post(request, request_id)
            else:
                response = self._handle_get(request)
        except StripeRequestError as error:
            response = error.response
        return Response(response.status, response.body, {**headers, **response.headers})

    # --- routing ----------------------------------------------------------------------

    def _handle_get(self, request: Request) -> Response:
        if request.method != "GET":
            raise _unrecognized(request)
        if request.path == "/v1/payment_intents":
            return _list_response(request, self._payment_intents.values())
        if request.path == "/v1/refunds":
            refunds = list(self._refunds.values())
            payment_intent = request.query.get("payment_intent")
            if payment_intent is not None:
                refunds = [r for r in refunds if r["payment_intent"] == payment_intent]
            return _list_response(request, refunds)
        match = _OBJECT_PATH.match(request.path)
        if match is None:
            raise _unrecognized(request)
        resource, object_id = match.groups()
        objects = self._payment_intents if resource == "payment_intents" else self._refunds
        found = objects.get(object_id)
        if found is None:
            raise StripeRequestError(
                404,
                f"No such {resource[:-1]}: '{object_id}'",
                code="resource_missing",
                param="id",
            )
        return Response(200, copy.deepcopy(found))

    def _handle_post(self, request: Request, request_id: str) -> Response:
        if request.path == "/v1/payment_intents":
            endpoint = self._create_payment_intent
        elif request.path == "/v1/refunds":
            endpoint = self._create_refund
        else:
            raise _unrecognized(request)

        params = parse_form(request.body)
        key = request.headers.get("idempotency-key")
        if key is None:
            return endpoint(params)
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise StripeRequestError(
                400,
                f"Idempotency-Key has {len(key)} characters; use 1 to "
                f"{MAX_IDEMPOTENCY_KEY_LENGTH}.",
            )

        scope = (_api_key(request.headers["authorization"]) or "", key)
        fingerprint = (request.method, request.path, _canonical(params))
        stored = self._idempotent.get(scope)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise StripeRequestError(
                    400,
                    f"Idempotency key '{key}' was first used with other parameters or "
                    "another endpoint; use a new key for a different request.",
                    error_type="idempotency_error",
                )
            replay_headers = {
                **stored.response.headers,
                "Idempotent-Replayed": "true",
                "Original-Request": stored.request_id,
            }
            return Response(stored.response.status, stored.response.body, replay_headers)

        response = endpoint(params)
        response = Response(
            response.status, response.body, {**response.headers, "Idempotency-Key": key}
        )
        self._idempotent[scope] = StoredResponse(fingerprint, response, request_id)
        return response

    # --- PaymentIntents ---------------------------------------------------------------

    def _create_payment_intent(self, params: dict[str, Any]) -> Response:
        _reject_unknown(params, _PAYMENT_INTENT_PARAMETERS)
        amount = _integer(params, "amount", required=True)
        currency = _currency(params)
        assert amount is not None  # required=True
        _check_charge_amount(amount, currency)
        metadata = _metadata(params)
        description = _string(params, "description", max_length=MAX_DESCRIPTION_LENGTH)

        capture_method = _check_confirmation(params)
        payment_method_types = _payment_method_types(params)
        payment_method, card = _test_card(params)

        return self._confirm(
            amount=amount,
            currency=currency,
            payment_method=payment_method,
            card=card,
            metadata=metadata,
            description=description,
            capture_method=capture_method,
            payment_method_types=payment_method_types,
        )

    def _confirm(
        self,
        *,
        amount: int,
        currency: str,
        payment_method: str,
        card: SimulatedCard,
        metadata: dict[str, str],
        description: str | None,
        capture_method: str,
        payment_method_types: list[str],
    ) -> Response:
        created = int(time.time())
        intent_id = new_id("pi")
        charge_id = new_id("ch")
        succeeded = card.error_code is None
        charge: dict[str, Any] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_captured": amount if succeeded else 0,
            "amount_refunded": 0,
            "captured": succeeded,
            "created": created,
            "currency": currency,
            "failure_code": card.error_code,
            "failure_message": card.message,
            "livemode": False,
            "metadata": dict(metadata),
            "paid": succeeded,
            "payment_intent": intent_id,
            "payment_method": payment_method,
            "payment_method_details": {
                "type": "card",
                "card": {"brand": card.brand, "last4": card.last4},
            },
            "refunded": False,
            "status": "succeeded" if succeeded else "failed",
        }
        intent: dict[str, Any] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount if succeeded else 0,
            "capture_method": capture_method,
            "client_secret": f"{intent_id}_secret_{new_id('s')[2:]}",
            "confirmation_method": "automatic",
            "created": created,
            "currency": currency,
            "description": description,
            "last_payment_error": None,
            "latest_charge": charge_id,
            "livemode": False,
            "metadata": dict(metadata),
            "payment_method": payment_method if succeeded else None,
            "payment_method_types": payment_method_types,
            "status": "succeeded" if succeeded else "requires_payment_method",
        }
        self._charges[charge_id] = charge
        self._payment_intents[intent_id] = intent
        if succeeded:
            return Response(200, copy.deepcopy(intent))

        error: dict[str, Any] = {
            "type": "card_error",
            "code": card.error_code,
            "decline_code": card.decline_code,
            "message": card.message,
            "charge": charge_id,
            "payment_method": {
                "id": payment_method,
                "object": "payment_method",
                "type": "card",
                "card": {"brand": card.brand, "last4": card.last4},
            },
        }
        intent["last_payment_error"] = error
        return Response(402, {"error": {**error, "payment_intent": copy.deepcopy(intent)}})

    # --- refunds ----------------------------------------------------------------------

    def _create_refund(self, params: dict[str, Any]) -> Response:
        _reject_unknown(params, _REFUND_PARAMETERS)
        intent_id = _string(params, "payment_intent")
        charge_id = _string(params, "charge")
        if (intent_id is None) == (charge_id is None):
            raise StripeRequestError(
                400,
                "Send exactly one of the parameters payment_intent and charge.",
                code="parameter_missing" if intent_id is None else None,
                param="payment_intent",
            )

        charge = self._refundable_charge(intent_id, charge_id)
        amount = _refund_amount(params, charge)
        reason = _string(params, "reason")
        if reason is not None and reason not in REFUND_REASONS:
            raise StripeRequestError(
                400,
                f"Invalid reason {reason!r}; use one of {sorted(REFUND_REASONS)}.",
                param="reason",
            )

        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": _metadata(params),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
        }
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._refunds[refund["id"]] = refund
        return Response(200, copy.deepcopy(refund))

    def _refundable_charge(self, intent_id: str | None, charge_id: str | None) -> dict[str, Any]:
        if intent_id is not None:
            intent = self._payment_intents.get(intent_id)
            if intent is None:
                raise StripeRequestError(
                    400,
                    f"No such payment_intent: '{intent_id}'",
                    code="resource_missing",
                    param="payment_intent",
                )
            if intent["status"] != "succeeded":
                raise StripeRequestError(
                    400,
                    f"PaymentIntent {intent_id} has status {intent['status']!r} and no "
                    "successful charge to refund.",
                    param="payment_intent",
                )
            charge_id = intent["latest_charge"]
        charge = self._charges.get(charge_id or "")
        if charge is None:
            raise StripeRequestError(
                400, f"No such charge: '{charge_id}'", code="resource_missing", param="charge"
            )
        if charge["status"] != "succeeded":
            raise StripeRequestError(
                400, f"Charge {charge_id} failed, so there is nothing to refund.", param="charge"
            )
        return charge


# --- form parsing and parameter checks ----------------------------------------------


def parse_form(body: bytes) -> dict[str, Any]:
    """Parse a form body with Stripe's bracket notation into nested dicts.

    ``metadata[order_id]=o-1`` becomes ``{"metadata": {"order_id": "o-1"}}`` and
    ``payment_method_types[0]=card`` becomes ``{"payment_method_types": {"0": "card"}}``.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise StripeRequestError(400, "The request body is not valid UTF-8.") from None
    except ValueError:
        raise StripeRequestError(
            400, f"The request has more than {MAX_FIELDS} parameters."
        ) from None

    root: dict[str, Any] = {}
    for name, value in pairs:
        match = _PARAMETER_NAME.match(name)
        if match is None:
            raise StripeRequestError(400, f"Invalid parameter name: {name[:100]!r}.")
        path = [match.group(1), *_PARAMETER_INDEX.findall(match.group(2))]
        if len(path) > MAX_PARAMETER_DEPTH:
            raise StripeRequestError(
                400, f"Parameter {name[:100]!r} is nested more than {MAX_PARAMETER_DEPTH} deep."
            )
        node = root
        for segment in path[:-1]:
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise StripeRequestError(400, f"Parameter {name!r} conflicts with {segment!r}.")
            node = child
        last = path[-1] or str(len(node))  # "expand[]" appends
        if last in node:
            raise StripeRequestError(400, f"Parameter {name!r} is given twice.", param=name)
        node[last] = value
    return root


def _check_confirmation(params: Mapping[str, Any]) -> str:
    """Check the parameters of create-and-confirm and return the capture method."""
    _boolean(params, "off_session", default=False)
    _boolean(params, "error_on_requires_action", default=False)
    if not _boolean(params, "confirm", default=False):
        raise StripeRequestError(
            400,
            "This fake creates PaymentIntents only together with their confirmation; "
            "send confirm=true with a payment_method.",
            param="confirm",
        )

    capture_method = _string(params, "capture_method") or "automatic"
    if capture_method not in ("automatic", "automatic_async"):
        raise StripeRequestError(
            400,
            f"capture_method {capture_method!r} is not supported by this fake; use 'automatic'.",
            param="capture_method",
        )

    customer = _string(params, "customer")
    if customer is not None:
        raise StripeRequestError(
            400,
            f"No such customer: '{customer}'",
            code="resource_missing",
            param="customer",
        )
    return capture_method


def _test_card(params: Mapping[str, Any]) -> tuple[str, SimulatedCard]:
    """Look up the request's payment method among :data:`TEST_PAYMENT_METHODS`."""
    payment_method = _string(params, "payment_method")
    if payment_method is None:
        raise StripeRequestError(
            400,
            "Missing required param: payment_method (confirm=true needs one).",
            code="parameter_missing",
            param="payment_method",
        )
    card = TEST_PAYMENT_METHODS.get(payment_method)
    if card is None:
        raise StripeRequestError(
            400,
            f"No such PaymentMethod: '{payment_method}'. This fake supports "
            f"{', '.join(sorted(TEST_PAYMENT_METHODS))}.",
            code="resource_missing",
            param="payment_method",
        )
    return payment_method, card


def _refund_amount(params: Mapping[str, Any], charge: Mapping[str, Any]) -> int:
    """Return the requested refund amount, or all that is left of the charge."""
    remaining = int(charge["amount"]) - int(charge["amount_refunded"])
    if remaining == 0:
        raise StripeRequestError(
            400,
            f"Charge {charge['id']} has already been refunded.",
            code="charge_already_refunded",
        )

    amount = _integer(params, "amount", required=False)
    if amount is None:
        return remaining
    if amount < 1:
        raise StripeRequestError(
            400,
            f"Refund amount must be a positive integer, got {amount}.",
            code="parameter_invalid_integer",
            param="amount",
        )
    if amount > remaining:
        # NOTE: whether Stripe sends an error code here is unverified; the fake sends none.
        raise StripeRequestError(
            400,
            f"Refund amount {amount} is greater than the {remaining} left to refund on "
            f"charge {charge['id']}.",
            param="amount",
        )
    return amount


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((key, _canonical(item)) for key, item in value.items()))
    return value


def _reject_unknown(params: Mapping[str, Any], known: frozenset[str]) -> None:
    for name in params:
        if name not in known:
            raise StripeRequestError(
                400,
                f"Received unknown parameter: {name}",
                code="parameter_unknown",
                param=name,
            )


def _string(params: Mapping[str, Any], name: str, *, max_length: int = 5000) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise StripeRequestError(400, f"Invalid string: {name} must be a single value.", param=name)
    if len(value) > max_length:
        raise StripeRequestError(
            400, f"{name} has {len(value)} characters; the maximum is {max_length}.", param=name
        )
    return value


def _integer(params: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    raw = params.get(name)
    if raw is None:
        if required:
            raise StripeRequestError(
                400, f"Missing required param: {name}.", code="parameter_missing", param=name
            )
        return None
    value = parse_int(raw) if isinstance(raw, str) else None
    if value is None:
        raise StripeRequestError(
            400,
            f"Invalid integer: {str(raw)[:100]}",
            code="parameter_invalid_integer",
            param=name,
        )
    return value


def _boolean(params: Mapping[str, Any], name: str, *, default: bool) -> bool:
    raw = params.get(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise StripeRequestError(
            400, f"Invalid boolean: {str(raw)[:100]}; use true or false.", param=name
        )
    return bool(raw == "true")


def _currency(params: Mapping[str, Any]) -> str:
    raw = _string(params, "currency")
    if raw is None:
        raise StripeRequestError(
            400, "Missing required param: currency.", code="parameter_missing", param="currency"
        )
    if raw.upper() not in CURRENCIES:
        raise StripeRequestError(
            400,
            f"Invalid currency: {raw[:10]}; use a three-letter ISO 4217 code.",
            param="currency",
        )
    return raw.lower()


def _check_charge_amount(amount: int, currency: str) -> None:
    if amount < 1:
        raise StripeRequestError(
            400,
            f"Invalid amount {amount}: it must be an integer of at least 1.",
            code="parameter_invalid_integer",
            param="amount",
        )
    minimum = MINIMUM_AMOUNTS.get(currency, DEFAULT_MINIMUM_AMOUNT)
    if amount < minimum:
        raise StripeRequestError(
            400,
            f"Amount must be at least {minimum} {currency} in minor units.",
            code="amount_too_small",
            param="amount",
        )
    if amount > MAX_AMOUNT:
        raise StripeRequestError(
            400,
            f"Amount must be no more than {MAX_AMOUNT} {currency} in minor units.",
            code="amount_too_large",
            param="amount",
        )


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    raw = params.get("metadata", {})
    if raw == "":  # metadata= clears it, as in Stripe
        return {}
    if not isinstance(raw, dict):
        raise StripeRequestError(
            400, "Invalid object: metadata must be key-value pairs.", param="metadata"
        )
    if len(raw) > MAX_METADATA_KEYS:
        raise StripeRequestError(
            400,
            f"metadata has {len(raw)} keys; the maximum is {MAX_METADATA_KEYS}.",
            param="metadata",
        )
    metadata: dict[str, str] = {}
    for key, value in raw.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise StripeRequestError(
                400,
                f"metadata key {key!r} is longer than {MAX_METADATA_KEY_LENGTH} characters.",
                param=f"metadata[{key}]",
            )
        if not isinstance(value, str) or len(value) > MAX_METADATA_VALUE_LENGTH:
            raise StripeRequestError(
                400,
                f"metadata[{key}] must be a string of at most {MAX_METADATA_VALUE_LENGTH} "
                "characters.",
                param=f"metadata[{key}]",
            )
        metadata[key] = value
    return metadata


def _payment_method_types(params: Mapping[str, Any]) -> list[str]:
    """Check how payment methods are chosen and return the PaymentIntent's types.

    Since API version 2023-08-16 a PaymentIntent that lists no types uses automatic payment
    methods, and confirming one that allows redirects needs a ``return_url``. The fake
    supports only cards, so it rejects any listed type other than ``card``.
    NOTE: stripe-python 16 types only ``allowed_payment_method_types``; the fake accepts
    the older ``payment_method_types`` as well.
    """
    listed = [name for name in _TYPE_PARAMETERS if name in params]
    automatic = params.get("automatic_payment_methods")
    if len(listed) > 1 or (listed and automatic is not None):
        raise StripeRequestError(
            400,
            "Send only one of the parameters automatic_payment_methods, "
            "allowed_payment_method_types and payment_method_types.",
            param=listed[0],
        )
    if listed:
        types = _string_list(params[listed[0]], listed[0])
        if not types or any(kind != "card" for kind in types):
            raise StripeRequestError(
                400,
                f"{listed[0]} {types} is not supported by this fake; use ['card'].",
                param=listed[0],
            )
        return types
    if automatic is not None and not isinstance(automatic, dict):
        raise StripeRequestError(
            400, "Invalid object: automatic_payment_methods.", param="automatic_payment_methods"
        )
    settings = automatic or {}
    enabled = _boolean(settings, "enabled", default=True)
    allow_redirects = _string(settings, "allow_redirects") or "always"
    if allow_redirects not in ("always", "never"):
        raise StripeRequestError(
            400,
            f"Invalid allow_redirects {allow_redirects!r}; use 'always' or 'never'.",
            param="automatic_payment_methods[allow_redirects]",
        )
    if enabled and allow_redirects != "never" and params.get("return_url") is None:
        raise StripeRequestError(
            400,
            "Confirming with automatic payment methods that allow redirects needs a "
            "return_url. Send automatic_payment_methods[allow_redirects]=never or "
            "allowed_payment_method_types[]=card instead.",
            param="return_url",
        )
    return ["card"]


def _string_list(raw: Any, name: str) -> list[str]:
    if not isinstance(raw, dict) or not all(key.isdigit() for key in raw):
        raise StripeRequestError(400, f"Invalid array: {name}.", param=name)
    values = [raw[key] for key in sorted(raw, key=int)]
    if not all(isinstance(value, str) for value in values):
        raise StripeRequestError(400, f"Invalid array: {name} must hold strings.", param=name)
    return values


def _list_response(request: Request, objects: Any) -> Response:
    raw_limit = request.query.get("limit", "10")
    limit = parse_int(raw_limit)
    if limit is None or not 1 <= limit <= MAX_LIST_LIMIT:
        raise StripeRequestError(
            400,
            f"Invalid integer: limit {raw_limit[:20]!r}; use 1 to {MAX_LIST_LIMIT}.",
            code="parameter_invalid_integer",
            param="limit",
        )
    newest_first = list(reversed(list(objects)))
    return Response(
        200,
        {
            "object": "list",
            "url": request.path,
            "has_more": len(newest_first) > limit,
            "data": copy.deepcopy(newest_first[:limit]),
        },
    )


def _unrecognized(request: Request) -> StripeRequestError:
    return StripeRequestError(404, f"Unrecognized request URL ({request.method}: {request.path}).")


def _api_key(header: str) -> str | None:
    scheme, _, credentials = header.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def _mask(key: str) -> str:
    if len(key) <= 12:
        return "*" * len(key)
    return f"{key[:8]}{'*' * 4}{key[-4:]}"


# --- command line ---------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake in the foreground until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.fake_stripe", description=main.__doc__
    )
    parser.add_argument(
        "--port", type=int, default=12111, help="TCP port on 127.0.0.1 (0: any free port)"
    )
    arguments = parser.parse_args(argv)
    fake = FakeStripe(port=arguments.port).start()
    for name, value in fake.environment().items():
        print(f"{name}={value}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
