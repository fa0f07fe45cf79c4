"""DynamoDB store of the order summary rows, and the queries the API runs on them."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from application.ports import InvalidCursorError, Page, StaleRowError
from projections.order_summary import public_view

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(service="orders", child=True)

CUSTOMER_INDEX = "by_customer"
_CURSOR_KEYS = frozenset({"order_id", "customer_id", "placed_key"})
MAX_CURSOR_LENGTH = 2048

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _plain(value: Any) -> Any:
    """Turn the Decimals that boto3 returns for numbers back into ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def to_item(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(value) for key, value in row.items() if value is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def encode_cursor(last_key: Mapping[str, Any]) -> str:
    plain = {key: value["S"] for key, value in last_key.items()}
    raw = json.dumps(plain, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, customer_id: str) -> dict[str, Any]:
    """Return the ``ExclusiveStartKey`` in a cursor issued for this customer's listing."""
    invalid = InvalidCursorError("cursor is invalid: pass the next_cursor of the previous page")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        plain = json.loads(raw)
    except (binascii.Error, ValueError):
        raise invalid from None
    if (
        not isinstance(plain, dict)
        or set(plain) != _CURSOR_KEYS
        or not all(isinstance(value, str) for value in plain.values())
        or plain["customer_id"] != customer_id
    ):
        raise invalid
    return {key: {"S": value} for key, value in plain.items()}


class DynamoDBOrderSummaries:
    """Implements the ``SummaryStore`` and ``OrderQueries`` ports."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    # SummaryStore -----------------------------------------------------------------

    def get(self, order_id: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table_name, Key={"order_id": {"S": order_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return from_item(item) if item else None

    def put(self, row: Mapping[str, Any], *, expected_version: int) -> None:
        request: dict[str, Any] = {"TableName": self.table_name, "Item": to_item(row)}
        if expected_version == 0:
            request["ConditionExpression"] = "attribute_not_exists(#id)"
            request["ExpressionAttributeNames"] = {"#id": "order_id"}
        else:
            request["ConditionExpression"] = "#version = :expected"
            request["ExpressionAttributeNames"] = {"#version": "version"}
            request["ExpressionAttributeValues"] = {":expected": {"N": str(expected_version)}}
        started = time.perf_counter()
        try:
            response = self.client.put_item(**request, ReturnConsumedCapacity="TOTAL")
        except self.client.exceptions.ConditionalCheckFailedException:
            raise StaleRowError(
                f"order {row['order_id']}: the summary row is no longer at version "
                f"{expected_version}"
            ) from None
        logger.debug(
            "summary row written",
            extra={
                "order_id": row["order_id"],
                "version": row["version"],
                "consumed_capacity": response.get("ConsumedCapacity"),
                "milliseconds": round((time.perf_counter() - started) * 1000, 2),
            },
        )

    # OrderQueries -----------------------------------------------------------------

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        response = self.client.get_item(
            TableName=self.table_name, Key={"order_id": {"S": order_id}}
        )
        item = response.get("Item")
        return public_view(from_item(item)) if item else None

    def list_customer_orders(self, customer_id: str, limit: int, cursor: str | None) -> Page:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": CUSTOMER_INDEX,
            "KeyConditionExpression": "#customer = :customer",
            "ExpressionAttributeNames": {"#customer": "customer_id"},
            "ExpressionAttributeValues": {":customer": {"S": customer_id}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            request["ExclusiveStartKey"] = decode_cursor(cursor, customer_id)
        response = self.client.query(**request)
        last_key = response.get("LastEvaluatedKey")
        return Page(
            items=[public_view(from_item(item)) for item in response["Items"]],
            next_cursor=encode_cursor(last_key) if last_key else None,
        )
