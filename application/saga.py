"""The order saga: drives a placed order to an end, and compensates when a step fails.

``OrderSagaProcess.advance(order_id)`` loads the order and its saga, decides the
one next step from their state, performs it and commits, and repeats until the
order waits for something (item workers, a retry) or the saga has finished.
Because the decision comes from stored state, a duplicate or late event finds
nothing to do, and compensation reverses only the steps the saga recorded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from uuid import UUID

from aws_lambda_powertools import Logger
from eventsourcing.application import AggregateNotFoundError

from application.errors import OrderNotFoundError, VersionConflictError
from application.external import (
    EmailError,
    EmailSender,
    EmailTransientError,
    PaymentAlreadyRefundedError,
    PaymentConfigurationError,
    PaymentDeclinedError,
    PaymentGateway,
    PaymentTransientError,
    RecipientNotFoundError,
    ShipmentRejectedError,
    ShipmentService,
    ShipmentTransientError,
    shipment_idempotency_key,
)
from application.orders import OrdersApplication
from application.ports import AttentionQueue, ReservationQueue, ReservationRequest
from domain.inventory import InventoryItem, inventory_id
from domain.order import Order, OrderStatus
from domain.saga import CONFIRMATION_STEP, CompensationKind, OrderSaga, SagaOutcome, saga_id

logger = Logger(service="orders", child=True)

T = TypeVar("T")

MAX_STEPS = 30
MAX_CONFLICT_RETRIES = 25


@dataclass
class RetryPolicy:
    """Retries of a transient failure: ``retries`` more tries, waiting ``base_delay``
    seconds before the first and doubling each time."""

    retries: int = 3
    base_delay: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def delays(self) -> Iterator[float]:
        for index in range(self.retries):
            yield self.base_delay * (2**index)


@dataclass
class SagaPorts:
    payments: PaymentGateway
    shipments: ShipmentService
    email: EmailSender
    reservations: ReservationQueue
    attention: AttentionQueue
    recipient_for: Callable[[str], str]


MAX_SKUS_IN_REASON = 10


def out_of_stock_reason(skus: list[str]) -> str:
    """Name the unavailable skus, sorted, the first ten and a count of the rest."""
    ordered = sorted(skus)
    named = ", ".join(ordered[:MAX_SKUS_IN_REASON])
    rest = len(ordered) - MAX_SKUS_IN_REASON
    return f"out of stock: {named}" + (f" and {rest} more" if rest > 0 else "")


def _log_extra(order_id: str, **more: Any) -> dict[str, Any]:
    return {"order_id": order_id, "stream_id": order_id, **more}


class OrderSagaProcess:
    def __init__(self, app: OrdersApplication, ports: SagaPorts, retry: RetryPolicy) -> None:
        self.app = app
        self.ports = ports
        self.retry = retry

    # Entry points -----------------------------------------------------------------

    def advance(self, order_id: str) -> SagaOutcome | None:
        """Run every step that can run now; return the outcome once the saga has finished."""
        for _ in range(MAX_STEPS):
            try:
                progressed = self._step(order_id)
            except VersionConflictError as conflict:
                logger.info(
                    "saga step lost a race, reloading",
                    extra=_log_extra(order_id, conflict=str(conflict)),
                )
                continue
            if not progressed:
                break
        saga = self._load_saga(order_id)
        return SagaOutcome(saga.outcome) if saga and saga.outcome else None

    def retry_stuck(self, order_id: str) -> SagaOutcome | None:
        """Operator command: try a stuck compensation or confirmation again."""
        saga = self._load_saga(order_id)
        if saga is None:
            raise OrderNotFoundError(order_id)
        if saga.stuck_step is not None:
            saga.request_retry()
            self.app.save(saga)
        return self.advance(order_id)

    # Loading ----------------------------------------------------------------------

    def _load_order(self, order_id: str) -> Order:
        try:
            order: Order = self.app.repository.get(UUID(order_id), fresh=True)
        except (AggregateNotFoundError, ValueError):
            raise OrderNotFoundError(order_id) from None
        return order

    def _load_saga(self, order_id: str) -> OrderSaga | None:
        try:
            saga: OrderSaga = self.app.repository.get(saga_id(order_id), fresh=True)
        except AggregateNotFoundError:
            return None
        return saga

    def _load_inventory(self, sku: str) -> InventoryItem | None:
        try:
            item: InventoryItem = self.app.repository.get(inventory_id(sku), fresh=True)
        except AggregateNotFoundError:
            return None
        return item

    # Deciding ---------------------------------------------------------------------

    def _step(self, order_id: str) -> bool:
        """Perform the next step and commit it; return False when nothing can run now."""
        order = self._load_order(order_id)
        saga = self._load_saga(order_id)
        if saga is None:
            saga = OrderSaga(order_id=order_id)
        if saga.stuck_step:
            return False
        if saga.is_finished:
            # A charge or shipment whose answer came after compensation had finished
            # was recorded late: reverse it as well.
            if saga.outcome != SagaOutcome.FULFILLED and self._has_unreversed_effects(saga):
                return self._compensate(order, saga)
            return False

        if saga.is_compensating or self._needs_compensation(order):
            return self._compensate(order, saga)

        status = order.status
        if status == OrderStatus.PLACED:
            if saga.reservations_requested:
                return False  # waiting for the item workers
            return self._request_reservations(order, saga)
        if status == OrderStatus.RESERVED:
            return self._charge(order, saga)
        if status == OrderStatus.PAID:
            return self._ship(order, saga)
        if status == OrderStatus.FULFILLED:
            return self._confirm(order, saga)
        return False

    @staticmethod
    def _has_unreversed_effects(saga: OrderSaga) -> bool:
        shipped = saga.shipment_id is not None and not saga.shipment_cancelled
        charged = saga.payment_id is not None and saga.refund_id is None
        return shipped or charged

    def _record_effect(self, saga: OrderSaga, record: Callable[[OrderSaga], None]) -> OrderSaga:
        """Record a charge or shipment that happened, on the saga's newest state.

        Another run may have changed the saga meanwhile (a cancellation started
        compensating), and compensation reverses only what the saga recorded, so a
        version conflict must not drop the record.
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            record(saga)
            try:
                self.app.save(saga)
            except VersionConflictError:
                fresh = self._load_saga(saga.order_id)
                if fresh is None:
                    raise
                saga = fresh
                continue
            return saga
        raise VersionConflictError(saga.order_id, -1, None, None)

    def _save_failure(self, saga: OrderSaga, step: str) -> bool:
        """Save a failed attempt; False when another run changed the saga meanwhile.

        That run is working on the same order and goes on retrying. Reloading here
        instead would restart this run's retries too, so two runs would keep resetting
        each other's count and might never report the step as stuck.
        """
        try:
            self.app.save(saga)
        except VersionConflictError:
            logger.info(
                f"{step} failure raced another run of the saga; leaving the retries to it",
                extra=_log_extra(saga.order_id),
            )
            return False
        return True

    @staticmethod
    def _needs_compensation(order: Order) -> bool:
        if order.status == OrderStatus.CANCELLED:
            return True
        return order.status == OrderStatus.PLACED and bool(
            order.all_lines_have_results and order.unavailable_skus
        )

    # Forward steps ----------------------------------------------------------------

    def _request_reservations(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        requests = [
            ReservationRequest(order_id=order_id, sku=line.sku, quantity=line.quantity)
            for line in order.lines
        ]
        # Sending before saving: a crash in between sends again on redelivery,
        # and the item workers ignore a line that already has a result.
        self.ports.reservations.send(requests)
        saga.request_reservations([request.sku for request in requests])
        self.app.save(saga)
        logger.info(
            "reservations requested",
            extra=_log_extra(order_id, version=order.version, lines=len(requests)),
        )
        return True

    def _charge(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        if saga.payment_id is not None:
            order.record_payment(saga.payment_id)
            self.app.save(order)
            return True

        delays = self.retry.delays()
        while True:
            attempt = saga.charge_attempt
            try:
                result = self.ports.payments.charge(
                    order_id=order_id,
                    attempt=attempt,
                    amount=order.total,
                    currency=order.currency,
                    payment_method=order.payment_method,
                    customer_id=order.customer_id,
                )
            except PaymentDeclinedError as declined:
                saga.start_compensation(CompensationKind.FAILED, f"payment declined: {declined}")
                self.app.save(saga)
                return True
            except PaymentConfigurationError as error:
                saga.start_compensation(CompensationKind.FAILED, f"payment failed: {error}")
                self.app.save(saga)
                return True
            except PaymentTransientError as error:
                known = error.outcome_known
                saga.record_charge_failure(str(error), outcome_known=known)
                if not self._save_failure(saga, "charge"):
                    return False
                delay = next(delays, None)
                if delay is None:
                    reason = f"payment unavailable after {self.retry.retries} retries: {error}"
                    if not known:
                        # The last charge may have gone through: an operator must check.
                        order.require_attention(f"payment outcome unknown: {error}")
                        self.app.save(order)
                    saga.start_compensation(CompensationKind.FAILED, reason)
                    self.app.save(saga)
                    return True
                logger.warning(
                    "charge failed, retrying",
                    extra=_log_extra(order_id, attempt=attempt, delay=delay, error=str(error)),
                )
                self.retry.sleep(delay)
                continue

            # The saga's record comes first, on its own stream: if the order
            # changed meanwhile (a cancellation), the saga still knows it charged.
            record = partial(OrderSaga.record_charge, payment_id=result.payment_id, attempt=attempt)
            self._record_effect(saga, record)
            order.record_payment(result.payment_id)
            self.app.save(order)
            logger.info(
                "payment captured",
                extra=_log_extra(order_id, version=order.version, payment_id=result.payment_id),
            )
            return True

    def _ship(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        if saga.shipment_id is None:
            try:
                shipment_id = self._with_retries(
                    order_id,
                    "create shipment",
                    lambda: self.ports.shipments.create_shipment(
                        order_id=order_id,
                        lines=order.lines,
                        idempotency_key=shipment_idempotency_key(order_id, 1),
                    ),
                    transient=(ShipmentTransientError,),
                )
            except (ShipmentRejectedError, ShipmentTransientError) as error:
                saga.start_compensation(CompensationKind.FAILED, f"shipment failed: {error}")
                self.app.save(saga)
                return True
            self._record_effect(saga, lambda current: current.record_shipment(shipment_id))
            return True

        # Fulfilment and the stock leaving the warehouse commit together.
        order.mark_fulfilled(saga.shipment_id)
        items = []
        for sku in order.reserved_skus:
            item = self._load_inventory(sku)
            if item is not None and item.ship(order_id):
                items.append(item)
        self.app.save(order, *items)
        logger.info(
            "order fulfilled",
            extra=_log_extra(order_id, version=order.version, shipment_id=saga.shipment_id),
        )
        return True

    def _confirm(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        if saga.confirmation_message_id is None:
            if saga.claim_confirmation():
                self.app.save(saga)  # a concurrent claim conflicts here, before any send
            elif saga.confirmation_claimed:
                # Claimed earlier by a run that did not record a message: it may
                # have sent the e-mail, so this run does not send another.
                saga.finish(SagaOutcome.FULFILLED)
                self.app.save(saga)
                return True
            try:
                message_id = self._with_retries(
                    order_id,
                    CONFIRMATION_STEP,
                    lambda: self.ports.email.send_order_confirmation(
                        order_id=order_id,
                        customer_id=order.customer_id,
                        to_address=self.ports.recipient_for(order.customer_id),
                        total=order.total,
                        currency=order.currency,
                        lines=order.lines,
                    ),
                    transient=(EmailTransientError,),
                )
            except (EmailError, RecipientNotFoundError) as error:
                # The order stays fulfilled; an operator can retry the e-mail.
                self._report_stuck(order, saga, CONFIRMATION_STEP, str(error))
                return False
            saga.record_confirmation(message_id)
        saga.finish(SagaOutcome.FULFILLED)
        if saga.raised_attention:
            order.resolve_attention()
        self.app.save(saga, order)
        return True

    # Compensation -----------------------------------------------------------------

    def _compensate(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        if not saga.is_compensating:
            if order.status == OrderStatus.CANCELLED:
                kind, reason = CompensationKind.CANCELLED, order.failure_reason or "cancelled"
            else:
                kind, reason = CompensationKind.FAILED, out_of_stock_reason(order.unavailable_skus)
            saga.start_compensation(kind, reason)
            self.app.save(saga)
            logger.info("compensation started", extra=_log_extra(order_id, reason=reason))
            return True

        if saga.shipment_id and not saga.shipment_cancelled:
            shipment_id = saga.shipment_id
            try:
                self._with_retries(
                    order_id,
                    "cancel shipment",
                    lambda: self.ports.shipments.cancel_shipment(
                        order_id=order_id, shipment_id=shipment_id
                    ),
                    transient=(ShipmentTransientError,),
                )
            except (ShipmentTransientError, ShipmentRejectedError) as error:
                self._report_stuck(order, saga, "cancel shipment", str(error))
                return False
            saga.record_shipment_cancelled()
            self._save_with_attention_cleared(saga, order)
            return True

        if saga.payment_id and not saga.refund_id:
            return self._refund(order, saga, saga.payment_id)

        if not saga.stock_released:
            return self._release_stock(order, saga)
        return False

    def _refund(self, order: Order, saga: OrderSaga, payment_id: str) -> bool:
        order_id = str(order.id)
        delays = self.retry.delays()
        while True:
            try:
                refund = self.ports.payments.refund(
                    order_id=order_id, payment_id=payment_id, attempt=saga.refund_attempt
                )
            except PaymentTransientError as error:
                saga.record_refund_failure(str(error), outcome_known=error.outcome_known)
                if not self._save_failure(saga, "refund"):
                    return False
                delay = next(delays, None)
                if delay is None:
                    self._report_stuck(order, saga, "refund", str(error))
                    return False
                self.retry.sleep(delay)
                continue
            except PaymentAlreadyRefundedError as error:
                # Someone refunded outside the saga: the money is back, but an
                # operator should know, so the order keeps the flag.
                saga.record_refund("refunded-outside-saga")
                order.require_attention(f"payment {payment_id} was refunded outside the saga")
                self.app.save(saga, order)
                logger.warning(
                    "payment already refunded", extra=_log_extra(order_id, error=str(error))
                )
                return True
            except (PaymentDeclinedError, PaymentConfigurationError) as error:
                self._report_stuck(order, saga, "refund", str(error))
                return False
            saga.record_refund(refund.refund_id)
            self._save_with_attention_cleared(saga, order)
            logger.info(
                "payment refunded",
                extra=_log_extra(order_id, payment_id=payment_id, refund_id=refund.refund_id),
            )
            return True

    def _release_stock(self, order: Order, saga: OrderSaga) -> bool:
        order_id = str(order.id)
        items = []
        for sku in order.reserved_skus:
            item = self._load_inventory(sku)
            if item is not None and item.release(order_id):
                items.append(item)
        outcome = SagaOutcome.FAILED
        if saga.compensation_kind == CompensationKind.CANCELLED.value:
            outcome = SagaOutcome.CANCELLED
        elif not order.is_final:
            order.fail(saga.compensation_reason or "failed")
        if saga.raised_attention:
            order.resolve_attention()  # the saga's own flag; the stuck step is done now
        saga.record_stock_released([item.sku for item in items])
        saga.finish(outcome)
        # Stock, order and saga commit together, so a crash leaves all or none.
        self.app.save(saga, order, *items)
        logger.info(
            "compensation finished",
            extra=_log_extra(
                order_id,
                version=order.version,
                outcome=outcome.value,
                released=[item.sku for item in items],
            ),
        )
        return True

    def _save_with_attention_cleared(self, saga: OrderSaga, order: Order) -> None:
        """Save a compensation step; once it succeeds, the flag the saga raised for it goes."""
        if saga.raised_attention and order.needs_attention:
            order.resolve_attention()
            self.app.save(saga, order)
        else:
            self.app.save(saga)

    def _report_stuck(self, order: Order, saga: OrderSaga, step: str, reason: str) -> None:
        order_id = str(order.id)
        self.ports.attention.report(order_id=order_id, step=step, reason=reason)
        saga.record_stuck(step, reason)
        order.require_attention(f"{step} failed: {reason}"[:500])
        self.app.save(saga, order)
        logger.error(
            "saga step failed after retries; order needs attention",
            extra=_log_extra(order_id, step=step, error=reason),
        )

    # Retrying ---------------------------------------------------------------------

    def _with_retries(
        self,
        order_id: str,
        step: str,
        call: Callable[[], T],
        transient: tuple[type[Exception], ...],
    ) -> T:
        delays = self.retry.delays()
        while True:
            try:
                return call()
            except transient as error:
                delay = next(delays, None)
                if delay is None:
                    raise
                logger.warning(
                    f"{step} failed, retrying",
                    extra=_log_extra(order_id, delay=delay, error=str(error)),
                )
                self.retry.sleep(delay)


def reserve_line(app: OrdersApplication, request: ReservationRequest) -> bool:
    """Reserve one order line's stock and record the result on the order, in one commit.

    Returns False when there was nothing to do: the line already has a result,
    or the order is no longer waiting for stock. Concurrent workers on the same
    sku or order conflict on a version and retry with fresh state, so stock is
    never reserved twice or below zero.
    """
    for attempt in range(1, MAX_CONFLICT_RETRIES + 1):
        try:
            order: Order = app.repository.get(UUID(request.order_id))
        except AggregateNotFoundError:
            raise OrderNotFoundError(request.order_id) from None
        if request.sku in order.line_results or order.status != OrderStatus.PLACED:
            return False
        quantity = order.line(request.sku).quantity

        try:
            item: InventoryItem | None = app.repository.get(inventory_id(request.sku))
        except AggregateNotFoundError:
            item = None
        reserved = item is not None and item.reserve(request.order_id, quantity)
        available = item.available if item is not None else 0
        order.record_line_result(request.sku, reserved=reserved, available=available)

        try:
            if reserved and item is not None:
                app.save(order, item)
            else:
                app.save(order)
        except VersionConflictError:
            time.sleep(random.uniform(0, 0.01 * attempt))  # full jitter
            continue
        logger.info(
            "line reserved" if reserved else "line unavailable",
            extra=_log_extra(
                request.order_id,
                version=order.version,
                sku=request.sku,
                quantity=quantity,
                available=available,
            ),
        )
        return True
    raise VersionConflictError(request.order_id, -1, None, None)
