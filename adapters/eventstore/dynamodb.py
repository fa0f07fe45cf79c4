"""Event store on one DynamoDB table, as an eventsourcing persistence module.

Select it with ``PERSISTENCE_MODULE=adapters.eventstore.dynamodb`` and name the
table in ``EVENTS_TABLE``. Each commit is one ``TransactWriteItems`` call: a
``Put`` per event, a ``Put`` of each stream's tip guarded by the version the
writer read, and a ``Put`` of the command record guarded by its absence.
Loading an aggregate is one consistent ``GetItem`` of the tip, whatever the
length of its history. See :mod:`adapters.eventstore.items` for the layout.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import ClientError
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    Notification,
    NotSupportedError,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    Subscription,
    TrackingRecorder,
)

from adapters.eventstore.items import (
    TIP_POSITION,
    Item,
    StreamCommit,
    command_from_item,
    command_key,
    commit_items,
    plan_commit,
    stored_event_from_item,
    tip_from_item,
    tip_key,
    utc_now_iso,
)
from application.errors import DuplicateCommandError, TransientStoreError, VersionConflictError
from application.ports import CommandRecord, Tip

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(service="orders", child=True)

EVENTS_TABLE = "EVENTS_TABLE"
COMMAND_TTL_SECONDS = "COMMAND_TTL_SECONDS"
DEFAULT_COMMAND_TTL_SECONDS = 7 * 24 * 3600
MAX_POSITION = 2**63 - 1
_CONFLICT_RETRY_BASE_SECONDS = 0.02


def default_client_config() -> Config:
    """Client settings for Lambda: fail fast on a dead connection, retry throttling."""
    return Config(
        connect_timeout=2,
        read_timeout=5,
        retries={"mode": "standard", "max_attempts": 4},
        tcp_keepalive=True,
    )


def transaction_token() -> str:
    """Return a new ``ClientRequestToken`` for one attempt of a commit.

    When botocore retries a transaction whose response was lost, it resends the
    same request, token included, and DynamoDB reports success instead of a
    false version conflict. The token is random: one derived from the events
    would be shared by two writers of byte-identical events, and the loser would
    get ``IdempotentParameterMismatchException`` instead of a version conflict.
    A new attempt after a cancellation gets a new token.
    """
    return str(uuid.uuid4())


class DynamoDBRecorder(ApplicationRecorder):
    """Aggregate recorder on DynamoDB with tips and command records.

    The notification-log methods raise :class:`NotSupportedError`: the store keeps
    no global sequence, since one counter item would cap the whole system at one
    partition's write rate. Consumers read the table's stream instead, and a
    global replay is a parallel Scan.
    """

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        command_ttl_seconds: int = DEFAULT_COMMAND_TTL_SECONDS,
        max_conflict_attempts: int = 4,
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.command_ttl_seconds = command_ttl_seconds
        self.max_conflict_attempts = max_conflict_attempts

    # Writing ----------------------------------------------------------------------

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if kwargs.get("tracking") is not None:
            raise NotSupportedError("the DynamoDB store does not record tracking positions")
        commits = plan_commit(stored_events, kwargs.get("snapshots"))
        if not commits:
            return None
        command: CommandRecord | None = kwargs.get("command")
        recorded_at = utc_now_iso()
        events, tips, command_record = commit_items(
            commits, command, recorded_at, int(time.time()) + self.command_ttl_seconds
        )
        actions = self._transaction_actions(commits, events, tips, command_record)
        command_id = command.command_id if command else None

        for attempt in range(1, self.max_conflict_attempts + 1):
            started = time.perf_counter()
            try:
                response = self.client.transact_write_items(
                    TransactItems=actions,  # type: ignore[arg-type]
                    ClientRequestToken=transaction_token(),
                    ReturnConsumedCapacity="TOTAL",
                )
            except self.client.exceptions.TransactionCanceledException as error:
                reasons = error.response.get("CancellationReasons", [])
                self._raise_for_cancellation(commits, command_record, reasons, attempt)
                self._sleep_before_retry(attempt)
                continue
            except ClientError as error:
                raise OperationalError(
                    f"writing to {self.table_name} failed: {error.response['Error']['Code']}: "
                    f"{error.response['Error']['Message']}"
                ) from error
            logger.debug(
                "events appended",
                extra={
                    "table": self.table_name,
                    "streams": {commit.stream_id: commit.new_version for commit in commits},
                    "command_id": command_id,
                    "actions": len(actions),
                    "consumed_capacity": response.get("ConsumedCapacity"),
                    "milliseconds": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return None
        raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover

    def _transaction_actions(
        self,
        commits: Sequence[StreamCommit],
        events: Sequence[Item],
        tips: Sequence[Item],
        command_record: Item | None,
    ) -> list[dict[str, Any]]:
        # Order matters: cancellation reasons come back by position, and
        # _raise_for_cancellation relies on commands first, then tips, then events.
        actions: list[dict[str, Any]] = []
        if command_record is not None:
            actions.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": command_record,
                        "ConditionExpression": "attribute_not_exists(#sid)",
                        "ExpressionAttributeNames": {"#sid": "stream_id"},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                }
            )
        for commit, tip in zip(commits, tips, strict=True):
            put: dict[str, Any] = {"TableName": self.table_name, "Item": tip}
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
            if commit.expected_version == 0:
                put["ConditionExpression"] = "attribute_not_exists(#sid)"
                put["ExpressionAttributeNames"] = {"#sid": "stream_id"}
            else:
                put["ConditionExpression"] = "#version = :expected"
                put["ExpressionAttributeNames"] = {"#version": "version"}
                put["ExpressionAttributeValues"] = {
                    ":expected": {"N": str(commit.expected_version)}
                }
            actions.append({"Put": put})
        for event in events:
            actions.append(
                {
                    "Put": {
                        "TableName": self.table_name,
                        "Item": event,
                        "ConditionExpression": "attribute_not_exists(#sid)",
                        "ExpressionAttributeNames": {"#sid": "stream_id"},
                    }
                }
            )
        return actions

    def _raise_for_cancellation(
        self,
        commits: Sequence[StreamCommit],
        command_record: Item | None,
        reasons: Sequence[Mapping[str, Any]],
        attempt: int,
    ) -> None:
        """Raise the error that the cancellation reasons name; return if a retry may succeed."""
        codes = [reason.get("Code", "None") for reason in reasons]
        offset = 0
        if command_record is not None:
            offset = 1
            if codes and codes[0] == "ConditionalCheckFailed":
                raise DuplicateCommandError(command_from_item(reasons[0]["Item"]))

        for index, commit in enumerate(commits):
            reason: Mapping[str, Any] = (
                reasons[offset + index] if offset + index < len(reasons) else {}
            )
            if reason.get("Code") == "ConditionalCheckFailed":
                current = reason.get("Item")
                tip = tip_from_item(current) if current else None
                raise VersionConflictError(
                    commit.stream_id,
                    commit.expected_version,
                    tip.version if tip else None,
                    tip,
                )

        event_offset = offset + len(commits)
        if "ConditionalCheckFailed" in codes[event_offset:]:
            stream_id = commits[0].stream_id
            raise VersionConflictError(stream_id, commits[0].expected_version, None, None)

        retryable = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
        failed = [code for code in codes if code not in ("None", "")]
        if failed and all(code in retryable for code in failed):
            if attempt < self.max_conflict_attempts:
                logger.info(
                    "transaction cancelled, retrying",
                    extra={"codes": failed, "attempt": attempt, "table": self.table_name},
                )
                return
            raise TransientStoreError(
                f"writing to {self.table_name} was cancelled {attempt} times ({failed}); "
                "retry the command later"
            )
        raise OperationalError(f"the transaction on {self.table_name} was cancelled: {codes}")

    @staticmethod
    def _sleep_before_retry(attempt: int) -> None:
        ceiling = _CONFLICT_RETRY_BASE_SECONDS * (2 ** (attempt - 1))
        time.sleep(random.uniform(0, ceiling))  # full jitter

    # Reading ----------------------------------------------------------------------

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        return list(self.iter_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit))

    def iter_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Yield events page by page, following ``LastEvaluatedKey`` to the end."""
        low = max((gt or 0) + 1, TIP_POSITION + 1)
        high = MAX_POSITION if lte is None else lte
        if high < low or limit == 0:
            return
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#sid = :sid AND #pos BETWEEN :low AND :high",
            "ExpressionAttributeNames": {
                "#sid": "stream_id",
                "#pos": "position",
                "#topic": "topic",
                "#state": "state",
            },
            "ExpressionAttributeValues": {
                ":sid": {"S": str(originator_id)},
                ":low": {"N": str(low)},
                ":high": {"N": str(high)},
            },
            "ProjectionExpression": "#sid, #pos, #topic, #state",
            "ConsistentRead": True,
            "ScanIndexForward": not desc,
        }
        returned = 0
        while True:
            if limit is not None:
                request["Limit"] = limit - returned
            response = self.client.query(**request)
            for item in response["Items"]:
                yield stored_event_from_item(item)
                returned += 1
            last_key = response.get("LastEvaluatedKey")
            if not last_key or (limit is not None and returned >= limit):
                return
            request["ExclusiveStartKey"] = last_key

    def select_tip(self, originator_id: UUID | str) -> Tip | None:
        response = self.client.get_item(
            TableName=self.table_name, Key=tip_key(str(originator_id)), ConsistentRead=True
        )
        item = response.get("Item")
        return tip_from_item(item) if item else None

    def select_command(self, command_id: str) -> CommandRecord | None:
        response = self.client.get_item(
            TableName=self.table_name, Key=command_key(command_id), ConsistentRead=True
        )
        item = response.get("Item")
        return command_from_item(item) if item else None

    # No global notification log ----------------------------------------------------

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        raise NotSupportedError(_NO_NOTIFICATION_LOG)

    def max_notification_id(self) -> int | None:
        raise NotSupportedError(_NO_NOTIFICATION_LOG)

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        raise NotSupportedError(_NO_NOTIFICATION_LOG)


_NO_NOTIFICATION_LOG = (
    "the DynamoDB event store keeps no global notification log: "
    "consume the events table's stream, or replay with a parallel Scan"
)


class DynamoDBFactory(InfrastructureFactory[TrackingRecorder]):
    """Builds recorders from ``EVENTS_TABLE`` and the standard AWS environment variables.

    The endpoint comes from boto3's own settings (``AWS_ENDPOINT_URL_DYNAMODB``
    locally), so this module has no local-only code path.
    """

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        table_name = self.env.get(EVENTS_TABLE)
        if not table_name:
            raise OperationalError(
                f"{EVENTS_TABLE} is not set: name the DynamoDB table that holds the events"
            )
        self.table_name: str = table_name
        self.command_ttl_seconds = int(
            self.env.get(COMMAND_TTL_SECONDS, str(DEFAULT_COMMAND_TTL_SECONDS))
        )
        self.client: DynamoDBClient = boto3.client("dynamodb", config=default_client_config())

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose != "events":
            raise NotSupportedError(
                f"no separate {purpose!r} recorder: snapshots live in each stream's tip item"
            )
        return self.application_recorder()

    def application_recorder(self) -> DynamoDBRecorder:
        return DynamoDBRecorder(
            self.client, self.table_name, command_ttl_seconds=self.command_ttl_seconds
        )

    def tracking_recorder(
        self, tracking_recorder_class: type[TrackingRecorder] | None = None
    ) -> TrackingRecorder:
        raise NotSupportedError("the DynamoDB store does not record tracking positions")

    def process_recorder(self) -> ProcessRecorder:
        raise NotSupportedError("the DynamoDB store does not record tracking positions")


Factory = DynamoDBFactory
