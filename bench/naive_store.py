"""The naive design the capacity figure compares against: one item per event, no tip.

Each event is its own ``PutItem`` guarded by ``attribute_not_exists``; there is no
transaction, no tip item and no snapshot, so loading an aggregate is a strongly
consistent ``Query`` of its whole history, page by page. Items have the same
attributes as the real store's event items, on the same table layout, so only the
design differs. A multi-aggregate save is a series of independent writes here (not
atomic), which is one of the reasons the real store uses transactions.

Select it with ``PERSISTENCE_MODULE=bench.naive_store`` through
:class:`NaiveOrdersApplication`, which loads by replaying events.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

import boto3
from eventsourcing.application import Application, ProcessingEvent, ProjectorFunction, Repository
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    Notification,
    NotSupportedError,
    ProcessRecorder,
    Recording,
    StoredEvent,
    Subscription,
    TrackingRecorder,
)

from adapters.eventstore.dynamodb import EVENTS_TABLE, MAX_POSITION, default_client_config
from adapters.eventstore.items import event_item, stored_event_from_item, utc_now_iso
from application.errors import VersionConflictError
from application.eventsourced import TipRepository
from application.orders import OrdersApplication
from application.ports import TipRecorder

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_WRITE_SIZE = 25


class NaiveRecorder(ApplicationRecorder):
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        recorded_at = utc_now_iso()
        for stored in stored_events:
            try:
                self.client.put_item(
                    TableName=self.table_name,
                    Item=event_item(stored, recorded_at),
                    ConditionExpression="attribute_not_exists(#sid)",
                    ExpressionAttributeNames={"#sid": "stream_id"},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                raise VersionConflictError(
                    str(stored.originator_id), stored.originator_version - 1, None, None
                ) from None
        return None

    def bulk_load(self, stored_events: Iterable[StoredEvent]) -> None:
        """Write a history without conditions, 25 items a call: benchmark setup only."""
        recorded_at = utc_now_iso()
        batch: list[dict[str, Any]] = []
        for stored in stored_events:
            batch.append({"PutRequest": {"Item": event_item(stored, recorded_at)}})
            if len(batch) == BATCH_WRITE_SIZE:
                self._write_batch(batch)
                batch = []
        if batch:
            self._write_batch(batch)

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        requests: dict[str, Any] = {self.table_name: batch}
        while requests:
            response = self.client.batch_write_item(RequestItems=requests)
            requests = dict(response.get("UnprocessedItems") or {})

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        low = (gt or 0) + 1
        high = MAX_POSITION if lte is None else lte
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#sid = :sid AND #pos BETWEEN :low AND :high",
            "ExpressionAttributeNames": {"#sid": "stream_id", "#pos": "position"},
            "ExpressionAttributeValues": {
                ":sid": {"S": str(originator_id)},
                ":low": {"N": str(low)},
                ":high": {"N": str(high)},
            },
            "ConsistentRead": True,
            "ScanIndexForward": not desc,
        }
        if limit is not None:
            request["Limit"] = limit
        events: list[StoredEvent] = []
        while True:
            response = self.client.query(**request)
            events.extend(stored_event_from_item(item) for item in response["Items"])
            last_key = response.get("LastEvaluatedKey")
            if not last_key or (limit is not None and len(events) >= limit):
                return events
            request["ExclusiveStartKey"] = last_key

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        raise NotSupportedError("the naive store keeps no notification log")

    def max_notification_id(self) -> int | None:
        raise NotSupportedError("the naive store keeps no notification log")

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        raise NotSupportedError("the naive store keeps no notification log")


class NaiveFactory(InfrastructureFactory[TrackingRecorder]):
    def __init__(self, env: Any) -> None:
        super().__init__(env)
        table_name = self.env.get(EVENTS_TABLE)
        if not table_name:
            raise ValueError(f"{EVENTS_TABLE} is not set")
        self.table_name: str = table_name
        self.client: DynamoDBClient = boto3.client("dynamodb", config=default_client_config())

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return self.application_recorder()

    def application_recorder(self) -> NaiveRecorder:
        return NaiveRecorder(self.client, self.table_name)

    def tracking_recorder(
        self, tracking_recorder_class: type[TrackingRecorder] | None = None
    ) -> TrackingRecorder:
        raise NotSupportedError("the naive store records no tracking positions")

    def process_recorder(self) -> ProcessRecorder:
        raise NotSupportedError("the naive store records no tracking positions")


Factory = NaiveFactory


class ReplayRepository(TipRepository):
    """Loads by replaying the whole history; keeps the cache behaviour of the real one."""

    def _load_from_tip(
        self, aggregate_id: UUID, projector_func: ProjectorFunction[Any, Any]
    ) -> Any:
        return self._reconstruct_aggregate(aggregate_id, None, projector_func)


class NaiveOrdersApplication(OrdersApplication):
    """The order application on the naive store: same commands, no tips, no snapshots."""

    def construct_repository(self) -> Repository[UUID]:
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return ReplayRepository(
            recorder=cast("TipRecorder", self.recorder),
            event_store=self.events,
            cache_maxsize=int(maxsize) if maxsize else None,
            fastforward=False,
        )

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        # Skip TipApplication._record, which adds a snapshot for the tip, but keep its
        # cache rule: a conflict here returns no state, so the stale copy must go.
        try:
            return Application._record(self, processing_event)
        except VersionConflictError as conflict:
            self.repository.evict(conflict.stream_id)
            raise


def naive_environment(events_table: str, **more: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "bench.naive_store", "EVENTS_TABLE": events_table, **more}
