"""The read models' pure folds, and the guarded projector on a summing read model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from adapters.memory_read_models import MemoryProjectionTable
from application.orders import OrdersApplication
from domain.inventory import InventoryItem
from domain.order import Order, OrderLine
from projections import customer_stats, inventory_levels, order_summary
from projections.catalog import UnknownReadModelError, projections_named
from projections.projection import ProjectionError
from projections.projector import GuardedProjector, MissingEventsError
from projections.replay import replay


@pytest.fixture
def app() -> Iterator[OrdersApplication]:
    orders = OrdersApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    yield orders
    orders.close()


def place(app: OrdersApplication, customer: str = "c-1", currency: str = "USD") -> Order:
    order = Order.place(
        customer_id=customer,
        currency=currency,
        payment_method="pm_card_visa",
        lines=[OrderLine("MUG", 2, 1250)],
    )
    app.save(order)
    return order


def change(app: OrdersApplication, order: Order, *steps: str) -> Order:
    """Load the order, run each step as its own commit, return the last state."""
    for step in steps:
        loaded: Order = app.repository.get(order.id)
        if step == "reserve":
            loaded.record_line_result("MUG", reserved=True, available=2)
        elif step == "pay":
            loaded.record_payment("pi_1")
        elif step == "fulfil":
            loaded.mark_fulfilled("sh_1")
        elif step == "cancel":
            loaded.cancel("changed my mind")
        elif step == "flag":
            loaded.require_attention("refund stuck")
        elif step == "resolve":
            loaded.resolve_attention()
        app.save(loaded)
    final: Order = app.repository.get(order.id)
    return final


def events(app: OrdersApplication, order: Order) -> list[Any]:
    return list(app.events.get(order.id))


def make_projector(app: OrdersApplication, projection: Any) -> GuardedProjector:
    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return app.recorder.select_events(stream_id, gt=after, lte=up_to)

    return GuardedProjector(projection, app.mapper.to_domain_event, read_events)


def stats_table() -> MemoryProjectionTable:
    return MemoryProjectionTable("stats", customer_stats.PROJECTION.key_attributes)


# Order summary: the attention index ---------------------------------------------------


def test_flagged_order_enters_attention_index(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "flag")
    row = order_summary.PROJECTION.fold(None, events(app, order))
    assert row[order_summary.ATTENTION_FLAG] == order_summary.FLAGGED


def test_resolved_order_leaves_attention_index(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "flag", "resolve")
    row = order_summary.PROJECTION.fold(None, events(app, order))
    assert order_summary.ATTENTION_FLAG not in row
    assert order_summary.ATTENTION_KEY not in row


def test_attention_key_orders_by_flag_time(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "flag")
    flagged = events(app, order)[-1]
    row = order_summary.PROJECTION.fold(None, events(app, order))
    assert row[order_summary.ATTENTION_KEY].endswith(f"#{order.id}")
    assert row[order_summary.ATTENTION_KEY] > row["placed_at"]
    assert flagged.originator_version == row["version"]


# Customer stats --------------------------------------------------------------------


def test_placed_order_counts_but_spends_nothing(app: OrdersApplication) -> None:
    order = place(app)
    row = customer_stats.PROJECTION.fold(None, events(app, order))
    (contribution,) = customer_stats.contributions(None, row)
    assert contribution.add == {"order_count": 1, "spent_USD": 0}


def test_captured_payment_is_spent(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "reserve", "pay")
    history = events(app, order)
    before = customer_stats.PROJECTION.fold(None, history[:-1])
    after = customer_stats.PROJECTION.fold(before, history[-1:])
    (contribution,) = customer_stats.contributions(before, after)
    assert contribution.add == {"spent_USD": 2500}


def test_cancelled_paid_order_is_no_longer_spent(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "reserve", "pay", "cancel")
    history = events(app, order)
    before = customer_stats.PROJECTION.fold(None, history[:-1])
    after = customer_stats.PROJECTION.fold(before, history[-1:])
    (contribution,) = customer_stats.contributions(before, after)
    assert contribution.add == {"spent_USD": -2500}


def test_event_that_changes_no_sum_contributes_nothing(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "flag")
    history = events(app, order)
    before = customer_stats.PROJECTION.fold(None, history[:-1])
    after = customer_stats.PROJECTION.fold(before, history[-1:])
    assert customer_stats.contributions(before, after) == ()


def test_stats_fold_rejects_skipped_version(app: OrdersApplication) -> None:
    order = place(app)
    change(app, order, "reserve", "pay")
    history = events(app, order)
    with pytest.raises(ProjectionError, match="row expects 2"):
        customer_stats.PROJECTION.fold(None, [history[0], history[2]])


def test_stats_view_lists_spending_per_currency() -> None:
    sums = {
        "pk": "customer#c-1",
        "customer_id": "c-1",
        "order_count": 3,
        "spent_EUR": 10,
        "spent_USD": 25,
    }
    view = customer_stats.stats_view(sums, "2026-12-01T00:00:00.000000Z")
    assert view == {
        "customer_id": "c-1",
        "order_count": 3,
        "total_spent": {"EUR": 10, "USD": 25},
        "last_order_at": "2026-12-01T00:00:00.000000Z",
    }


def test_projector_adds_to_customer_sums_once_per_commit(app: OrdersApplication) -> None:
    table = stats_table()
    projector = make_projector(app, customer_stats.PROJECTION)
    first = place(app)
    second = place(app, currency="EUR")
    change(app, first, "reserve", "pay")
    for order in (first, second):
        tip = app.recorder.select_tip(order.id)
        assert tip is not None
        projector.project(table, tip)
        projector.project(table, tip)  # a duplicate delivery adds nothing
    sums = table.get_row(customer_stats.stats_key("c-1"))
    assert sums == {
        "pk": "customer#c-1",
        "customer_id": "c-1",
        "order_count": 2,
        "spent_USD": 2500,
        "spent_EUR": 0,
    }


def test_projector_fills_gap_before_adding(app: OrdersApplication) -> None:
    table = stats_table()
    projector = make_projector(app, customer_stats.PROJECTION)
    order = place(app)
    change(app, order, "reserve", "pay", "fulfil")
    tip = app.recorder.select_tip(order.id)
    assert tip is not None

    outcome = projector.project(table, tip)

    assert outcome.filled == tip.first_version - 1
    assert (
        table.get_row(customer_stats.stats_key("c-1"))
        == replay(customer_stats.PROJECTION, [(str(order.id), events(app, order))])[
            ("customer#c-1",)
        ]
    )


def test_projector_reports_events_missing_from_store(app: OrdersApplication) -> None:
    table = stats_table()
    order = place(app)
    change(app, order, "reserve", "pay")
    tip = app.recorder.select_tip(order.id)
    assert tip is not None

    def read_nothing(stream_id: str, after: int, up_to: int) -> Any:
        return []

    projector = GuardedProjector(
        customer_stats.PROJECTION, app.mapper.to_domain_event, read_nothing
    )
    with pytest.raises(MissingEventsError, match=rf"versions 1\.\.{tip.first_version - 1} "):
        projector.project(table, tip)


# Inventory levels ------------------------------------------------------------------


def test_inventory_levels_follow_reservations_and_shipments(app: OrdersApplication) -> None:
    item = InventoryItem.register("MUG")
    item.add_stock(10)
    item.reserve("o-1", 3)
    item.reserve("o-2", 2)
    item.release("o-2")
    item.ship("o-1")
    app.save(item)
    row = inventory_levels.PROJECTION.fold(None, app.events.get(item.id))
    assert inventory_levels.stock_view(row) == {
        "sku": "MUG",
        "on_hand": 7,
        "reserved": 0,
        "available": 7,
        "version": 6,
    }


def test_inventory_level_matches_aggregate_after_count(app: OrdersApplication) -> None:
    item = InventoryItem.register("TEA")
    item.add_stock(5)
    item.reserve("o-1", 2)
    item.count_stock(4)
    app.save(item)
    row = inventory_levels.PROJECTION.fold(None, app.events.get(item.id))
    assert (row["on_hand"], row["reserved"], row["available"]) == (
        item.on_hand,
        item.reserved,
        item.available,
    )


def test_inventory_row_is_keyed_by_stream() -> None:
    assert inventory_levels.item_key("MUG") == {"item_id": str(InventoryItem.create_id("MUG"))}


# Catalog ---------------------------------------------------------------------------


def test_view_name_selects_its_host() -> None:
    assert [p.name for p in projections_named(["orders_by_status"])] == ["order_summary"]


def test_no_names_select_every_projection() -> None:
    assert [p.name for p in projections_named([])] == [
        "order_summary",
        "customer_stats",
        "inventory_levels",
    ]


def test_unknown_read_model_is_refused() -> None:
    with pytest.raises(UnknownReadModelError, match="no read model is called 'orders_by_colour'"):
        projections_named(["orders_by_colour"])
