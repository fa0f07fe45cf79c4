"""One complete order lifecycle, run in-process the way the deployed functions run it.

The three functions that write to the event store are three applications here:
the API (places the order), the saga and the item worker, each configured as the
template configures its function (the API and the worker keep an aggregate cache,
the saga loads fresh). The saga is triggered once for every order event that the
template's EventBridge rule routes to it, as the bus would deliver them, and the
worker once for every reservation message. External services are in-memory fakes
that always succeed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from application import inventory
from application.commands import OrderLineInput, PlaceOrder
from application.external import PaymentResult, RefundResult
from application.orders import OrdersApplication
from application.ports import ReservationRequest
from application.saga import OrderSagaProcess, RetryPolicy, SagaPorts, reserve_line
from domain.order import Order, OrderLine, OrderStatus
from infra.local.template import Template

SAGA_RULE = "OrderEventsToSagaRule"
DEFAULT_LINES = (("MUG-RED", 2, 1250), ("TEA-GREEN", 1, 499))


class FakePayments:
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
        return PaymentResult(
            payment_id=f"pi_{uuid.uuid4().hex[:14]}",
            status="succeeded",
            amount=amount,
            currency=currency,
        )

    def refund(
        self, *, order_id: str, payment_id: str, attempt: int, amount: int | None = None
    ) -> RefundResult:
        return RefundResult(
            refund_id=f"re_{uuid.uuid4().hex[:14]}",
            payment_id=payment_id,
            status="succeeded",
            amount=amount or 0,
            currency="usd",
        )


class FakeShipments:
    def create_shipment(
        self, *, order_id: str, lines: Sequence[OrderLine], idempotency_key: str
    ) -> str:
        return f"sh_{uuid.uuid4().hex[:12]}"

    def cancel_shipment(self, *, order_id: str, shipment_id: str) -> None:
        return None


class FakeEmail:
    def send_order_confirmation(self, **_: Any) -> str:
        return f"msg-{uuid.uuid4().hex[:12]}"


@dataclass
class ListQueue:
    messages: list[ReservationRequest] = field(default_factory=list)

    def send(self, requests: Sequence[ReservationRequest]) -> None:
        self.messages.extend(requests)


class NoAttention:
    def report(self, *, order_id: str, step: str, reason: str) -> None:
        raise AssertionError(f"the lifecycle got stuck at {step}: {reason}")


def saga_trigger_types(template: Template | None = None) -> frozenset[str]:
    """Return the order event types that the template's rule routes to the saga."""
    body = (template or Template.load()).resources[SAGA_RULE]["Properties"]["EventPattern"]
    return frozenset(body["detail-type"])


@dataclass
class LifecycleApps:
    api: OrdersApplication
    saga_app: OrdersApplication
    worker: OrdersApplication
    inspector: OrdersApplication
    """Reads the order's events to decide which triggers follow; never metered."""
    queue: ListQueue
    saga: OrderSagaProcess


def build_apps(
    make_app: Callable[[dict[str, str]], OrdersApplication], environment: dict[str, str]
) -> LifecycleApps:
    """Build the applications with the template's cache settings per function."""
    cached = {**environment, "AGGREGATE_CACHE_MAXSIZE": "1000"}
    queue = ListQueue()
    saga_app = make_app(environment)
    ports = SagaPorts(
        payments=FakePayments(),
        shipments=FakeShipments(),
        email=FakeEmail(),
        reservations=queue,
        attention=NoAttention(),
        recipient_for=lambda customer_id: f"{customer_id}@customers.example.com",
    )
    return LifecycleApps(
        api=make_app(cached),
        saga_app=saga_app,
        worker=make_app(cached),
        inspector=make_app(environment),
        queue=queue,
        saga=OrderSagaProcess(saga_app, ports, RetryPolicy(retries=0, base_delay=0)),
    )


def restock(app: OrdersApplication, lines: Sequence[tuple[str, int, int]], units: int) -> None:
    for sku, _quantity, _price in lines:
        inventory.restock(app, sku, units)


def place_command(lines: Sequence[tuple[str, int, int]] = DEFAULT_LINES) -> PlaceOrder:
    return PlaceOrder(
        customer_id="c-bench",
        currency="USD",
        payment_method="pm_card_visa",
        lines=[
            OrderLineInput(sku=sku, quantity=quantity, unit_price=price)
            for sku, quantity, price in lines
        ],
    )


@dataclass
class LifecycleTrace:
    order_id: str
    saga_triggers: list[str]
    reservations: int
    status: str


def run_lifecycle(
    apps: LifecycleApps,
    triggers: frozenset[str],
    *,
    pause: Callable[[], Any],
    lines: Sequence[tuple[str, int, int]] = DEFAULT_LINES,
) -> LifecycleTrace:
    """Place one order and deliver every saga trigger and reservation until it is fulfilled.

    ``pause()`` returns a context manager under which the driver's own reads (deciding
    what the bus would deliver next) are left out of the measurement.
    """
    placed = apps.api.place_order(place_command(lines), idempotency_key=None)
    order_id = placed.order_id
    seen_version = 0
    delivered: list[str] = []
    reservations = 0
    for _ in range(100):
        with pause():
            events = apps.inspector.events.get(UUID(order_id), gt=seen_version)
            new_types = [type(event).__name__ for event in events]
            seen_version += len(new_types)
        pending = [name for name in new_types if name in triggers]
        if not pending and not apps.queue.messages:
            break
        for name in pending:
            delivered.append(name)
            apps.saga.advance(order_id)
        while apps.queue.messages:
            reserve_line(apps.worker, apps.queue.messages.pop(0))
            reservations += 1
    with pause():
        order: Order = apps.inspector.repository.get(UUID(order_id), fresh=True)
    if order.status != OrderStatus.FULFILLED:
        raise AssertionError(f"order {order_id} ended {order.status}, not FULFILLED")
    return LifecycleTrace(order_id, delivered, reservations, str(order.status))
