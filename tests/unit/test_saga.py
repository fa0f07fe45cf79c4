"""The order saga on the in-memory store with small fakes of the external services."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from application.external import (
    EmailTransientError,
    PaymentDeclinedError,
    PaymentResult,
    PaymentTransientError,
    RefundResult,
    charge_idempotency_key,
    refund_idempotency_key,
)
from application.orders import OrdersApplication
from application.ports import ReservationRequest
from application.saga import (
    OrderSagaProcess,
    RetryPolicy,
    SagaPorts,
    out_of_stock_reason,
    reserve_line,
)
from domain.inventory import InventoryItem, inventory_id
from domain.order import Order, OrderLine, OrderStatus
from domain.saga import OrderSaga, SagaOutcome, saga_id


@dataclass
class FakePayments:
    """Charges and refunds keyed by idempotency key, like a payment provider."""

    declined_methods: set[str] = field(default_factory=lambda: {"pm_card_visa_chargeDeclined"})
    charge_failures: list[str] = field(default_factory=list)  # "500" or "drop", consumed in order
    refund_failures: list[str] = field(default_factory=list)
    charges: dict[str, PaymentResult] = field(default_factory=dict)
    refunds: dict[str, RefundResult] = field(default_factory=dict)
    charge_keys_seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    during_next_charge: Callable[[], None] | None = None
    """Runs once inside the next charge, before it answers: another saga run, say."""
    during_next_refund: Callable[[], None] | None = None
    refund_calls: int = 0

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
        key = charge_idempotency_key(order_id, attempt)
        meanwhile, self.during_next_charge = self.during_next_charge, None
        if meanwhile is not None:
            meanwhile()
        with self.lock:
            self.charge_keys_seen.append(key)
            failure = self.charge_failures.pop(0) if self.charge_failures else None
            if failure == "500":
                raise PaymentTransientError(
                    "provider answered 500",
                    order_id=order_id,
                    attempt=attempt,
                    outcome_known=True,
                )
            if payment_method in self.declined_methods:
                raise PaymentDeclinedError(
                    "card declined",
                    order_id=order_id,
                    attempt=attempt,
                    decline_code="generic_decline",
                    customer_message="Your card was declined.",
                )
            if key not in self.charges:
                self.charges[key] = PaymentResult(
                    payment_id=f"pi_{uuid.uuid4().hex[:12]}",
                    status="succeeded",
                    amount=amount,
                    currency=currency,
                )
            if failure == "drop":
                raise PaymentTransientError(
                    "connection dropped", order_id=order_id, attempt=attempt, outcome_known=False
                )
            return self.charges[key]

    def refund(
        self, *, order_id: str, payment_id: str, attempt: int, amount: int | None = None
    ) -> RefundResult:
        key = refund_idempotency_key(order_id, attempt)
        meanwhile, self.during_next_refund = self.during_next_refund, None
        if meanwhile is not None:
            meanwhile()
        with self.lock:
            self.refund_calls += 1
            if self.refund_failures:
                self.refund_failures.pop(0)
                raise PaymentTransientError(
                    "provider answered 503",
                    order_id=order_id,
                    attempt=attempt,
                    outcome_known=True,
                )
            if key not in self.refunds:
                self.refunds[key] = RefundResult(
                    refund_id=f"re_{uuid.uuid4().hex[:12]}",
                    payment_id=payment_id,
                    status="succeeded",
                    amount=amount or 0,
                    currency="usd",
                )
            return self.refunds[key]


@dataclass
class FakeShipments:
    created: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    during_next_create: Callable[[], None] | None = None
    """Runs once inside the next create_shipment, before it answers."""

    def create_shipment(
        self, *, order_id: str, lines: Sequence[OrderLine], idempotency_key: str
    ) -> str:
        meanwhile, self.during_next_create = self.during_next_create, None
        if meanwhile is not None:
            meanwhile()
        return self.created.setdefault(idempotency_key, f"sh_{uuid.uuid4().hex[:12]}")

    def cancel_shipment(self, *, order_id: str, shipment_id: str) -> None:
        self.cancelled.append(shipment_id)


@dataclass
class FakeEmail:
    sent: list[str] = field(default_factory=list)
    failures: int = 0

    def send_order_confirmation(self, *, order_id: str, **_: Any) -> str:
        if self.failures:
            self.failures -= 1
            raise EmailTransientError("throttled", order_id=order_id)
        self.sent.append(order_id)
        return f"msg-{len(self.sent)}"


@dataclass
class FakeQueue:
    sent: list[ReservationRequest] = field(default_factory=list)

    def send(self, requests: Sequence[ReservationRequest]) -> None:
        self.sent.extend(requests)


@dataclass
class FakeAttention:
    reports: list[tuple[str, str]] = field(default_factory=list)

    def report(self, *, order_id: str, step: str, reason: str) -> None:
        self.reports.append((order_id, step))


@dataclass
class World:
    app: OrdersApplication
    saga: OrderSagaProcess
    payments: FakePayments
    shipments: FakeShipments
    email: FakeEmail
    queue: FakeQueue
    attention: FakeAttention
    sleeps: list[float]

    def restock(self, sku: str, quantity: int) -> None:
        item = InventoryItem.register(sku)
        item.add_stock(quantity)
        self.app.save(item)

    def stock(self, sku: str) -> InventoryItem:
        item: InventoryItem = self.app.repository.get(inventory_id(sku))
        return item

    def place(self, *lines: OrderLine, payment_method: str = "pm_card_visa") -> str:
        order = Order.place(
            customer_id="c-1", currency="USD", payment_method=payment_method, lines=lines
        )
        self.app.save(order)
        return str(order.id)

    def order(self, order_id: str) -> Order:
        order: Order = self.app.repository.get(uuid.UUID(order_id))
        return order

    def run_workers(self) -> None:
        while self.queue.sent:
            reserve_line(self.app, self.queue.sent.pop(0))

    def run_to_end(self, order_id: str) -> SagaOutcome | None:
        self.saga.advance(order_id)
        self.run_workers()
        return self.saga.advance(order_id)


@pytest.fixture
def world() -> Iterator[World]:
    app = OrdersApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    sleeps: list[float] = []
    ports = SagaPorts(
        payments=FakePayments(),
        shipments=FakeShipments(),
        email=FakeEmail(),
        reservations=FakeQueue(),
        attention=FakeAttention(),
        recipient_for=lambda customer_id: f"{customer_id}@customers.example.com",
    )
    process = OrderSagaProcess(
        app, ports, RetryPolicy(retries=3, base_delay=2.0, sleep=sleeps.append)
    )
    yield World(
        app,
        process,
        ports.payments,
        ports.shipments,
        ports.email,  # type: ignore[arg-type]
        ports.reservations,
        ports.attention,
        sleeps,
    )  # type: ignore[arg-type]
    app.close()


MUG = OrderLine("MUG", 2, 1250)
TEA = OrderLine("TEA", 3, 400)


def test_happy_path_fulfils_order(world: World) -> None:
    world.restock("MUG", 10)
    world.restock("TEA", 10)
    order_id = world.place(MUG, TEA)

    outcome = world.run_to_end(order_id)

    assert outcome == SagaOutcome.FULFILLED
    assert world.order(order_id).status == OrderStatus.FULFILLED
    assert len(world.payments.charges) == 1
    assert world.email.sent == [order_id]


def test_happy_path_takes_stock_out(world: World) -> None:
    world.restock("MUG", 10)
    world.restock("TEA", 10)
    order_id = world.place(MUG, TEA)

    world.run_to_end(order_id)

    assert (world.stock("MUG").on_hand, world.stock("MUG").reserved) == (8, 0)
    assert (world.stock("TEA").on_hand, world.stock("TEA").reserved) == (7, 0)


def test_fan_out_sends_one_request_per_line(world: World) -> None:
    order_id = world.place(MUG, TEA)
    world.saga.advance(order_id)
    assert sorted(request.sku for request in world.queue.sent) == ["MUG", "TEA"]


def test_out_of_stock_fails_and_releases(world: World) -> None:
    world.restock("MUG", 10)
    world.restock("TEA", 1)
    order_id = world.place(MUG, TEA)

    outcome = world.run_to_end(order_id)

    order = world.order(order_id)
    assert outcome == SagaOutcome.FAILED
    assert order.status == OrderStatus.FAILED
    assert order.failure_reason == "out of stock: TEA"
    assert world.payments.charge_keys_seen == []
    assert world.stock("MUG").available == 10


def test_declined_card_fails_and_releases(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG, payment_method="pm_card_visa_chargeDeclined")

    outcome = world.run_to_end(order_id)

    assert outcome == SagaOutcome.FAILED
    assert "declined" in (world.order(order_id).failure_reason or "")
    assert world.stock("MUG").available == 10
    assert world.payments.charges == {}


def test_two_500s_then_success_charges_once(world: World) -> None:
    world.restock("MUG", 10)
    world.payments.charge_failures = ["500", "500"]
    order_id = world.place(MUG)

    outcome = world.run_to_end(order_id)

    assert outcome == SagaOutcome.FULFILLED
    assert len(world.payments.charges) == 1
    assert world.sleeps == [2.0, 4.0]
    # A 500 is stored by the provider under its key, so each retry needs a new key.
    assert len(set(world.payments.charge_keys_seen)) == 3


def test_dropped_connection_reuses_key(world: World) -> None:
    world.restock("MUG", 10)
    world.payments.charge_failures = ["drop"]
    order_id = world.place(MUG)

    outcome = world.run_to_end(order_id)

    assert outcome == SagaOutcome.FULFILLED
    assert len(world.payments.charges) == 1
    assert len(set(world.payments.charge_keys_seen)) == 1


def test_retries_exhausted_fails_order(world: World) -> None:
    world.restock("MUG", 10)
    world.payments.charge_failures = ["500"] * 4
    order_id = world.place(MUG)

    outcome = world.run_to_end(order_id)

    assert outcome == SagaOutcome.FAILED
    assert world.sleeps == [2.0, 4.0, 8.0]
    assert world.stock("MUG").available == 10


def test_cancel_after_payment_refunds_once(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.run_workers()
    # Stop after the charge: the next step would ship.
    order = world.order(order_id)
    world.saga._step(order_id)  # charge
    world.saga._step(order_id)  # record the payment on the order
    assert world.order(order_id).status == OrderStatus.PAID

    order = world.order(order_id)
    order.cancel("customer changed their mind")
    world.app.save(order)
    outcome = world.saga.advance(order_id)
    world.saga.advance(order_id)

    assert outcome == SagaOutcome.CANCELLED
    assert world.order(order_id).status == OrderStatus.CANCELLED
    assert len(world.payments.refunds) == 1
    assert world.stock("MUG").available == 10


def cancel_and_compensate(world: World, order_id: str) -> Callable[[], None]:
    """Cancel the order and let another saga run compensate it to the end."""

    def run() -> None:
        order = world.order(order_id)
        order.cancel("customer changed their mind")
        world.app.save(order)
        world.saga.advance(order_id)

    return run


def test_shipment_created_during_cancellation_is_cancelled(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.shipments.during_next_create = cancel_and_compensate(world, order_id)

    world.run_workers()
    outcome = world.saga.advance(order_id)

    assert outcome == SagaOutcome.CANCELLED
    assert world.shipments.cancelled == list(world.shipments.created.values())
    assert len(world.payments.refunds) == 1
    assert world.stock("MUG").available == 10


def test_charge_answered_during_cancellation_is_refunded(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.payments.during_next_charge = cancel_and_compensate(world, order_id)

    world.run_workers()
    outcome = world.saga.advance(order_id)

    assert outcome == SagaOutcome.CANCELLED
    assert len(world.payments.charges) == 1
    assert len(world.payments.refunds) == 1
    assert world.shipments.created == {}


def test_late_charge_stuck_refund_can_be_retried(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.payments.during_next_charge = cancel_and_compensate(world, order_id)
    world.payments.refund_failures = ["503"] * 4

    world.run_workers()
    world.saga.advance(order_id)

    assert world.order(order_id).needs_attention
    assert world.payments.refunds == {}

    outcome = world.saga.retry_stuck(order_id)

    assert outcome == SagaOutcome.CANCELLED
    assert len(world.payments.refunds) == 1
    assert not world.order(order_id).needs_attention


def test_refund_raced_by_another_run_is_left_to_it(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.run_workers()
    world.saga._step(order_id)  # charge
    world.saga._step(order_id)  # record the payment on the order
    order = world.order(order_id)
    order.cancel("changed mind")
    world.app.save(order)
    world.payments.refund_failures = ["503"] * 10

    def another_run_fails_too() -> None:
        saga: OrderSaga = world.app.repository.get(saga_id(order_id))
        saga.record_refund_failure("provider answered 503", outcome_known=True)
        world.app.save(saga)

    world.payments.during_next_refund = another_run_fails_too
    world.saga.advance(order_id)

    # The run whose failure record lost the race stops, so concurrent runs do not
    # restart each other's retries; the run that won keeps retrying.
    assert world.payments.refund_calls == 1
    assert world.sleeps == []


def test_duplicate_advance_is_noop(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.run_to_end(order_id)
    saga_version = world.app.recorder.select_tip(saga_id(order_id)).version  # type: ignore[attr-defined]

    world.saga.advance(order_id)
    world.saga.advance(order_id)

    assert world.app.recorder.select_tip(saga_id(order_id)).version == saga_version  # type: ignore[attr-defined]
    assert len(world.email.sent) == 1
    assert len(world.payments.charges) == 1


def test_duplicate_reservation_request_is_noop(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    request = ReservationRequest(order_id=order_id, sku="MUG", quantity=2)

    first = reserve_line(world.app, request)
    second = reserve_line(world.app, request)

    assert (first, second) == (True, False)
    assert world.stock("MUG").reserved == 2


def test_stuck_refund_needs_attention_then_retry(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.saga.advance(order_id)
    world.run_workers()
    world.saga._step(order_id)
    world.saga._step(order_id)
    order = world.order(order_id)
    order.cancel("changed mind")
    world.app.save(order)
    world.payments.refund_failures = ["503"] * 4

    world.saga.advance(order_id)

    assert world.order(order_id).needs_attention
    assert world.attention.reports == [(order_id, "refund")]
    assert world.payments.refunds == {}

    outcome = world.saga.retry_stuck(order_id)

    assert outcome == SagaOutcome.CANCELLED
    assert len(world.payments.refunds) == 1
    assert not world.order(order_id).needs_attention


def test_failed_email_is_retried_by_operator(world: World) -> None:
    world.restock("MUG", 10)
    world.email.failures = 4
    order_id = world.place(MUG)

    outcome = world.run_to_end(order_id)

    assert outcome is None
    assert world.email.sent == []
    assert world.order(order_id).needs_attention
    assert world.saga.retry_stuck(order_id) == SagaOutcome.FULFILLED
    assert world.email.sent == [order_id]
    assert not world.order(order_id).needs_attention


def test_concurrent_orders_never_oversell(world: World) -> None:
    world.restock("MUG", 10)
    order_ids = [world.place(OrderLine("MUG", 1, 100)) for _ in range(50)]
    for order_id in order_ids:
        world.saga.advance(order_id)
    requests = list(world.queue.sent)
    world.queue.sent.clear()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(chunk: list[ReservationRequest]) -> None:
        barrier.wait()
        try:
            for request in chunk:
                reserve_line(world.app, request)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(requests[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for order_id in order_ids:
        world.saga.advance(order_id)

    statuses = [world.order(order_id).status for order_id in order_ids]
    assert errors == []
    assert world.stock("MUG").on_hand == 0
    assert world.stock("MUG").reserved == 0
    assert statuses.count(OrderStatus.FULFILLED) == 10
    assert statuses.count(OrderStatus.FAILED) == 40


def test_saga_state_survives_reload(world: World) -> None:
    world.restock("MUG", 10)
    order_id = world.place(MUG)
    world.run_to_end(order_id)
    saga: OrderSaga = world.app.repository.get(saga_id(order_id))
    assert saga.outcome == SagaOutcome.FULFILLED.value
    assert saga.payment_id is not None


def test_out_of_stock_reason_lists_ten() -> None:
    skus = [f"S-{index:02d}" for index in range(12, 0, -1)]
    reason = out_of_stock_reason(skus)
    assert reason == (
        "out of stock: S-01, S-02, S-03, S-04, S-05, S-06, S-07, S-08, S-09, S-10 and 2 more"
    )
