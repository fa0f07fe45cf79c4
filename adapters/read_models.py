"""The queries the API runs on the read models, on whichever table generation is live.

Lists page through an index with ``Limit`` and ``ExclusiveStartKey``. The cursor a
page returns is that key plus the list it belongs to (the index and its partition
value), base64-encoded. Only the same list accepts the cursor, so it cannot start
another customer's or another status's listing part-way.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapters.dynamodb_rows import from_item, to_key
from adapters.projection_control import ProjectionDirectory
from application.ports import InvalidCursorError, Page
from projections import (
    customer_orders,
    customer_stats,
    inventory_levels,
    needs_attention,
    order_summary,
    orders_by_status,
)
from projections.projection import IndexView

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

MAX_CURSOR_LENGTH = 2048
MAX_PAGE_SIZE = 100


def encode_cursor(view: IndexView, partition: str, last_key: Mapping[str, Any]) -> str:
    plain = {
        "v": view.name,
        "p": partition,
        "k": {key: value["S"] for key, value in last_key.items()},
    }
    raw = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, view: IndexView, partition: str, table_key: str) -> dict[str, Any]:
    """Return the ``ExclusiveStartKey`` in a cursor issued for this very list."""
    invalid = InvalidCursorError("cursor is invalid: pass the next_cursor of the previous page")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        plain = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    expected_keys = {table_key, view.partition_attribute, view.sort_attribute}
    if (
        not isinstance(plain, dict)
        or set(plain) != {"v", "p", "k"}
        or plain["v"] != view.name
        or plain["p"] != partition
        or not isinstance(plain["k"], dict)
        or set(plain["k"]) != expected_keys
        or not all(isinstance(value, str) for value in plain["k"].values())
        or plain["k"][view.partition_attribute] != partition
    ):
        raise invalid
    return {key: {"S": value} for key, value in plain["k"].items()}


class DynamoDBReadModels:
    """Implements the ``OrderQueries`` port."""

    def __init__(self, client: DynamoDBClient, directory: ProjectionDirectory) -> None:
        self.client = client
        self.directory = directory

    def _live(self, projection: str) -> str:
        return self.directory.live_table(projection)

    # Orders -------------------------------------------------------------------------

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self._live(order_summary.NAME), Key=to_key({"order_id": order_id})
        )
        item = response.get("Item")
        return order_summary.public_view(from_item(item)) if item else None

    def list_customer_orders(self, customer_id: str, limit: int, cursor: str | None) -> Page:
        return self._list(customer_orders.VIEW, customer_id, limit, cursor)

    def list_orders_by_status(self, status: str, limit: int, cursor: str | None) -> Page:
        return self._list(orders_by_status.VIEW, status, limit, cursor)

    def list_orders_needing_attention(self, limit: int, cursor: str | None) -> Page:
        return self._list(needs_attention.VIEW, needs_attention.PARTITION_VALUE, limit, cursor)

    def _list(self, view: IndexView, partition: str, limit: int, cursor: str | None) -> Page:
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}, not {limit}")
        request: dict[str, Any] = {
            "TableName": self._live(view.host),
            "IndexName": view.index_name,
            "KeyConditionExpression": "#partition = :partition",
            "ExpressionAttributeNames": {"#partition": view.partition_attribute},
            "ExpressionAttributeValues": {":partition": {"S": partition}},
            "ScanIndexForward": not view.newest_first,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = decode_cursor(cursor, view, partition, "order_id")
        response = self.client.query(**request)
        last_key = response.get("LastEvaluatedKey")
        return Page(
            items=[order_summary.public_view(from_item(item)) for item in response["Items"]],
            next_cursor=encode_cursor(view, partition, last_key) if last_key else None,
        )

    # Customers ----------------------------------------------------------------------

    def get_customer_stats(self, customer_id: str) -> dict[str, Any] | None:
        table = self._live(customer_stats.NAME)
        response = self.client.get_item(
            TableName=table, Key=to_key(customer_stats.stats_key(customer_id))
        )
        item = response.get("Item")
        if not item:
            return None
        newest = self.client.query(
            TableName=table,
            IndexName=customer_stats.LAST_ORDER_INDEX,
            KeyConditionExpression="#customer = :customer",
            ExpressionAttributeNames={"#customer": "customer_id"},
            ExpressionAttributeValues={":customer": {"S": customer_id}},
            ScanIndexForward=False,
            Limit=1,
        )["Items"]
        last_order_at = newest[0][customer_stats.LAST_ORDER_ATTRIBUTE]["S"] if newest else None
        return customer_stats.stats_view(from_item(item), last_order_at)

    # Inventory ----------------------------------------------------------------------

    def get_stock(self, sku: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self._live(inventory_levels.NAME),
            Key=to_key(inventory_levels.item_key(sku)),
        )
        item = response.get("Item")
        return inventory_levels.stock_view(from_item(item)) if item else None
