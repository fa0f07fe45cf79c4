"""Ports to the services outside the system: payments, shipments and e-mail.

The order saga calls these ports. Every call with an effect carries an idempotency key, so
the saga can repeat a call whose outcome it does not know (a timeout, a lost response, a
redelivered message) without repeating the effect.

Idempotency keys come from the order id and the saga's *logical* attempt, never from a
clock or a random value:

- An attempt is one business try at an effect with one set of parameters. Transport-level
  retries inside an adapter resend the same request with the same key.
- When a call ends without an answer (a timeout, a dropped connection), the outcome is
  unknown: the saga retries with the **same** attempt, so the provider either replays the
  stored result or runs the request for the first time, and never runs it twice.
- When the provider answered with an error (a 5xx, a 429), the saga moves to the next
  attempt. Stripe stores a 500 under its key once the endpoint has started and replays it
  to every retry with that key, so only a new key can succeed.
- Reusing an attempt with other parameters is a programming error, and the provider
  rejects it (:class:`PaymentConfigurationError` for payments).

Stripe keeps idempotency keys for at least 24 hours. A saga that retries one attempt for
longer than that may cause a second effect, so it should flag the order for an operator
before then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from domain.order import OrderLine

MAX_IDEMPOTENCY_KEY_LENGTH = 255  # Stripe's limit; the carrier fake applies the same one


def _idempotency_key(order_id: str, action: str, attempt: int) -> str:
    if not order_id:
        raise ValueError("order_id is empty; an idempotency key needs the order id")
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"attempt {attempt!r} is invalid; attempts are counted from 1")
    key = f"order-{order_id}-{action}-{attempt}"
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(
            f"idempotency key for order {order_id[:40]!r}... is {len(key)} characters long, "
            f"over the maximum of {MAX_IDEMPOTENCY_KEY_LENGTH}; use a shorter order id"
        )
    return key


def charge_idempotency_key(order_id: str, attempt: int) -> str:
    """Build the key of one charge attempt, e.g. ``order-o-1-charge-1``."""
    return _idempotency_key(order_id, "charge", attempt)


def refund_idempotency_key(order_id: str, attempt: int) -> str:
    """Build the key of one refund attempt, e.g. ``order-o-1-refund-1``."""
    return _idempotency_key(order_id, "refund", attempt)


def shipment_idempotency_key(order_id: str, attempt: int) -> str:
    """Build the key of one shipment request, e.g. ``order-o-1-shipment-1``."""
    return _idempotency_key(order_id, "shipment", attempt)


# --- Payments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentResult:
    """An accepted charge.

    ``payment_id`` is the provider's payment id (a Stripe PaymentIntent ``pi_...``), which
    the saga records and later passes to :meth:`PaymentGateway.refund`. ``status`` is
    ``"succeeded"``, or ``"processing"`` when the provider accepted the payment but has not
    settled it yet. ``replayed`` is true when the provider returned the stored result of an
    earlier request with the same idempotency key.
    """

    payment_id: str
    status: str
    amount: int
    currency: str
    charge_id: str | None = None
    replayed: bool = False


@dataclass(frozen=True)
class RefundResult:
    """A refund the provider accepted; ``status`` is ``"succeeded"`` or ``"pending"``."""

    refund_id: str
    payment_id: str
    status: str
    amount: int
    currency: str
    replayed: bool = False


class PaymentError(Exception):
    """Base class of the payment gateway errors.

    ``retryable`` is true when the saga may send the same attempt again.
    """

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, order_id: str, attempt: int) -> None:
        super().__init__(message)
        self.order_id = order_id
        self.attempt = attempt


class PaymentDeclinedError(PaymentError):
    """The card issuer or the provider declined the charge: final for this attempt.

    ``customer_message`` is safe to show to the customer. ``decline_code`` is the issuer's
    reason (``generic_decline``, ``insufficient_funds``, ...) or, when the provider gives
    none, its error code (``expired_card``, ``authentication_required``, ...).
    """

    def __init__(
        self,
        message: str,
        *,
        order_id: str,
        attempt: int,
        decline_code: str,
        customer_message: str,
    ) -> None:
        super().__init__(message, order_id=order_id, attempt=attempt)
        self.decline_code = decline_code
        self.customer_message = customer_message


class PaymentTransientError(PaymentError):
    """The provider could not be reached or answered with a retryable error.

    ``outcome_known`` is false when no answer came back (a timeout, a dropped connection):
    the request may have taken effect, so a retry must reuse the attempt, whose key makes
    the provider replay the stored result. It is true when the provider answered (5xx,
    429, 409): a retry uses the next attempt, because the provider replays a stored error.
    """

    retryable = True

    def __init__(
        self, message: str, *, order_id: str, attempt: int, outcome_known: bool = False
    ) -> None:
        super().__init__(message, order_id=order_id, attempt=attempt)
        self.outcome_known = outcome_known


class PaymentConfigurationError(PaymentError):
    """The request was invalid or not authorized; an operator has to fix the configuration.

    Raised for a missing or wrong API key, an invalid request, an unknown payment method,
    and an idempotency key reused with other parameters.
    """


class PaymentAlreadyRefundedError(PaymentError):
    """The payment has no amount left to refund, so the refund has nothing to do.

    The saga may record the compensation as done. It should also flag the order, because
    someone other than this attempt refunded the payment (an operator, or another attempt).
    """


class PaymentGateway(Protocol):
    """Charges and refunds through a payment provider, idempotently per order and attempt."""

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
        """Charge ``amount`` minor units of ``currency`` (upper-case ISO 4217) at once.

        The key is :func:`charge_idempotency_key` of ``order_id`` and ``attempt``. Raises
        :class:`PaymentDeclinedError`, :class:`PaymentTransientError` or
        :class:`PaymentConfigurationError`.
        """
        ...

    def refund(
        self, *, order_id: str, payment_id: str, attempt: int, amount: int | None = None
    ) -> RefundResult:
        """Refund ``amount`` minor units of the payment, or all that is left when ``None``.

        The key is :func:`refund_idempotency_key` of ``order_id`` and ``attempt``. Raises
        :class:`PaymentTransientError`, :class:`PaymentConfigurationError` or
        :class:`PaymentAlreadyRefundedError`.
        """
        ...


# --- Shipments --------------------------------------------------------------------------


class ShipmentError(Exception):
    """Base class of the shipment service errors."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, order_id: str) -> None:
        super().__init__(message)
        self.order_id = order_id


class ShipmentTransientError(ShipmentError):
    """The carrier could not be reached or was overloaded; retry with the same key."""

    retryable = True


class ShipmentRejectedError(ShipmentError):
    """The carrier rejected the request (invalid lines, unknown shipment, already shipped).

    Final: sending the same request again gets the same rejection.
    """


class ShipmentService(Protocol):
    """Creates and cancels shipments at a carrier."""

    def create_shipment(
        self, *, order_id: str, lines: Sequence[OrderLine], idempotency_key: str
    ) -> str:
        """Create a shipment of ``lines`` and return the carrier's shipment id.

        The same ``idempotency_key`` returns the same shipment id, however often it is sent.
        Use :func:`shipment_idempotency_key`. Raises :class:`ShipmentTransientError` or
        :class:`ShipmentRejectedError`.
        """
        ...

    def cancel_shipment(self, *, order_id: str, shipment_id: str) -> None:
        """Cancel a shipment that has not left the warehouse; cancelling twice is a no-op.

        Raises :class:`ShipmentRejectedError` when the shipment is unknown or already
        shipped, and :class:`ShipmentTransientError` when the carrier cannot be reached.
        """
        ...


# --- E-mail -----------------------------------------------------------------------------


class EmailError(Exception):
    """Base class of the e-mail sender errors."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, order_id: str) -> None:
        super().__init__(message)
        self.order_id = order_id


class EmailTransientError(EmailError):
    """The mail service was throttling or unavailable; retry later.

    E-mail services take no idempotency key, so a retry after a timeout may deliver a
    second copy. Confirmation e-mails are at-least-once.
    """

    retryable = True


class EmailRejectedError(EmailError):
    """The mail service rejected the message (bad address, unverified sender): final."""


class RecipientNotFoundError(LookupError):
    """No e-mail address is known for a customer."""

    def __init__(self, customer_id: str, reason: str) -> None:
        super().__init__(f"no e-mail address for customer {customer_id!r}: {reason}")
        self.customer_id = customer_id


class CustomerDirectory(Protocol):
    """Looks up where to send a customer's e-mails."""

    def email_address(self, customer_id: str) -> str:
        """Return the customer's e-mail address; raise :class:`RecipientNotFoundError`."""
        ...


class EmailSender(Protocol):
    """Sends the e-mails the saga owes the customer."""

    def send_order_confirmation(
        self,
        *,
        order_id: str,
        customer_id: str,
        to_address: str,
        total: int,
        currency: str,
        lines: Sequence[OrderLine],
    ) -> str:
        """Send the order confirmation and return the mail service's message id.

        ``total`` and the lines' prices are in minor units of ``currency``. Raises
        :class:`EmailTransientError` or :class:`EmailRejectedError`.
        """
        ...
