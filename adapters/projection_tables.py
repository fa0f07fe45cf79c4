"""One read-model table on DynamoDB: guarded row writes and the rebuild's bulk creates.

A per-stream row is written with a condition on its ``version``; when the read
model sums many streams, the row and the additions to the summing rows go in one
``TransactWriteItems``, so a crash leaves either all of it or none. The rebuild
creates rows in transactions of up to 100 writes, each ``Put`` conditional on the
row not existing; a cancelled transaction names the rows that existed, and the
rest is written again without them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from botocore.exceptions import ClientError

from adapters.dynamodb_rows import from_item, to_item, to_key
from adapters.eventstore.items import item_size
from application.errors import TransientStoreError
from application.ports import Contribution, NewRow, RowKey, StaleRowError, TableMissingError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(service="orders", child=True)

MAX_TRANSACTION_ACTIONS = 100
# DynamoDB allows 4 MB per transaction; stay well clear of it.
MAX_TRANSACTION_BYTES = 3 * 1024 * 1024
RETRYABLE_CANCELLATIONS = frozenset(
    {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
)
MAX_CANCELLED_ATTEMPTS = 8
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


def _contribution_sort_key(row: NewRow) -> tuple[str, ...]:
    return tuple(
        "|".join(f"{name}={value}" for name, value in sorted(c.key.items()))
        for c in row.contributions
    )


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

    def create_rows(self, rows: Sequence[NewRow]) -> list[int]:
        # Rows adding to the same summing row go next to each other, so that one
        # transaction adds their merged amounts with a single update.
        order = sorted(range(len(rows)), key=lambda index: _contribution_sort_key(rows[index]))
        existed: list[int] = []
        chunk: list[int] = []
        chunk_keys: set[tuple[str, ...]] = set()
        chunk_bytes = 0
        for index in order:
            new = rows[index]
            keys = {_contribution_sort_key(NewRow(new.key, {}, (c,))) for c in new.contributions}
            size = item_size(to_item(new.row))
            actions = len(chunk) + 1 + len(chunk_keys | keys)
            if chunk and (
                actions > MAX_TRANSACTION_ACTIONS or chunk_bytes + size > MAX_TRANSACTION_BYTES
            ):
                existed.extend(self._create_chunk([rows[i] for i in chunk], chunk))
                chunk, chunk_keys, chunk_bytes = [], set(), 0
            chunk.append(index)
            chunk_keys |= keys
            chunk_bytes += size
        if chunk:
            existed.extend(self._create_chunk([rows[i] for i in chunk], chunk))
        return sorted(existed)

    def _create_chunk(self, rows: list[NewRow], indexes: list[int]) -> list[int]:
        """Create the rows of one transaction; return the indexes of those that existed."""
        pending = list(zip(indexes, rows, strict=True))
        existed: list[int] = []
        cancelled = 0
        while pending:
            puts = [
                {
                    "Put": {
                        "TableName": self._name,
                        "Item": to_item(new.row),
                        "ConditionExpression": "attribute_not_exists(#key)",
                        "ExpressionAttributeNames": {"#key": self.partition_attribute},
                    }
                }
                for _, new in pending
            ]
            updates = [
                _update_action(self._name, c)
                for c in merge_contributions([c for _, new in pending for c in new.contributions])
            ]
            try:
                self.client.transact_write_items(TransactItems=puts + updates)  # type: ignore[arg-type]
                return existed
            except self.client.exceptions.TransactionCanceledException as error:
                reasons = error.response.get("CancellationReasons", [])
                codes = [reason.get("Code", "None") for reason in reasons]
                failed = {
                    position
                    for position, code in enumerate(codes[: len(pending)])
                    if code == "ConditionalCheckFailed"
                }
                if failed:
                    existed.extend(pending[position][0] for position in sorted(failed))
                    pending = [
                        entry for position, entry in enumerate(pending) if position not in failed
                    ]
                    continue
                if not set(codes) - {"None"} <= RETRYABLE_CANCELLATIONS:
                    raise
                cancelled += 1
                if cancelled >= MAX_CANCELLED_ATTEMPTS:
                    raise TransientStoreError(
                        f"{self._name}: a rebuild transaction was cancelled {cancelled} "
                        f"times ({codes})"
                    ) from None
                time.sleep(random.uniform(0, _BACKOFF_BASE_SECONDS * 2**cancelled))
            except self.client.exceptions.ResourceNotFoundException:
                raise TableMissingError(self._name) from None
        return existed

    # Verification -------------------------------------------------------------------

    def scan_rows(self, segment: int, total_segments: int) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {
            "TableName": self._name,
            "Segment": segment,
            "TotalSegments": total_segments,
            "ConsistentRead": True,
        }
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


def is_missing_table(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ResourceNotFoundException"
