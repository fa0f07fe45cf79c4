"""One read-model table on DynamoDB: guarded row writes and the rebuild's bulk load.

A per-stream row is written with a condition on its ``version``. When the read
model sums many streams, the row and the additions to the summing rows go in one
``TransactWriteItems``, so a crash leaves either all of it or none. A rebuild
loads a new table with ``BatchWriteItem``, which takes no condition: while it
does, no other writer touches that table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from adapters.dynamodb_rows import from_item, to_item, to_key
from application.errors import TransientStoreError
from application.ports import Contribution, RowKey, StaleRowError, TableMissingError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(service="orders", child=True)

MAX_BATCH_WRITE_ITEMS = 25
MAX_UNPROCESSED_ATTEMPTS = 10
RETRYABLE_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
_BACKOFF_BASE_SECONDS = 0.02


def _update_action(table: str, contribution: Contribution) -> dict[str, Any]:
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    adds = []
    for index, (name, amount) in enumerate(sorted(contribution.add.items())):
        names[f"#a{index}"] = name
        values[f":a{index}"] = {"N": str(amount)}
        adds.append(f"#a{index} :a{index}")
    sets = []
    for index, (name, value) in enumerate(sorted(contribution.set_once.items())):
        names[f"#s{index}"] = name
        values[f":s{index}"] = {"S": value}
        sets.append(f"#s{index} = if_not_exists(#s{index}, :s{index})")
    clauses = []
    if sets:
        clauses.append("SET " + ", ".join(sets))
    if adds:
        clauses.append("ADD " + ", ".join(adds))
    update: dict[str, Any] = {
        "TableName": table,
        "Key": to_key(contribution.key),
        "UpdateExpression": " ".join(clauses),
        "ExpressionAttributeNames": names,
    }
    if values:
        update["ExpressionAttributeValues"] = values
    return {"Update": update}


def merge_contributions(contributions: Sequence[Contribution]) -> list[Contribution]:
    """Fold contributions to the same row into one, so a transaction touches it once."""
    merged: dict[tuple[tuple[str, str], ...], Contribution] = {}
    for contribution in contributions:
        key = tuple(sorted((name, str(value)) for name, value in contribution.key.items()))
        seen = merged.get(key)
        if seen is None:
            merged[key] = Contribution(
                dict(contribution.key), dict(contribution.add), dict(contribution.set_once)
            )
            continue
        add = dict(seen.add)
        for name, amount in contribution.add.items():
            add[name] = add.get(name, 0) + amount
        merged[key] = Contribution(seen.key, add, {**contribution.set_once, **seen.set_once})
    return list(merged.values())


class DynamoDBProjectionTable:
    """Implements the ``ProjectionTable`` port for one table."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, key_attributes: Sequence[str]
    ) -> None:
        self.client = client
        self._name = table_name
        self.key_attributes = tuple(key_attributes)
        self.partition_attribute = self.key_attributes[0]

    @property
    def name(self) -> str:
        return self._name

    def get_row(self, key: RowKey) -> dict[str, Any] | None:
        try:
            response = self.client.get_item(
                TableName=self._name, Key=to_key(key), ConsistentRead=True
            )
        except self.client.exceptions.ResourceNotFoundException:
            raise TableMissingError(self._name) from None
        item = response.get("Item")
        return from_item(item) if item else None

    def _guarded_put(self, row: Mapping[str, Any], expected_version: int) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._name, "Item": to_item(row)}
        if expected_version == 0:
            put["ConditionExpression"] = "attribute_not_exists(#key)"
            put["ExpressionAttributeNames"] = {"#key": self.partition_attribute}
        else:
            put["ConditionExpression"] = "#version = :expected"
            put["ExpressionAttributeNames"] = {"#version": "version"}
            put["ExpressionAttributeValues"] = {":expected": {"N": str(expected_version)}}
        return put

    def apply(
        self,
        key: RowKey,
        row: Mapping[str, Any],
        *,
        expected_version: int,
        contributions: Sequence[Contribution] = (),
    ) -> None:
        put = self._guarded_put(row, expected_version)
        stale = StaleRowError(
            f"{self._name}: row {dict(key)} is no longer at version {expected_version}"
        )
        try:
            if not contributions:
                self.client.put_item(**put)
                return
            actions: list[Any] = [{"Put": put}] + [
                _update_action(self._name, c) for c in merge_contributions(contributions)
            ]
            self.client.transact_write_items(TransactItems=actions)
        except self.client.exceptions.ConditionalCheckFailedException:
            raise stale from None
        except self.client.exceptions.TransactionCanceledException as error:
            codes = [r.get("Code", "None") for r in error.response.get("CancellationReasons", [])]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise stale from None
            if set(codes) - {"None"} <= RETRYABLE_CANCELLATIONS:
                # Another writer touched a summing row at the same moment: read and retry.
                raise StaleRowError(f"{self._name}: transaction cancelled: {codes}") from None
            raise
        except self.client.exceptions.ResourceNotFoundException:
            raise TableMissingError(self._name) from None

    # Rebuild ------------------------------------------------------------------------

    def put_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(rows), MAX_BATCH_WRITE_ITEMS):
            request: dict[str, Any] = {
                self._name: [
                    {"PutRequest": {"Item": to_item(row)}}
                    for row in rows[start : start + MAX_BATCH_WRITE_ITEMS]
                ]
            }
            for attempt in range(MAX_UNPROCESSED_ATTEMPTS):
                try:
                    response = self.client.batch_write_item(RequestItems=request)
                except self.client.exceptions.ResourceNotFoundException:
                    raise TableMissingError(self._name) from None
                request = dict(response.get("UnprocessedItems") or {})
                if not request:
                    break
                # Throttled: DynamoDB returns what it did not write; back off and resend it.
                time.sleep(random.uniform(0, _BACKOFF_BASE_SECONDS * 2**attempt))
            else:
                raise TransientStoreError(
                    f"{self._name}: rows were still unprocessed after "
                    f"{MAX_UNPROCESSED_ATTEMPTS} BatchWriteItem attempts"
                )

    # Verification -------------------------------------------------------------------

    def scan_rows(
        self, segment: int, total_segments: int, attributes: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._name,
            "Segment": segment,
            "TotalSegments": total_segments,
            "ConsistentRead": True,
        }
        if attributes is not None:
            names = {f"#a{index}": name for index, name in enumerate(attributes)}
            request["ProjectionExpression"] = ", ".join(names)
            request["ExpressionAttributeNames"] = names
        while True:
            try:
                response = self.client.scan(**request)
            except self.client.exceptions.ResourceNotFoundException:
                raise TableMissingError(self._name) from None
            for item in response["Items"]:
                yield from_item(item)
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return
            request["ExclusiveStartKey"] = last_key
