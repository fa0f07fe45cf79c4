"""Projection pointers, rebuild runs and segment checkpoints in the control table, and the
generation tables a rebuild creates.

Control table items (partition key ``pk``, sort key ``sk``):

- ``projection#<name>`` / ``pointer``: ``live_table``, ``live_generation``,
  ``last_generation``, and while a rebuild runs ``building_table``,
  ``building_generation``, ``building_phase`` (bulk, guarded) and ``rebuild_id``;
  after a switch ``previous_table`` and ``switched_at`` (epoch seconds).
- ``rebuild#<id>`` / ``run``: the read models, segment count, tables, generations,
  ``scan_not_before``, ``status`` (scanning, catching_up, indexing, switched,
  abandoned), ``guarded_since``, ``summing_owner`` and ``summing_until`` (the claim
  on writing the summing rows), ``created_at``.
- ``rebuild#<id>`` / ``segment#<nnnn>``: the segment's checkpoint: ``start_key`` (the
  scan's ``LastEvaluatedKey`` as JSON, absent at the start), ``pages``, ``scanned``,
  ``events``, ``rows``, ``done``, ``updated_at``.
- ``dirty#<id>#<nn>`` / ``<stream id>``: a stream that changed during the run's bulk
  load, with its ``stream_type`` and ``expires_at`` (TTL, a week later). Marks
  spread over 16 partitions, so marking is not capped by one partition's write rate.

A missing pointer means generation 0: the table the template declares.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from adapters.eventstore.items import utc_now_iso as now_iso
from application.ports import (
    BULK_PHASE,
    GUARDED_PHASE,
    ProjectionPointer,
    RebuildConflictError,
    RebuildRun,
    SegmentCheckpoint,
    SegmentClaimedError,
)
from projections.rebuild import ABANDONED, CATCHING_UP, INDEXING, SCANNING, SWITCHED

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

logger = Logger(service="orders", child=True)

POINTER_SK = "pointer"
RUN_SK = "run"
SEGMENT_PREFIX = "segment#"
GENERATION_SUFFIX = "-g"
DIRTY_SHARDS = 16
# The control table's TTL deletes marks this long after they were written.
DIRTY_MARK_TTL_SECONDS = 7 * 24 * 3600


def pointer_pk(projection: str) -> str:
    return f"projection#{projection}"


def run_pk(rebuild_id: str) -> str:
    return f"rebuild#{rebuild_id}"


def segment_sk(segment: int) -> str:
    return f"{SEGMENT_PREFIX}{segment:04d}"


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return str(value["S"]) if value else None


def _n(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    return int(value["N"]) if value else None


def _f(item: Mapping[str, Any], name: str) -> float | None:
    value = item.get(name)
    return float(value["N"]) if value else None


class DynamoDBProjectionControl:
    """Implements the ``ProjectionControl`` port."""

    def __init__(
        self, client: DynamoDBClient, table_name: str, base_tables: Mapping[str, str]
    ) -> None:
        self.client = client
        self.table_name = table_name
        self.base_tables = dict(base_tables)

    # Pointers -----------------------------------------------------------------------

    def pointer(self, projection: str) -> ProjectionPointer:
        if projection not in self.base_tables:
            raise KeyError(f"no table is configured for read model {projection!r}")
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_key(pointer_pk(projection), POINTER_SK),
            ConsistentRead=True,
        )
        item = response.get("Item")
        base = self.base_tables[projection]
        if not item:
            return ProjectionPointer(projection=projection, live_table=base)
        return ProjectionPointer(
            projection=projection,
            live_table=_s(item, "live_table") or base,
            live_generation=_n(item, "live_generation") or 0,
            building_table=_s(item, "building_table"),
            building_generation=_n(item, "building_generation"),
            rebuild_id=_s(item, "rebuild_id"),
            previous_table=_s(item, "previous_table"),
            switched_at=_f(item, "switched_at"),
            last_generation=_n(item, "last_generation") or 0,
            building_phase=_s(item, "building_phase"),
        )

    # Runs ---------------------------------------------------------------------------

    def begin(self, run: RebuildRun) -> None:
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table_name,
                    "Item": self._run_item(run),
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": "pk"},
                }
            }
        ]
        for projection in run.projections:
            generation = run.generations[projection]
            actions.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _key(pointer_pk(projection), POINTER_SK),
                        "UpdateExpression": (
                            "SET #building = :building, #building_gen = :gen, #rebuild = :id, "
                            "#phase = :bulk, #last_gen = :gen, "
                            "#live = if_not_exists(#live, :base), "
                            "#live_gen = if_not_exists(#live_gen, :zero)"
                        ),
                        "ConditionExpression": (
                            "attribute_not_exists(#rebuild) AND "
                            "(attribute_not_exists(#last_gen) OR #last_gen < :gen)"
                        ),
                        "ExpressionAttributeNames": {
                            "#building": "building_table",
                            "#building_gen": "building_generation",
                            "#rebuild": "rebuild_id",
                            "#phase": "building_phase",
                            "#last_gen": "last_generation",
                            "#live": "live_table",
                            "#live_gen": "live_generation",
                        },
                        "ExpressionAttributeValues": {
                            ":building": {"S": run.tables[projection]},
                            ":gen": {"N": str(generation)},
                            ":id": {"S": run.rebuild_id},
                            ":bulk": {"S": BULK_PHASE},
                            ":base": {"S": self.base_tables[projection]},
                            ":zero": {"N": "0"},
                        },
                    }
                }
            )
        try:
            self.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except self.client.exceptions.TransactionCanceledException as error:
            codes = [r.get("Code", "None") for r in error.response.get("CancellationReasons", [])]
            raise RebuildConflictError(
                f"another rebuild started meanwhile or its generation is taken ({codes}); "
                "run the command again"
            ) from None

    def _run_item(self, run: RebuildRun) -> dict[str, Any]:
        return {
            **_key(run_pk(run.rebuild_id), RUN_SK),
            "projections": {"L": [{"S": name} for name in run.projections]},
            "total_segments": {"N": str(run.total_segments)},
            "tables": {"M": {name: {"S": table} for name, table in run.tables.items()}},
            "generations": {
                "M": {name: {"N": str(number)} for name, number in run.generations.items()}
            },
            "scan_not_before": {"N": repr(run.scan_not_before)},
            "status": {"S": run.status},
            "created_at": {"S": run.created_at or now_iso()},
        }

    def load_run(self, rebuild_id: str) -> RebuildRun | None:
        response = self.client.get_item(
            TableName=self.table_name, Key=_key(run_pk(rebuild_id), RUN_SK), ConsistentRead=True
        )
        item = response.get("Item")
        if not item:
            return None
        return RebuildRun(
            rebuild_id=rebuild_id,
            projections=tuple(value["S"] for value in item["projections"]["L"]),
            total_segments=int(item["total_segments"]["N"]),
            tables={name: value["S"] for name, value in item["tables"]["M"].items()},
            generations={name: int(value["N"]) for name, value in item["generations"]["M"].items()},
            scan_not_before=float(item["scan_not_before"]["N"]),
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            guarded_since=_f(item, "guarded_since"),
        )

    def switch(self, run: RebuildRun, now: float) -> list[str] | None:
        pointers = {name: self.pointer(name) for name in run.projections}
        if any(pointer.rebuild_id != run.rebuild_id for pointer in pointers.values()):
            return None
        actions: list[dict[str, Any]] = []
        for name, pointer in pointers.items():
            actions.append(
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": _key(pointer_pk(name), POINTER_SK),
                        "UpdateExpression": (
                            "SET #live = :building, #live_gen = :gen, #previous = :old, "
                            "#switched = :now REMOVE #building, #building_gen, #rebuild, #phase"
                        ),
                        "ConditionExpression": "#rebuild = :id AND #live = :old",
                        "ExpressionAttributeNames": {
                            "#live": "live_table",
                            "#live_gen": "live_generation",
                            "#previous": "previous_table",
                            "#switched": "switched_at",
                            "#building": "building_table",
                            "#building_gen": "building_generation",
                            "#rebuild": "rebuild_id",
                            "#phase": "building_phase",
                        },
                        "ExpressionAttributeValues": {
                            ":building": {"S": run.tables[name]},
                            ":gen": {"N": str(run.generations[name])},
                            ":old": {"S": pointer.live_table},
                            ":now": {"N": repr(now)},
                            ":id": {"S": run.rebuild_id},
                        },
                    }
                }
            )
        actions.append(self._set_status(run, INDEXING, SWITCHED))
        try:
            self.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except self.client.exceptions.TransactionCanceledException:
            return None
        return [p.previous_table for p in pointers.values() if p.previous_table]

    def abandon(self, run: RebuildRun) -> None:
        for name in run.projections:
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=_key(pointer_pk(name), POINTER_SK),
                    UpdateExpression="REMOVE #building, #building_gen, #rebuild, #phase",
                    ConditionExpression="#rebuild = :id",
                    ExpressionAttributeNames={
                        "#building": "building_table",
                        "#building_gen": "building_generation",
                        "#rebuild": "rebuild_id",
                        "#phase": "building_phase",
                    },
                    ExpressionAttributeValues={":id": {"S": run.rebuild_id}},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                continue  # this pointer no longer names the run
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(run.rebuild_id), RUN_SK),
                UpdateExpression="SET #status = :abandoned",
                ConditionExpression="#status <> :switched",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":abandoned": {"S": ABANDONED},
                    ":switched": {"S": SWITCHED},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            logger.info("rebuild had switched already", extra={"rebuild_id": run.rebuild_id})

    def _set_status(self, run: RebuildRun, expected: str, status: str) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": _key(run_pk(run.rebuild_id), RUN_SK),
                "UpdateExpression": "SET #status = :status",
                "ConditionExpression": "#status = :expected",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {
                    ":status": {"S": status},
                    ":expected": {"S": expected},
                },
            }
        }

    def set_status(self, run: RebuildRun, expected: str, status: str) -> bool:
        try:
            self.client.update_item(**self._set_status(run, expected, status)["Update"])
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim_summing(self, run: RebuildRun, owner: str, now: float, seconds: float) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(run.rebuild_id), RUN_SK),
                UpdateExpression="SET #owner = :owner, #until = :until",
                ConditionExpression=(
                    "#status = :scanning AND (attribute_not_exists(#until) OR #until < :now "
                    "OR #owner = :owner)"
                ),
                ExpressionAttributeNames={
                    "#owner": "summing_owner",
                    "#until": "summing_until",
                    "#status": "status",
                },
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": repr(now + seconds)},
                    ":now": {"N": repr(now)},
                    ":scanning": {"S": SCANNING},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_summing(self, run: RebuildRun, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(run.rebuild_id), RUN_SK),
                UpdateExpression="SET #until = :zero",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "summing_owner", "#until": "summing_until"},
                ExpressionAttributeValues={":owner": {"S": owner}, ":zero": {"N": "0"}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return

    def enter_guarded_phase(self, run: RebuildRun, now: float) -> bool:
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": _key(pointer_pk(name), POINTER_SK),
                    "UpdateExpression": "SET #phase = :guarded",
                    "ConditionExpression": "#rebuild = :id",
                    "ExpressionAttributeNames": {
                        "#phase": "building_phase",
                        "#rebuild": "rebuild_id",
                    },
                    "ExpressionAttributeValues": {
                        ":guarded": {"S": GUARDED_PHASE},
                        ":id": {"S": run.rebuild_id},
                    },
                }
            }
            for name in run.projections
        ]
        status = self._set_status(run, SCANNING, CATCHING_UP)
        status["Update"]["UpdateExpression"] += ", #since = :now"
        status["Update"]["ExpressionAttributeNames"]["#since"] = "guarded_since"
        status["Update"]["ExpressionAttributeValues"][":now"] = {"N": repr(now)}
        actions.append(status)
        try:
            self.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except self.client.exceptions.TransactionCanceledException:
            return False
        return True

    # Checkpoints --------------------------------------------------------------------

    def load_checkpoint(self, rebuild_id: str, segment: int) -> SegmentCheckpoint | None:
        response = self.client.get_item(
            TableName=self.table_name,
            Key=_key(run_pk(rebuild_id), segment_sk(segment)),
            ConsistentRead=True,
        )
        item = response.get("Item")
        return _checkpoint_from_item(item) if item else None

    def claim_segment(
        self, rebuild_id: str, segment: int, owner: str, now: float, seconds: float
    ) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(rebuild_id), segment_sk(segment)),
                UpdateExpression="SET #owner = :owner, #until = :until, #segment = :segment",
                ConditionExpression=(
                    "attribute_not_exists(#until) OR #until < :now OR #owner = :owner"
                ),
                ExpressionAttributeNames={
                    "#owner": "claim_owner",
                    "#until": "claim_until",
                    "#segment": "segment",
                },
                ExpressionAttributeValues={
                    ":owner": {"S": owner},
                    ":until": {"N": repr(now + seconds)},
                    ":now": {"N": repr(now)},
                    ":segment": {"N": str(segment)},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            raise SegmentClaimedError(
                f"segment {segment} of rebuild {rebuild_id} is claimed by another worker"
            ) from None

    def save_checkpoint(
        self, rebuild_id: str, checkpoint: SegmentCheckpoint, owner: str, now: float, seconds: float
    ) -> None:
        names = {
            "#owner": "claim_owner",
            "#until": "claim_until",
            "#segment": "segment",
            "#pages": "pages",
            "#scanned": "scanned",
            "#events": "events",
            "#rows": "rows",
            "#done": "done",
            "#updated": "updated_at",
            "#start": "start_key",
        }
        values: dict[str, Any] = {
            ":owner": {"S": owner},
            ":until": {"N": repr(now + seconds)},
            ":segment": {"N": str(checkpoint.segment)},
            ":pages": {"N": str(checkpoint.pages)},
            ":scanned": {"N": str(checkpoint.scanned)},
            ":events": {"N": str(checkpoint.events)},
            ":rows": {"N": str(checkpoint.rows)},
            ":done": {"BOOL": checkpoint.done},
            ":updated": {"S": now_iso()},
        }
        expression = (
            "SET #until = :until, #segment = :segment, #pages = :pages, #scanned = :scanned, "
            "#events = :events, #rows = :rows, #done = :done, #updated = :updated"
        )
        if checkpoint.start_key is None:
            expression += " REMOVE #start"
        else:
            expression += ", #start = :start"
            values[":start"] = {"S": checkpoint.start_key}
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(rebuild_id), segment_sk(checkpoint.segment)),
                UpdateExpression=expression,
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            raise SegmentClaimedError(
                f"segment {checkpoint.segment} of rebuild {rebuild_id}: the claim of {owner} "
                "ran out and another worker took the segment over"
            ) from None

    def release_segment(self, rebuild_id: str, segment: int, owner: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=_key(run_pk(rebuild_id), segment_sk(segment)),
                UpdateExpression="SET #until = :zero",
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "claim_owner", "#until": "claim_until"},
                ExpressionAttributeValues={":owner": {"S": owner}, ":zero": {"N": "0"}},
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return

    def checkpoints(self, rebuild_id: str) -> list[SegmentCheckpoint]:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "#pk = :pk AND begins_with(#sk, :prefix)",
            "ExpressionAttributeNames": {"#pk": "pk", "#sk": "sk"},
            "ExpressionAttributeValues": {
                ":pk": {"S": run_pk(rebuild_id)},
                ":prefix": {"S": SEGMENT_PREFIX},
            },
            "ConsistentRead": True,
        }
        found: list[SegmentCheckpoint] = []
        while True:
            response = self.client.query(**request)
            found.extend(_checkpoint_from_item(item) for item in response["Items"])
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return found
            request["ExclusiveStartKey"] = last_key


def _checkpoint_from_item(item: Mapping[str, Any]) -> SegmentCheckpoint:
    """Build a checkpoint; a segment claimed but not yet flushed has only its claim."""
    return SegmentCheckpoint(
        segment=int(item["segment"]["N"]),
        start_key=_s(item, "start_key"),
        pages=_n(item, "pages") or 0,
        scanned=_n(item, "scanned") or 0,
        events=_n(item, "events") or 0,
        rows=_n(item, "rows") or 0,
        done=bool(item.get("done", {}).get("BOOL", False)),
    )


# Dirty streams ----------------------------------------------------------------------


def dirty_pk(rebuild_id: str, stream_id: str) -> str:
    return f"dirty#{rebuild_id}#{zlib.crc32(stream_id.encode()) % DIRTY_SHARDS:02d}"


class DynamoDBDirtyStreams:
    """Implements the ``DirtyStreams`` port in the control table."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def mark(self, rebuild_id: str, stream_id: str, stream_type: str) -> None:
        self.client.put_item(
            TableName=self.table_name,
            Item={
                **_key(dirty_pk(rebuild_id, stream_id), stream_id),
                "stream_type": {"S": stream_type},
                "expires_at": {"N": str(int(time.time()) + DIRTY_MARK_TTL_SECONDS)},
            },
        )

    def marked(self, rebuild_id: str) -> Iterator[tuple[str, str]]:
        for shard in range(DIRTY_SHARDS):
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "#pk = :pk",
                "ExpressionAttributeNames": {"#pk": "pk"},
                "ExpressionAttributeValues": {":pk": {"S": f"dirty#{rebuild_id}#{shard:02d}"}},
                "ConsistentRead": True,
            }
            while True:
                response = self.client.query(**request)
                for item in response["Items"]:
                    yield item["sk"]["S"], item["stream_type"]["S"]
                last_key = response.get("LastEvaluatedKey")
                if not last_key:
                    break
                request["ExclusiveStartKey"] = last_key


# Pointer cache ----------------------------------------------------------------------


@dataclass
class _Cached:
    pointer: ProjectionPointer
    loaded_at: float


class ProjectionDirectory:
    """Pointers cached for ``ttl_seconds``, so a request or a record costs no extra read.

    A rebuild waits longer than ``ttl_seconds`` after each pointer change before it
    relies on the change (see :mod:`projections.rebuild`). Projectors keep writing
    the previous table for ``2 * ttl_seconds`` after a switch, for readers whose
    cache still names it.
    """

    def __init__(
        self,
        source: Any,
        ttl_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.wall_clock = wall_clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def pointer(self, projection: str) -> ProjectionPointer:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(projection)
        if cached is not None and now - cached.loaded_at < self.ttl_seconds:
            return cached.pointer
        pointer: ProjectionPointer = self.source.pointer(projection)
        with self._lock:
            self._cache[projection] = _Cached(pointer, now)
        return pointer

    def live_table(self, projection: str) -> str:
        return self.pointer(projection).live_table

    def write_targets(self, projection: str) -> list[str]:
        return self.pointer(projection).write_targets(self.wall_clock(), 2 * self.ttl_seconds)

    def invalidate(self, projection: str) -> None:
        with self._lock:
            self._cache.pop(projection, None)


# Generation tables -------------------------------------------------------------------


def generation_table_name(base_table: str, generation: int) -> str:
    return f"{base_table}{GENERATION_SUFFIX}{generation}"


class DynamoDBTableGenerations:
    """Implements the ``TableGenerations`` port: tables shaped like the live one.

    The shape (keys, billing mode, encryption, then the global secondary indexes) is
    copied from ``DescribeTable`` of the template's table. The indexes are added
    after the bulk load: building an index over loaded rows costs DynamoDB Local
    about a third of the CPU that keeping it current row by row does, and AWS bills
    the same index writes either way. Point-in-time recovery is not switched on: a
    generation can always be rebuilt from the event log.
    """

    def __init__(self, client: DynamoDBClient, *, wait_delay: int = 1) -> None:
        self.client = client
        self.wait_delay = wait_delay

    def create_generation(self, base_table: str, generation: int) -> str:
        name = generation_table_name(base_table, generation)
        described = self.client.describe_table(TableName=base_table)["Table"]
        request = create_table_request(described, name)
        try:
            self.client.create_table(**request)
        except self.client.exceptions.ResourceInUseException:
            # Left over from a start that crashed before the pointers named it: no
            # projector has written to it, but it may hold a partial earlier attempt.
            self.delete_table(name)
            self.client.create_table(**request)
        self.client.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": 600}
        )
        logger.info("generation table created", extra={"table": name, "base_table": base_table})
        return name

    def add_indexes(self, base_table: str, table_name: str) -> bool:
        base = self.client.describe_table(TableName=base_table)["Table"]
        wanted = base.get("GlobalSecondaryIndexes", [])
        while True:
            table = self.client.describe_table(TableName=table_name)["Table"]
            present = {
                index["IndexName"]: index for index in table.get("GlobalSecondaryIndexes", [])
            }
            missing = [index for index in wanted if index["IndexName"] not in present]
            if not missing:
                return all(index.get("IndexStatus") == "ACTIVE" for index in present.values())
            # AWS creates one index per UpdateTable call, and takes the next call once
            # the table is ACTIVE again and the earlier index is backfilling. DynamoDB
            # Local takes it only once the earlier index is ACTIVE. Asking too early
            # costs more than waiting: botocore retries the LimitExceededException
            # with back-off before the call returns.
            starting = [
                index
                for index in present.values()
                if index.get("IndexStatus") == "CREATING" and not index.get("Backfilling")
            ]
            if (
                table.get("TableStatus") != "ACTIVE"
                or starting
                or not self._create_index(
                    table, table_name, base["AttributeDefinitions"], missing[0]
                )
            ):
                return False

    def _create_index(
        self,
        table: Mapping[str, Any],
        table_name: str,
        definitions: list[Any],
        index: Mapping[str, Any],
    ) -> bool:
        names = {key["AttributeName"] for key in index["KeySchema"]}
        create: dict[str, Any] = {
            "IndexName": index["IndexName"],
            "KeySchema": index["KeySchema"],
            "Projection": index["Projection"],
        }
        billing = (table.get("BillingModeSummary") or {}).get("BillingMode", "PAY_PER_REQUEST")
        if billing == "PROVISIONED":
            create["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
        try:
            self.client.update_table(
                TableName=table_name,
                AttributeDefinitions=[
                    definition for definition in definitions if definition["AttributeName"] in names
                ],
                GlobalSecondaryIndexUpdates=[{"Create": create}],  # type: ignore[typeddict-item]
            )
        except (
            self.client.exceptions.ResourceInUseException,
            self.client.exceptions.LimitExceededException,
        ):
            # Another finisher started it, or AWS is still busy with the table: ask again.
            return False
        logger.info(
            "index creation started", extra={"table": table_name, "index": index["IndexName"]}
        )
        return True

    def delete_table(self, table_name: str) -> None:
        try:
            self.client.delete_table(TableName=table_name)
        except self.client.exceptions.ResourceNotFoundException:
            return
        self.client.get_waiter("table_not_exists").wait(
            TableName=table_name, WaiterConfig={"Delay": self.wait_delay, "MaxAttempts": 600}
        )
        logger.info("generation table deleted", extra={"table": table_name})


def create_table_request(described: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Build a ``CreateTable`` request for an empty copy of a described table, without
    its global secondary indexes (see :meth:`DynamoDBTableGenerations.add_indexes`)."""
    billing = described.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST")
    local_indexes = [
        {
            "IndexName": index["IndexName"],
            "KeySchema": index["KeySchema"],
            "Projection": index["Projection"],
        }
        for index in described.get("LocalSecondaryIndexes", [])
    ]
    # DynamoDB rejects attribute definitions that no key of the new table uses.
    used = {key["AttributeName"] for key in described["KeySchema"]} | {
        key["AttributeName"] for index in local_indexes for key in index["KeySchema"]
    }
    request: dict[str, Any] = {
        "TableName": name,
        "AttributeDefinitions": [
            definition
            for definition in described["AttributeDefinitions"]
            if definition["AttributeName"] in used
        ],
        "KeySchema": described["KeySchema"],
        "BillingMode": billing,
    }
    if billing == "PROVISIONED":
        request["ProvisionedThroughput"] = _throughput(described["ProvisionedThroughput"])
    if local_indexes:
        request["LocalSecondaryIndexes"] = local_indexes
    if described.get("SSEDescription", {}).get("Status") in ("ENABLED", "ENABLING"):
        request["SSESpecification"] = {"Enabled": True}
    return request


def _throughput(described: Mapping[str, Any]) -> dict[str, int]:
    return {
        "ReadCapacityUnits": int(described["ReadCapacityUnits"]),
        "WriteCapacityUnits": int(described["WriteCapacityUnits"]),
    }
