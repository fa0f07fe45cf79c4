"""The order summary projection under duplicates, gaps, reordering and races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory_read_models import MemoryProjectionTable
from application.orders import OrdersApplication
from application.ports import Tip
from domain.order import Order, OrderLine
from projections.order_summary import PROJECTION, ProjectionError, apply_event, fold
from projections.projector import GuardedProjector


class FakeSummaryStore(MemoryProjectionTable):
    """The in-memory table with the DynamoDB store's version guard, rows keyed by order id."""

    def __init__(self) -> None:
        super().__init__("summaries", PROJECTION.key_attributes)

    @property
    def by_order(self) -> dict[str, dict[str, Any]]:
        return {key[0]: row for key, row in self.rows.items()}

    @property
    def puts(self) -> int:
        return self.writes


@pytest.fixture
def orders() -> Iterator[OrdersApplication]:
    app = OrdersApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    yield app
    app.close()


def place(app: OrdersApplication) -> Order:
    order = Order.place(
        customer_id="c-1",
        currency="EUR",
        payment_method="pm_card_visa",
        lines=[OrderLine("MUG", 2, 1250), OrderLine("TEA", 1, 400)],
    )
    app.save(order)
    return order


def run_lifecycle(app: OrdersApplication) -> tuple[UUID, list[Tip]]:
    """Place, reserve, pay and fulfil an order one commit at a time; return every tip."""
    order = place(app)
    tips = [app.recorder.select_tip(order.id)]
    for step in (
        lambda o: [
            o.record_line_result(line.sku, reserved=True, available=line.quantity)
            for line in o.lines
        ],
        lambda o: o.record_payment("pi_1"),
        lambda o: o.mark_fulfilled("sh_1"),
    ):
        loaded: Order = app.repository.get(order.id)
        step(loaded)
        app.save(loaded)
        tips.append(app.recorder.select_tip(order.id))
    assert all(tip is not None for tip in tips)
    return order.id, [tip for tip in tips if tip is not None]


class SummaryProjector:
    """The guarded projector bound to one table, as the tests below use it."""

    def __init__(self, app: OrdersApplication, store: FakeSummaryStore) -> None:
        def read_events(stream_id: str, after: int, up_to: int) -> Any:
            return app.recorder.select_events(stream_id, gt=after, lte=up_to)

        self.store = store
        self.projector = GuardedProjector(PROJECTION, app.mapper.to_domain_event, read_events)

    def project(self, tip: Tip) -> Any:
        return self.projector.project(self.store, tip)


def make_projector(app: OrdersApplication, store: FakeSummaryStore) -> SummaryProjector:
    return SummaryProjector(app, store)


def expected_row(app: OrdersApplication, order_id: UUID) -> dict[str, Any] | None:
    return fold(None, app.events.get(order_id))


def test_fold_placed_order_row(orders: OrdersApplication) -> None:
    order = place(orders)
    row = fold(None, orders.events.get(order.id))
    assert row is not None
    assert row["status"] == "PLACED"
    assert row["total"] == 2 * 1250 + 400
    assert row["version"] == 1
    assert row["lines"] == [
        {"sku": "MUG", "quantity": 2, "unit_price": 1250},
        {"sku": "TEA", "quantity": 1, "unit_price": 400},
    ]
    assert row["placed_key"].endswith(f"#{order.id}")


def test_fold_rejects_skipped_version(orders: OrdersApplication) -> None:
    order_id, _ = run_lifecycle(orders)
    events = list(orders.events.get(order_id))
    row = apply_event(None, events[0])
    with pytest.raises(ProjectionError, match="event version 3, row expects 2"):
        apply_event(row, events[2])


def test_projector_applies_lifecycle_in_order(orders: OrdersApplication) -> None:
    store = FakeSummaryStore()
    projector = make_projector(orders, store)
    order_id, tips = run_lifecycle(orders)

    for tip in tips:
        projector.project(tip)

    row = store.by_order[str(order_id)]
    assert row["status"] == "FULFILLED"
    assert row["shipment_id"] == "sh_1"
    assert row == expected_row(orders, order_id)


def test_projector_skips_duplicate_tip(orders: OrdersApplication) -> None:
    store = FakeSummaryStore()
    projector = make_projector(orders, store)
    _, tips = run_lifecycle(orders)
    projector.project(tips[0])
    projector.project(tips[1])
    puts_before = store.puts

    outcome = projector.project(tips[0])

    assert outcome.applied == 0
    assert outcome.skipped == 1
    assert store.puts == puts_before


def test_projector_fills_gap_from_store(orders: OrdersApplication) -> None:
    store = FakeSummaryStore()
    projector = make_projector(orders, store)
    order_id, tips = run_lifecycle(orders)
    projector.project(tips[0])

    outcome = projector.project(tips[3])

    # Everything between version 1 and the first event of the last commit.
    assert outcome.filled == tips[3].first_version - 2
    assert store.by_order[str(order_id)] == expected_row(orders, order_id)


def test_projector_late_tip_after_gap_fill_is_noop(orders: OrdersApplication) -> None:
    store = FakeSummaryStore()
    projector = make_projector(orders, store)
    order_id, tips = run_lifecycle(orders)
    projector.project(tips[3])

    outcome = projector.project(tips[1])

    assert outcome.applied == 0
    assert store.by_order[str(order_id)]["version"] == tips[3].version


def test_projector_concurrent_workers_converge(orders: OrdersApplication) -> None:
    store = FakeSummaryStore()
    projector = make_projector(orders, store)
    order_id, tips = run_lifecycle(orders)
    barrier = threading.Barrier(len(tips) * 2)
    errors: list[BaseException] = []

    def deliver(tip: Tip) -> None:
        barrier.wait()
        try:
            projector.project(tip)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(tip,)) for tip in tips * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == []
    assert store.by_order[str(order_id)] == expected_row(orders, order_id)


@settings(max_examples=60, deadline=None)
@given(
    deliveries=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12),
)
def test_projector_any_delivery_order_converges(deliveries: list[int]) -> None:
    """Whatever order and repetition tips arrive in, the row ends as the fold of the history
    up to the newest tip delivered."""
    app = OrdersApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    store = FakeSummaryStore()
    projector = make_projector(app, store)
    order_id, tips = run_lifecycle(app)

    for index in deliveries:
        projector.project(tips[index])

    newest = max(deliveries)
    history = list(app.events.get(order_id))[: tips[newest].version]
    assert store.by_order[str(order_id)] == fold(None, history)
