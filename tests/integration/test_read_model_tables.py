"""Each read model's table on DynamoDB Local: the version guard, gap filling, all-or-nothing
sums, and the rebuild's bulk creates."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from adapters.composition import RebuildServices, build_rebuild_services
from adapters.projection_tables import DynamoDBProjectionTable
from application.orders import OrdersApplication
from application.ports import StaleRowError
from domain.inventory import InventoryItem
from domain.order import Order, OrderLine
from projections import customer_stats, inventory_levels, order_summary
from projections.projection import Projection
from projections.projector import GuardedProjector
from projections.replay import replay
from tests.botocore_calls import recorded_calls
from tests.lambda_support import handler_environment

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb


@pytest.fixture
def services(tables: dict[str, str]) -> Iterator[RebuildServices]:
    built = build_rebuild_services(handler_environment(tables))
    yield built
    built.orders.close()


@pytest.fixture
def app(services: RebuildServices) -> OrdersApplication:
    return services.orders


def open_table(services: RebuildServices, projection: Projection) -> DynamoDBProjectionTable:
    return services.read_side.open_table(
        projection, services.read_side.base_tables[projection.name]
    )


def projector(app: OrdersApplication, projection: Projection) -> GuardedProjector:
    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return app.recorder.select_events(stream_id, gt=after, lte=up_to)

    return GuardedProjector(projection, app.mapper.to_domain_event, read_events)


def place(app: OrdersApplication, customer: str = "c-1", *, pay: bool = False) -> Order:
    order = Order.place(
        customer_id=customer,
        currency="USD",
        payment_method="pm_card_visa",
        lines=[OrderLine("MUG", 2, 1250)],
    )
    app.save(order)
    if pay:
        loaded: Order = app.repository.get(order.id)
        loaded.record_line_result("MUG", reserved=True, available=2)
        app.save(loaded)
        loaded = app.repository.get(order.id)
        loaded.record_payment("pi_1")
        app.save(loaded)
    return order


def tip(app: OrdersApplication, stream_id: Any) -> Any:
    found = app.recorder.select_tip(stream_id)
    assert found is not None
    return found


# Order summary -------------------------------------------------------------------------


def test_summary_write_at_wrong_version_is_refused(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, order_summary.PROJECTION)
    order = place(app)
    projector(app, order_summary.PROJECTION).project(table, tip(app, order.id))
    key = order_summary.PROJECTION.row_key(str(order.id))
    row = table.get_row(key)
    assert row is not None

    with pytest.raises(StaleRowError):
        table.apply(key, {**row, "status": "FAILED", "version": 3}, expected_version=2)
    assert table.get_row(key) == row


def test_summary_gap_is_filled_from_the_store(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, order_summary.PROJECTION)
    order = place(app, pay=True)

    outcome = projector(app, order_summary.PROJECTION).project(table, tip(app, order.id))

    assert outcome.filled == tip(app, order.id).first_version - 1
    assert table.get_row({"order_id": str(order.id)}) == order_summary.fold(
        None, app.events.get(order.id)
    )


def test_summary_duplicate_tip_writes_nothing(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, order_summary.PROJECTION)
    order = place(app)
    guarded = projector(app, order_summary.PROJECTION)
    guarded.project(table, tip(app, order.id))

    outcome = guarded.project(table, tip(app, order.id))

    assert (outcome.applied, outcome.skipped) == (0, 1)


# Customer stats ------------------------------------------------------------------------


def test_stats_guard_row_and_sums_change_together(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, customer_stats.PROJECTION)
    guarded = projector(app, customer_stats.PROJECTION)
    orders = [place(app, pay=True), place(app), place(app, "c-2", pay=True)]
    for order in orders:
        guarded.project(table, tip(app, order.id))
        guarded.project(table, tip(app, order.id))

    expected = replay(
        customer_stats.PROJECTION, [(str(o.id), list(app.events.get(o.id))) for o in orders]
    )
    stored = {key: table.get_row({"pk": key[0]}) for key in expected}
    assert stored == expected


def test_failed_sum_update_leaves_guard_row_unwritten(
    app: OrdersApplication, services: RebuildServices, dynamodb_client: DynamoDBClient
) -> None:
    table = open_table(services, customer_stats.PROJECTION)
    # A sums row whose counter is text: adding to it fails inside the transaction.
    dynamodb_client.put_item(
        TableName=table.name,
        Item={"pk": {"S": "customer#c-1"}, "order_count": {"S": "not a number"}},
    )
    order = place(app)

    with pytest.raises(ClientError, match="incorrect data type"):
        projector(app, customer_stats.PROJECTION).project(table, tip(app, order.id))
    assert table.get_row(customer_stats.order_key(str(order.id))) is None


def test_concurrent_orders_of_one_customer_all_count(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, customer_stats.PROJECTION)
    guarded = projector(app, customer_stats.PROJECTION)
    orders = [place(app, pay=True) for _ in range(6)]
    tips = [tip(app, order.id) for order in orders]
    barrier = threading.Barrier(len(tips) * 2)
    errors: list[BaseException] = []

    def deliver(commit: Any) -> None:
        barrier.wait()
        try:
            guarded.project(table, commit)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=deliver, args=(t,)) for t in tips * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    sums = table.get_row(customer_stats.stats_key("c-1"))
    assert sums == {
        "pk": "customer#c-1",
        "customer_id": "c-1",
        "order_count": 6,
        "spent_USD": 6 * 2500,
    }


# Inventory levels ----------------------------------------------------------------------


def test_inventory_level_follows_commits(app: OrdersApplication, services: RebuildServices) -> None:
    table = open_table(services, inventory_levels.PROJECTION)
    guarded = projector(app, inventory_levels.PROJECTION)
    item = InventoryItem.register("MUG")
    item.add_stock(5)
    app.save(item)
    guarded.project(table, tip(app, item.id))
    loaded: InventoryItem = app.repository.get(item.id)
    loaded.reserve("o-1", 2)
    app.save(loaded)
    guarded.project(table, tip(app, item.id))

    row = table.get_row(inventory_levels.item_key("MUG"))

    assert row is not None
    assert inventory_levels.stock_view(row) == {
        "sku": "MUG",
        "on_hand": 5,
        "reserved": 2,
        "available": 3,
        "version": 3,
    }


def test_inventory_write_at_wrong_version_is_refused(
    app: OrdersApplication, services: RebuildServices
) -> None:
    table = open_table(services, inventory_levels.PROJECTION)
    item = InventoryItem.register("TEA")
    app.save(item)
    projector(app, inventory_levels.PROJECTION).project(table, tip(app, item.id))
    key = inventory_levels.item_key("TEA")
    row = table.get_row(key)
    assert row is not None

    with pytest.raises(StaleRowError):
        table.apply(key, {**row, "on_hand": 99, "version": 2}, expected_version=0)


# Bulk loads ------------------------------------------------------------------------------


def summary_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"o-{index}",
            "customer_id": f"c-{index % 7}",
            "status": "PLACED",
            "version": 1,
            "placed_key": f"2026-12-01T00:00:00.000000Z#o-{index}",
        }
        for index in range(count)
    ]


def test_bulk_load_writes_every_row(services: RebuildServices) -> None:
    table = open_table(services, order_summary.PROJECTION)

    table.put_rows(summary_rows(60))

    stored = [table.get_row({"order_id": f"o-{index}"}) for index in range(60)]
    assert stored == summary_rows(60)


def test_bulk_load_replaces_rows_of_an_earlier_attempt(services: RebuildServices) -> None:
    table = open_table(services, order_summary.PROJECTION)
    table.put_rows([{**row, "status": "FAILED", "version": 9} for row in summary_rows(30)])

    table.put_rows(summary_rows(30))

    assert table.get_row({"order_id": "o-29"}) == summary_rows(30)[29]


def test_bulk_load_uses_batches_of_25(services: RebuildServices) -> None:
    table = open_table(services, order_summary.PROJECTION)

    with recorded_calls(table.client) as calls:
        table.put_rows(summary_rows(60))

    assert calls == ["BatchWriteItem"] * 3
