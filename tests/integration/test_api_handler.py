"""The API handler in-process against DynamoDB Local: contract, validation, idempotency."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import pytest

from domain.inventory import InventoryItem
from domain.order import Order
from tests.lambda_support import (
    FakeLambdaContext,
    api_event,
    guard_calls,
    load_handler_module,
    response_header,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb

VALID_ORDER = {
    "customer_id": "c-1",
    "currency": "USD",
    "payment_method": "pm_card_visa",
    "lines": [
        {"sku": "MUG-RED", "quantity": 2, "unit_price": 1250},
        {"sku": "TEA-GREEN", "quantity": 3, "unit_price": 499},
    ],
}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]) -> ModuleType:
    return load_handler_module("lambdas.api", monkeypatch, tables)


@pytest.fixture
def projector(
    monkeypatch: pytest.MonkeyPatch, tables: dict[str, str], api: ModuleType
) -> ModuleType:
    return load_handler_module("lambdas.projector", monkeypatch, tables)


def call(api: ModuleType, method: str, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, Any]]:
    response = api.handler(api_event(method, path, **kwargs), FakeLambdaContext())
    return response["statusCode"], json.loads(response["body"]), response


def stored_item_count(client: DynamoDBClient, table: str) -> int:
    return client.scan(TableName=table, Select="COUNT")["Count"]


def project_everything(api: ModuleType, projector: ModuleType, order_ids: list[str]) -> None:
    """Apply each stream's tip, as the stream would deliver it."""
    for order_id in order_ids:
        tip = api.services.orders.recorder.select_tip(order_id)
        projector.project_tip(tip)


def change_order(api: ModuleType, order_id: str, change: Callable[[Order], Any]) -> None:
    """Run a command on the order as the saga or an operator would, one commit."""
    orders = api.services.orders
    order: Order = orders.repository.get(UUID(order_id))
    change(order)
    orders.save(order)


def place(api: ModuleType, **overrides: Any) -> str:
    status, placed, _ = call(api, "POST", "/orders", body={**VALID_ORDER, **overrides})
    assert status == 202
    order_id: str = placed["order_id"]
    return order_id


def list_all(api: ModuleType, path: str, query: dict[str, str]) -> list[str]:
    """Follow next_cursor to the end; return the order ids in the order listed."""
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        page_query = {**query, **({"cursor": cursor} if cursor else {})}
        status, page, _ = call(api, "GET", path, query=page_query)
        assert status == 200, page
        seen.extend(order["order_id"] for order in page["orders"])
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("pagination did not end within 20 pages")


def test_place_order_returns_202_and_location(api: ModuleType) -> None:
    status, body, response = call(api, "POST", "/orders", body=VALID_ORDER)
    assert status == 202
    assert body["status"] == "PLACED"
    assert response_header(response, "Location") == f"/orders/{body['order_id']}"


def test_place_order_records_computed_total(api: ModuleType) -> None:
    _, placed, _ = call(api, "POST", "/orders", body={**VALID_ORDER, "total": 1})
    # An unknown field such as a client-side total is rejected, never trusted.
    assert "errors" in placed

    _, placed, _ = call(api, "POST", "/orders", body=VALID_ORDER)
    status, history, _ = call(api, "GET", f"/orders/{placed['order_id']}/events")
    assert status == 200
    assert history["events"][0]["data"]["total"] == 2 * 1250 + 3 * 499


def test_order_events_show_placed_at_version_1(api: ModuleType) -> None:
    _, placed, _ = call(api, "POST", "/orders", body=VALID_ORDER)
    _, history, _ = call(api, "GET", f"/orders/{placed['order_id']}/events")
    (event,) = history["events"]
    assert event["version"] == 1
    assert event["type"] == "OrderPlaced"
    assert event["occurred_at"].endswith("Z")
    assert event["data"]["payment_method"] == "[redacted]"


INVALID_BODIES = {
    "missing fields": {"customer_id": "c-1"},
    "zero quantity": {**VALID_ORDER, "lines": [{"sku": "A", "quantity": 0, "unit_price": 1}]},
    "negative quantity": {
        **VALID_ORDER,
        "lines": [{"sku": "A", "quantity": -2, "unit_price": 1}],
    },
    "fractional quantity": {
        **VALID_ORDER,
        "lines": [{"sku": "A", "quantity": 1.5, "unit_price": 1}],
    },
    "negative price": {**VALID_ORDER, "lines": [{"sku": "A", "quantity": 1, "unit_price": -1}]},
    "no lines": {**VALID_ORDER, "lines": []},
    "101 lines": {
        **VALID_ORDER,
        "lines": [{"sku": f"SKU-{i}", "quantity": 1, "unit_price": 1} for i in range(101)],
    },
    "unknown currency": {**VALID_ORDER, "currency": "XYZ"},
    "lower-case currency": {**VALID_ORDER, "currency": "usd"},
    "duplicate sku": {
        **VALID_ORDER,
        "lines": [
            {"sku": "A", "quantity": 1, "unit_price": 1},
            {"sku": "A", "quantity": 2, "unit_price": 1},
        ],
    },
    "overlong customer id": {**VALID_ORDER, "customer_id": "c" * 129},
    "body is a list": [VALID_ORDER],
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
def test_invalid_order_is_422_with_field_errors(
    api: ModuleType, dynamodb_client: DynamoDBClient, tables: dict[str, str], body: Any
) -> None:
    status, answer, _ = call(api, "POST", "/orders", body=body)
    assert status == 422
    assert answer["errors"]
    assert all({"loc", "msg"} <= set(error) for error in answer["errors"])
    assert stored_item_count(dynamodb_client, tables["EventsTable"]) == 0


def test_malformed_json_is_400(
    api: ModuleType, dynamodb_client: DynamoDBClient, tables: dict[str, str]
) -> None:
    status, answer, _ = call(api, "POST", "/orders", raw_body='{"customer_id": ')
    assert status == 400
    assert answer["errors"][0]["loc"] == ["body"]
    assert stored_item_count(dynamodb_client, tables["EventsTable"]) == 0


def test_oversized_body_is_413(api: ModuleType) -> None:
    status, _, _ = call(api, "POST", "/orders", raw_body="x" * (api.MAX_BODY_BYTES + 1))
    assert status == 413


def test_idempotency_key_returns_first_order(
    api: ModuleType, dynamodb_client: DynamoDBClient, tables: dict[str, str]
) -> None:
    headers = {"Idempotency-Key": "checkout-42"}
    _, first, _ = call(api, "POST", "/orders", body=VALID_ORDER, headers=headers)
    items_after_first = stored_item_count(dynamodb_client, tables["EventsTable"])

    status, second, _ = call(api, "POST", "/orders", body=VALID_ORDER, headers=headers)

    assert status == 202
    assert second["order_id"] == first["order_id"]
    assert stored_item_count(dynamodb_client, tables["EventsTable"]) == items_after_first


def test_idempotency_key_with_other_body_is_422(api: ModuleType) -> None:
    headers = {"Idempotency-Key": "checkout-43"}
    call(api, "POST", "/orders", body=VALID_ORDER, headers=headers)

    status, answer, _ = call(
        api, "POST", "/orders", body={**VALID_ORDER, "currency": "EUR"}, headers=headers
    )

    assert status == 422
    assert answer["errors"][0]["loc"] == ["header", "Idempotency-Key"]


def test_unknown_order_is_404(api: ModuleType) -> None:
    status, answer, _ = call(api, "GET", "/orders/7f3c0000-0000-4000-8000-000000000000")
    assert status == 404
    assert "not found" in answer["message"]


def test_unknown_order_events_is_404(api: ModuleType) -> None:
    status, _, _ = call(api, "GET", "/orders/not-a-uuid/events")
    assert status == 404


def test_get_order_after_projection(api: ModuleType, projector: ModuleType) -> None:
    _, placed, _ = call(api, "POST", "/orders", body=VALID_ORDER)
    project_everything(api, projector, [placed["order_id"]])

    status, order, _ = call(api, "GET", f"/orders/{placed['order_id']}")

    assert status == 200
    assert order["status"] == "PLACED"
    assert order["total"] == 2 * 1250 + 3 * 499
    assert order["lines"] == VALID_ORDER["lines"]
    assert order["version"] == 1
    assert "placed_key" not in order


def test_customer_orders_paginate_newest_first(api: ModuleType, projector: ModuleType) -> None:
    order_ids = [call(api, "POST", "/orders", body=VALID_ORDER)[1]["order_id"] for _ in range(5)]
    project_everything(api, projector, order_ids)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        status, page, _ = call(api, "GET", "/customers/c-1/orders", query=query)
        assert status == 200
        seen.extend(order["order_id"] for order in page["orders"])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(order_ids))


def test_cursor_of_other_customer_is_422(api: ModuleType, projector: ModuleType) -> None:
    order_ids = [call(api, "POST", "/orders", body=VALID_ORDER)[1]["order_id"] for _ in range(2)]
    project_everything(api, projector, order_ids)
    _, page, _ = call(api, "GET", "/customers/c-1/orders", query={"limit": "1"})

    status, answer, _ = call(
        api, "GET", "/customers/c-2/orders", query={"cursor": page["next_cursor"]}
    )

    assert status == 422
    assert answer["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize("limit", ["0", "101", "ten"])
def test_bad_limit_is_422(api: ModuleType, limit: str) -> None:
    status, answer, _ = call(api, "GET", "/customers/c-1/orders", query={"limit": limit})
    assert status == 422
    assert answer["errors"][0]["loc"] == ["query", "limit"]


def test_health_is_200(api: ModuleType) -> None:
    status, answer, _ = call(api, "GET", "/health")
    assert status == 200
    assert answer["status"] == "ok"


# Orders by status and orders needing attention -------------------------------------------


def test_orders_by_status_paginate_newest_first(api: ModuleType, projector: ModuleType) -> None:
    order_ids = [place(api) for _ in range(5)]
    change_order(api, order_ids[1], lambda order: order.fail("out of stock"))
    change_order(api, order_ids[3], lambda order: order.fail("declined"))
    project_everything(api, projector, order_ids)

    assert list_all(api, "/orders", {"status": "FAILED", "limit": "1"}) == [
        order_ids[3],
        order_ids[1],
    ]


def test_order_leaves_old_status_list(api: ModuleType, projector: ModuleType) -> None:
    order_ids = [place(api) for _ in range(3)]
    change_order(api, order_ids[0], lambda order: order.cancel("changed my mind"))
    project_everything(api, projector, order_ids)

    assert list_all(api, "/orders", {"status": "PLACED", "limit": "2"}) == [
        order_ids[2],
        order_ids[1],
    ]


def test_orders_needing_attention_oldest_flag_first(api: ModuleType, projector: ModuleType) -> None:
    order_ids = [place(api) for _ in range(4)]
    for order_id in (order_ids[2], order_ids[0], order_ids[3]):
        change_order(api, order_id, lambda order: order.require_attention("refund stuck"))
    change_order(api, order_ids[3], lambda order: order.resolve_attention())
    project_everything(api, projector, order_ids)

    listed = list_all(api, "/orders", {"needs_attention": "true", "limit": "1"})

    assert listed == [order_ids[2], order_ids[0]]


def test_status_cursor_is_not_accepted_for_another_status(
    api: ModuleType, projector: ModuleType
) -> None:
    order_ids = [place(api) for _ in range(2)]
    project_everything(api, projector, order_ids)
    _, page, _ = call(api, "GET", "/orders", query={"status": "PLACED", "limit": "1"})

    status, answer, _ = call(
        api, "GET", "/orders", query={"status": "FAILED", "cursor": page["next_cursor"]}
    )

    assert status == 422
    assert answer["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({}, ["query", "status"]),
        ({"status": "PLACED", "needs_attention": "true"}, ["query", "needs_attention"]),
        ({"needs_attention": "false"}, ["query", "needs_attention"]),
        ({"needs_attention": "maybe"}, ["query", "needs_attention"]),
        ({"status": "LOST"}, ["query", "status"]),
        ({"status": "PLACED", "limit": "0"}, ["query", "limit"]),
        ({"status": "PLACED", "cursor": "not-a-cursor"}, ["query", "cursor"]),
    ],
    ids=[
        "no filter",
        "both filters",
        "attention false",
        "attention not a boolean",
        "unknown status",
        "limit 0",
        "forged cursor",
    ],
)
def test_bad_order_list_query_is_422(
    api: ModuleType, query: dict[str, str], loc: list[str]
) -> None:
    status, answer, _ = call(api, "GET", "/orders", query=query)
    assert status == 422
    assert answer["errors"][0]["loc"] == loc


# Customer stats --------------------------------------------------------------------------


def test_customer_stats_sum_paid_orders(api: ModuleType, projector: ModuleType) -> None:
    paid, unpaid, euro = place(api), place(api), place(api, currency="EUR")
    for order_id in (paid, euro):
        change_order(
            api,
            order_id,
            lambda order: [
                order.record_line_result(line.sku, reserved=True, available=line.quantity)
                for line in order.lines
            ],
        )
        change_order(api, order_id, lambda order: order.record_payment("pi_1"))
    project_everything(api, projector, [paid, unpaid, euro])
    _, newest, _ = call(api, "GET", f"/orders/{euro}")

    status, stats, _ = call(api, "GET", "/customers/c-1/stats")

    assert status == 200
    assert stats == {
        "customer_id": "c-1",
        "order_count": 3,
        "total_spent": {"EUR": 2 * 1250 + 3 * 499, "USD": 2 * 1250 + 3 * 499},
        "last_order_at": newest["placed_at"],
    }


def test_stats_of_unknown_customer_is_404(api: ModuleType) -> None:
    status, answer, _ = call(api, "GET", "/customers/c-nobody/stats")
    assert status == 404
    assert "has no orders" in answer["message"]


def test_stats_of_invalid_customer_id_is_422(api: ModuleType) -> None:
    status, answer, _ = call(api, "GET", "/customers/" + "c" * 129 + "/stats")
    assert status == 422
    assert answer["errors"][0]["loc"] == ["path", "customer_id"]


# Inventory levels ------------------------------------------------------------------------


def test_stock_is_read_from_inventory_levels(api: ModuleType, projector: ModuleType) -> None:
    status, level, _ = call(api, "POST", "/inventory/MUG-RED/restock", body={"quantity": 7})
    assert status == 200
    item_id = str(InventoryItem.create_id("MUG-RED"))
    project_everything(api, projector, [item_id])

    status, stock, _ = call(api, "GET", "/inventory/MUG-RED")

    assert status == 200
    assert stock == level


def test_stock_not_projected_yet_is_404(api: ModuleType) -> None:
    call(api, "POST", "/inventory/TEA-GREEN/restock", body={"quantity": 1})
    status, answer, _ = call(api, "GET", "/inventory/TEA-GREEN")
    assert status == 404
    assert "TEA-GREEN" in answer["message"]


# The calls against the function's role in the template -----------------------------------


def test_api_calls_only_what_its_role_allows(
    monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]
) -> None:
    projector = load_handler_module("lambdas.projector", monkeypatch, tables)  # not checked
    guard = guard_calls("ApiFunction", monkeypatch, tables)
    api = load_handler_module("lambdas.api", monkeypatch, tables)
    call(api, "POST", "/inventory/MUG-RED/restock", body={"quantity": 5})
    order_id = place(api)
    project_everything(api, projector, [order_id, str(InventoryItem.create_id("MUG-RED"))])
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/orders", {"body": VALID_ORDER, "headers": {"Idempotency-Key": "key-1"}}),
        ("GET", f"/orders/{order_id}", {}),
        ("GET", f"/orders/{order_id}/events", {}),
        ("GET", "/customers/c-1/orders", {"query": {"limit": "1"}}),
        ("GET", "/customers/c-1/stats", {}),
        ("GET", "/orders", {"query": {"status": "PLACED"}}),
        ("GET", "/orders", {"query": {"needs_attention": "true"}}),
        ("GET", "/inventory/MUG-RED", {}),
        ("PUT", "/inventory/TEA-GREEN", {"body": {"on_hand": 3}}),
        ("POST", f"/orders/{order_id}/cancel", {}),
    ]
    for method, path, options in requests:
        status, answer, _ = call(api, method, path, **options)
        assert status < 300, (method, path, status, answer)

    assert sorted({str(permission) for permission in guard.denied}) == []
