"""The API handler in-process against DynamoDB Local: contract, validation, idempotency."""

from __future__ import annotations

import json
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from tests.lambda_support import FakeLambdaContext, api_event, load_handler_module, response_header

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
    """Apply each order's tip, as the stream would deliver it."""
    for order_id in order_ids:
        tip = api.services.orders.recorder.select_tip(order_id)
        projector.projector.project(tip)


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
