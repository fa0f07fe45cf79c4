"""The order saga's memory: what it has done for one order, so it never does it twice.

One saga stream per order. The saga reacts to the order's events; its state
says which steps it performed, so a duplicate or late event finds nothing left
to do, and compensation reverses exactly the steps recorded here.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidTransitionError

_SAGA_NAMESPACE = uuid.UUID("0d7f8a52-3b8e-4f0e-8d55-5a3f2c9e6b41")


class SagaOutcome(StrEnum):
    FULFILLED = "FULFILLED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class CompensationKind(StrEnum):
    FAILED = "FAILED"  # a step failed for good: the order ends FAILED
    CANCELLED = "CANCELLED"  # the customer cancelled: the order is already CANCELLED


CONFIRMATION_STEP = "send confirmation"


def saga_id(order_id: UUID | str) -> UUID:
    return uuid.uuid5(_SAGA_NAMESPACE, str(order_id))


class OrderSaga(Aggregate):
    class Started(Aggregate.Created):
        order_id: str

    class ReservationsRequested(Aggregate.Event):
        skus: list[str]

    class ChargeSucceeded(Aggregate.Event):
        payment_id: str
        attempt: int

    class ChargeAttemptFailed(Aggregate.Event):
        attempt: int
        reason: str
        outcome_known: bool

    class ShipmentCreated(Aggregate.Event):
        shipment_id: str

    class ConfirmationClaimed(Aggregate.Event):
        pass

    class ConfirmationSent(Aggregate.Event):
        message_id: str

    class CompensationStarted(Aggregate.Event):
        kind: str
        reason: str

    class PaymentRefunded(Aggregate.Event):
        refund_id: str

    class RefundAttemptFailed(Aggregate.Event):
        attempt: int
        reason: str
        outcome_known: bool

    class ShipmentCancelled(Aggregate.Event):
        pass

    class StockReleased(Aggregate.Event):
        skus: list[str]

    class CompensationStuck(Aggregate.Event):
        step: str
        reason: str

    class RetryRequested(Aggregate.Event):
        pass

    class Finished(Aggregate.Event):
        outcome: str

    @staticmethod
    def create_id(order_id: str) -> UUID:
        return saga_id(order_id)

    @event(Started)
    def __init__(self, order_id: str) -> None:
        self.order_id = order_id
        self.reservations_requested = False
        self.charge_attempt = 1
        self.payment_id: str | None = None
        self.shipment_id: str | None = None
        self.shipment_cancelled = False
        self.confirmation_claimed = False
        self.confirmation_message_id: str | None = None
        self.compensation_kind: str | None = None
        self.compensation_reason: str | None = None
        self.refund_attempt = 1
        self.refund_id: str | None = None
        self.stock_released = False
        self.stuck_step: str | None = None
        self.raised_attention = False
        self.outcome: str | None = None

    @property
    def is_finished(self) -> bool:
        return self.outcome is not None

    @property
    def is_compensating(self) -> bool:
        return self.compensation_kind is not None

    def _require_running(self, step: str) -> None:
        if self.is_finished:
            raise InvalidTransitionError(
                f"saga of order {self.order_id} finished as {self.outcome}; cannot {step}"
            )

    def request_reservations(self, skus: list[str]) -> None:
        self._require_running("request reservations")
        if not self.reservations_requested:
            self._record_reservations_requested(skus=skus)

    @event(ReservationsRequested)
    def _record_reservations_requested(self, skus: list[str]) -> None:
        self.reservations_requested = True

    def record_charge(self, payment_id: str, attempt: int) -> None:
        if self.payment_id is None:
            self._record_charge(payment_id=payment_id, attempt=attempt)

    @event(ChargeSucceeded)
    def _record_charge(self, payment_id: str, attempt: int) -> None:
        self.payment_id = payment_id

    def record_charge_failure(self, reason: str, *, outcome_known: bool) -> None:
        """Record a failed charge attempt. A known failure moves to a new attempt, whose
        new idempotency key makes the payment provider run the charge again; an unknown
        outcome keeps the key, so a retry cannot charge twice."""
        self._record_charge_failure(
            attempt=self.charge_attempt, reason=reason[:500], outcome_known=outcome_known
        )

    @event(ChargeAttemptFailed)
    def _record_charge_failure(self, attempt: int, reason: str, outcome_known: bool) -> None:
        if outcome_known:
            self.charge_attempt = attempt + 1

    def record_shipment(self, shipment_id: str) -> None:
        if self.shipment_id is None:
            self._record_shipment(shipment_id=shipment_id)

    @event(ShipmentCreated)
    def _record_shipment(self, shipment_id: str) -> None:
        self.shipment_id = shipment_id

    def claim_confirmation(self) -> bool:
        """Claim the right to send the confirmation; False if it was claimed before.

        The claim is saved before sending, and a concurrent claim conflicts on
        the saga's version, so at most one e-mail goes out.
        """
        if self.confirmation_claimed:
            return False
        self._record_confirmation_claimed()
        return True

    @event(ConfirmationClaimed)
    def _record_confirmation_claimed(self) -> None:
        self.confirmation_claimed = True

    def record_confirmation(self, message_id: str) -> None:
        if self.confirmation_message_id is None:
            self._record_confirmation(message_id=message_id)

    @event(ConfirmationSent)
    def _record_confirmation(self, message_id: str) -> None:
        self.confirmation_message_id = message_id

    def start_compensation(self, kind: CompensationKind, reason: str) -> None:
        self._require_running("start compensation")
        if not self.is_compensating:
            self._record_compensation_started(kind=kind.value, reason=reason[:500])

    @event(CompensationStarted)
    def _record_compensation_started(self, kind: str, reason: str) -> None:
        self.compensation_kind = kind
        self.compensation_reason = reason

    def record_refund(self, refund_id: str) -> None:
        if self.refund_id is None:
            self._record_refund(refund_id=refund_id)

    @event(PaymentRefunded)
    def _record_refund(self, refund_id: str) -> None:
        self.refund_id = refund_id
        self.stuck_step = None

    def record_refund_failure(self, reason: str, *, outcome_known: bool) -> None:
        self._record_refund_failure(
            attempt=self.refund_attempt, reason=reason[:500], outcome_known=outcome_known
        )

    @event(RefundAttemptFailed)
    def _record_refund_failure(self, attempt: int, reason: str, outcome_known: bool) -> None:
        if outcome_known:
            self.refund_attempt = attempt + 1

    def record_shipment_cancelled(self) -> None:
        if not self.shipment_cancelled:
            self._record_shipment_cancelled()

    @event(ShipmentCancelled)
    def _record_shipment_cancelled(self) -> None:
        self.shipment_cancelled = True

    def record_stock_released(self, skus: list[str]) -> None:
        if not self.stock_released:
            self._record_stock_released(skus=skus)

    @event(StockReleased)
    def _record_stock_released(self, skus: list[str]) -> None:
        self.stock_released = True

    def record_stuck(self, step: str, reason: str) -> None:
        if self.stuck_step != step:
            self._record_stuck(step=step, reason=reason[:500])

    @event(CompensationStuck)
    def _record_stuck(self, step: str, reason: str) -> None:
        self.stuck_step = step
        self.raised_attention = True
        if step == CONFIRMATION_STEP:
            # The send failed with an answer, so no e-mail went out: a retry may send one.
            self.confirmation_claimed = False

    def request_retry(self) -> None:
        """Clear a stuck step so the saga tries it again; a finished saga may still
        hold one, when a late charge or shipment had to be reversed after the end."""
        if self.stuck_step is None:
            raise InvalidTransitionError(
                f"saga of order {self.order_id} has no stuck step to retry"
            )
        self._record_retry_requested()

    @event(RetryRequested)
    def _record_retry_requested(self) -> None:
        self.stuck_step = None

    def finish(self, outcome: SagaOutcome) -> None:
        if not self.is_finished:
            self._record_finished(outcome=outcome.value)

    @event(Finished)
    def _record_finished(self, outcome: str) -> None:
        self.outcome = outcome
