"""Emulate a Lambda event source mapping on a DynamoDB stream of DynamoDB Local.

One ``StreamPoller`` thread per mapping reads every shard with the ``dynamodbstreams``
API. A child shard waits until its parent is read to the end. Records that pass the
mapping's FilterCriteria are batched, and the function is invoked with
``{"Records": [...]}``.

Failure handling follows Lambda's, with these local choices:

- A function error with BisectBatchOnFunctionError splits the batch in two and retries
  the halves in order; a split does not use up a retry.
- With ReportBatchItemFailures the records before the lowest reported sequence number
  are done; the rest of the batch is retried (one retry used). A response naming an
  item that is not in the batch fails the whole batch, as on Lambda.
- A batch still failing after MaximumRetryAttempts retries is described in a message to
  the OnFailure SQS queue (the records themselves are not in it, as on Lambda) and
  the shard moves on.
- Retries wait ``retry_delay`` doubling up to ``max_retry_delay``; while a shard
  retries, the mapping's other shards wait too (Lambda would process them in parallel;
  DynamoDB Local gives a table one open shard).
- Records are re-read in the same batches after a retry; Lambda may add newer records.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.local.checkpoints import CheckpointStore, ShardPosition
from infra.local.event_pattern import matches_any
from infra.local.runner import Invoker
from infra.local.stream_mapping import StreamMapping
from infra.local.template import LOCAL_REGION

logger = logging.getLogger("orders.local.streams")

# How long an idle poller sleeps between reads of a shard. Short enough that a
# committed event reaches the read model well within 2 s, cheap on DynamoDB Local.
DEFAULT_POLL_INTERVAL = 0.15
DEFAULT_RETRY_DELAY = 0.2
DEFAULT_MAX_RETRY_DELAY = 2.0
# How often the shard list is read again when no shard closed.
SHARD_REFRESH_INTERVAL = 1.0
# GetRecords returns at most 1000 records.
GET_RECORDS_LIMIT = 1000

FailureSink = Callable[[str, dict[str, Any]], None]
"""Callable that sends (destination ARN, on-failure message), e.g. to an SQS queue."""


class StreamPollerError(RuntimeError):
    """The mapping's stream could not be found or read."""


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    closed: bool = False
    """GetRecords returned no next iterator: nothing more will be written to it."""
    finished: bool = False
    read_through: str | None = None
    """The last sequence number read into ``pending`` (or past it, when filtered out)."""
    checkpoint: str | None = None
    """The last sequence number handled for good, as saved in the checkpoint store."""
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    pending_since: float | None = None


@dataclass
class _Attempt:
    records: list[dict[str, Any]]
    retries: int = 0


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    failed_from: int | None = None
    """With ReportBatchItemFailures: the index of the lowest failed record."""
    function_error: str | None = None
    detail: str = ""
    request_id: str = ""


@dataclass
class PollerStats:
    invocations: int = 0
    records_delivered: int = 0
    records_filtered_out: int = 0
    retries: int = 0
    bisects: int = 0
    batches_sent_to_failure_destination: int = 0
    idle_cycles: int = 0


class StreamPoller:
    """One event source mapping: polls its stream and invokes its function."""

    def __init__(
        self,
        mapping: StreamMapping,
        *,
        invoker: Invoker,
        function_arn: str,
        dynamodb_client: Any,
        streams_client: Any,
        checkpoints: CheckpointStore,
        failure_sink: FailureSink | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_retry_delay: float = DEFAULT_MAX_RETRY_DELAY,
        batching_window: float | None = None,
    ) -> None:
        self.mapping = mapping
        self.invoker = invoker
        self.function_arn = function_arn
        self.dynamodb = dynamodb_client
        self.streams = streams_client
        self.checkpoints = checkpoints
        self.failure_sink = failure_sink
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.batching_window = (
            mapping.batching_window if batching_window is None else batching_window
        )
        self.stats = PollerStats()
        self.stream_arn = ""
        self._shards: dict[str, _Shard] = {}
        self._initial_shards: set[str] | None = None
        self._shards_refreshed_at = 0.0
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.mapping.mapping_id

    # Lifecycle ---------------------------------------------------------------------

    def start(self) -> StreamPoller:
        self.stream_arn = self._latest_stream_arn()
        self._thread = threading.Thread(target=self._run, name=f"poller-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                logger.warning("%s: the poller did not stop within %.0f s", self.name, timeout)
            self._thread = None

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until two full polls in a row found nothing new and nothing pending."""
        deadline = time.monotonic() + timeout
        with self._idle:
            target = self.stats.idle_cycles + 2
            while self.stats.idle_cycles < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    return False
                self._idle.wait(remaining)
        return True

    def _latest_stream_arn(self) -> str:
        try:
            table = self.dynamodb.describe_table(TableName=self.mapping.table_name)["Table"]
        except ClientError as error:
            raise StreamPollerError(
                f"{self.name}: cannot describe the table {self.mapping.table_name!r} "
                f"({error}); is it declared in the template and created?"
            ) from None
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise StreamPollerError(
                f"{self.name}: the table {self.mapping.table_name!r} has no stream; give it "
                "a StreamSpecification in the template"
            )
        return str(arn)

    # Main loop ---------------------------------------------------------------------

    def _run(self) -> None:
        failures_in_a_row = 0
        while not self._stop.is_set():
            try:
                read_any = self._poll_once()
                failures_in_a_row = 0
            except Exception as error:
                failures_in_a_row += 1
                if failures_in_a_row in (1, 10) or failures_in_a_row % 100 == 0:
                    if isinstance(error, BotoCoreError | ClientError | OSError):
                        logger.warning("%s: stream access failed (%s); retrying", self.name, error)
                    else:
                        logger.exception("%s: unexpected poller error; retrying", self.name)
                self._rewind_to_checkpoints()
                self._stop.wait(min(self.max_retry_delay, self.poll_interval * failures_in_a_row))
                continue
            if read_any:
                continue
            if not any(shard.pending for shard in self._shards.values()):
                with self._idle:
                    self.stats.idle_cycles += 1
                    self._idle.notify_all()
            self._stop.wait(self._sleep_time())

    def _sleep_time(self) -> float:
        waits = [self.poll_interval]
        for shard in self._shards.values():
            if shard.pending_since is not None:
                due = shard.pending_since + self.batching_window - time.monotonic()
                waits.append(max(0.0, due))
        return min(waits)

    def _poll_once(self) -> bool:
        """Read and process what is there; return whether anything was read or pending."""
        if time.monotonic() - self._shards_refreshed_at >= SHARD_REFRESH_INTERVAL:
            self._refresh_shards()
        read_any = False
        for shard in list(self._shards.values()):
            if self._stop.is_set():
                break
            if shard.finished or not self._parent_done(shard):
                continue
            read_any = self._read(shard) or read_any
            self._dispatch(shard)
            if shard.closed and not shard.pending and not shard.finished:
                shard.finished = True
                self._save(shard, shard.read_through)
                logger.info("%s: shard %s is closed and fully read", self.name, shard.shard_id)
                self._shards_refreshed_at = 0.0
        return read_any

    def _parent_done(self, shard: _Shard) -> bool:
        parent = self._shards.get(shard.parent_id or "")
        return parent is None or parent.finished

    # Shards ------------------------------------------------------------------------

    def _refresh_shards(self) -> None:
        described: list[dict[str, Any]] = []
        request: dict[str, Any] = {"StreamArn": self.stream_arn}
        while True:
            description = self.streams.describe_stream(**request)["StreamDescription"]
            described.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            request["ExclusiveStartShardId"] = last
        self._shards_refreshed_at = time.monotonic()

        saved = self.checkpoints.positions(self.name, self.stream_arn)
        first_look = self._initial_shards is None
        if first_look:
            self._initial_shards = {shard["ShardId"] for shard in described}
        for entry in described:
            shard_id = entry["ShardId"]
            if shard_id in self._shards:
                continue
            shard = _Shard(shard_id=shard_id, parent_id=entry.get("ParentShardId"))
            position = saved.get(shard_id)
            if position is not None:
                shard.finished = position.finished
                shard.read_through = shard.checkpoint = position.sequence_number
            elif (
                first_look
                and self.mapping.starting_position == "LATEST"
                and "EndingSequenceNumber" in entry.get("SequenceNumberRange", {})
            ):
                # LATEST skips whatever was written before the mapping existed, closed
                # shards included.
                shard.finished = True
            self._shards[shard_id] = shard
        listed = {entry["ShardId"] for entry in described}
        for shard_id in set(self._shards) - listed:
            del self._shards[shard_id]
        self.checkpoints.forget_shards(self.name, listed)

    def _iterator(self, shard: _Shard) -> str:
        request: dict[str, Any] = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.read_through is not None:
            request.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.read_through
            )
        elif (
            self.mapping.starting_position == "LATEST"
            and self._initial_shards is not None
            and shard.shard_id in self._initial_shards
        ):
            request["ShardIteratorType"] = "LATEST"
        else:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        iterator: str = self.streams.get_shard_iterator(**request)["ShardIterator"]
        return iterator

    def _rewind_to_checkpoints(self) -> None:
        """Forget what was read but not handled; read again from the last checkpoints."""
        for shard in self._shards.values():
            shard.iterator = None
            shard.pending.clear()
            shard.pending_since = None
            if not shard.finished:
                shard.closed = False
                shard.read_through = shard.checkpoint
        self._shards_refreshed_at = 0.0

    def _read(self, shard: _Shard) -> bool:
        if shard.closed:
            return False
        response = None
        for _ in range(2):
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            try:
                response = self.streams.get_records(
                    ShardIterator=shard.iterator, Limit=GET_RECORDS_LIMIT
                )
                break
            except ClientError as error:
                code = error.response.get("Error", {}).get("Code", "")
                if code not in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                    raise
                # DynamoDB Local numbers records across all tables, and a TRIM_HORIZON
                # iterator taken on an empty shard fails this way once another table
                # wrote first; a fresh iterator reads fine.
                logger.debug("%s: %s on shard %s; re-reading", self.name, code, shard.shard_id)
                if code == "TrimmedDataAccessException" and shard.read_through is not None:
                    logger.warning(
                        "%s: records after %s in shard %s were trimmed; reading from the "
                        "oldest record left",
                        self.name,
                        shard.read_through,
                        shard.shard_id,
                    )
                    shard.read_through = None
                shard.iterator = None
        if response is None:
            return False
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:
            shard.closed = True
        records = response.get("Records", [])
        if not records:
            return False
        for raw in records:
            record = lambda_record(raw, self.stream_arn)
            if not self.mapping.filters or matches_any(self.mapping.filters, record):
                if shard.pending_since is None:
                    shard.pending_since = time.monotonic()
                shard.pending.append(record)
            else:
                self.stats.records_filtered_out += 1
        shard.read_through = records[-1]["dynamodb"]["SequenceNumber"]
        if not shard.pending:
            # Everything read was filtered out: that is progress too.
            self._save(shard, shard.read_through)
        return True

    # Batches -----------------------------------------------------------------------

    def _dispatch(self, shard: _Shard) -> None:
        while shard.pending and not self._stop.is_set():
            full = len(shard.pending) >= self.mapping.batch_size
            waited = time.monotonic() - (shard.pending_since or 0.0)
            if not (full or shard.closed or waited >= self.batching_window):
                return
            size = min(self.mapping.batch_size, len(shard.pending))
            batch = [shard.pending.popleft() for _ in range(size)]
            shard.pending_since = time.monotonic() if shard.pending else None
            if not self._process(shard, batch):
                # Stopped mid-retry: the unprocessed records are read again next time.
                return
            if not shard.pending:
                self._save(shard, shard.read_through)

    def _process(self, shard: _Shard, batch: list[dict[str, Any]]) -> bool:
        """Deliver one batch until done or discarded; False if the poller was stopped."""
        work = deque([_Attempt(batch)])
        while work:
            if self._stop.is_set():
                return False
            attempt = work[0]
            outcome = self._invoke(attempt.records)
            if outcome.ok:
                self._save(shard, _sequence(attempt.records[-1]))
                work.popleft()
                continue
            if outcome.failed_from is not None:
                if outcome.failed_from > 0:
                    self._save(shard, _sequence(attempt.records[outcome.failed_from - 1]))
                retry = _Attempt(attempt.records[outcome.failed_from :], attempt.retries + 1)
                reason = (
                    f"the function reported record {_sequence(retry.records[0])} as failed"
                )
            elif self.mapping.bisect and len(attempt.records) > 1:
                middle = len(attempt.records) // 2
                work.popleft()
                work.appendleft(_Attempt(attempt.records[middle:], attempt.retries))
                work.appendleft(_Attempt(attempt.records[:middle], attempt.retries))
                self.stats.bisects += 1
                logger.warning(
                    "%s: %s on a batch of %d records; bisecting into %d + %d",
                    self.name,
                    outcome.detail,
                    len(attempt.records),
                    middle,
                    len(attempt.records) - middle,
                )
                continue
            else:
                retry = _Attempt(attempt.records, attempt.retries + 1)
                reason = outcome.detail
            if 0 <= self.mapping.max_retries < retry.retries:
                self._send_to_failure_destination(shard, retry, outcome)
                self._save(shard, _sequence(retry.records[-1]))
                work.popleft()
                continue
            work[0] = retry
            self.stats.retries += 1
            limit = "unlimited" if self.mapping.max_retries < 0 else self.mapping.max_retries
            logger.warning(
                "%s: %s; retry %d/%s of %d records from %s",
                self.name,
                reason,
                retry.retries,
                limit,
                len(retry.records),
                _sequence(retry.records[0]),
            )
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (retry.retries - 1))
            if self._stop.wait(delay):
                return False
        return True

    def _invoke(self, records: list[dict[str, Any]]) -> _Outcome:
        try:
            result = self.invoker.invoke({"Records": records})
        except Exception as error:
            return _Outcome(ok=False, function_error="Unhandled", detail=f"invoke failed: {error}")
        self.stats.invocations += 1
        if result.failed:
            payload = result.payload if isinstance(result.payload, dict) else {}
            return _Outcome(
                ok=False,
                function_error=result.function_error,
                detail=f"function error {payload.get('errorType', result.function_error)}: "
                f"{_first_line(payload.get('errorMessage', ''))}",
                request_id=result.request_id,
            )
        if self.mapping.report_item_failures:
            outcome = _partial_outcome(result.payload, records)
            if not outcome.ok:
                return _Outcome(
                    ok=False,
                    failed_from=outcome.failed_from,
                    detail=outcome.detail,
                    request_id=result.request_id,
                )
            if outcome.failed_from is not None:
                self.stats.records_delivered += outcome.failed_from
                return _Outcome(
                    ok=False,
                    failed_from=outcome.failed_from,
                    detail=outcome.detail,
                    request_id=result.request_id,
                )
        self.stats.records_delivered += len(records)
        return _Outcome(ok=True, request_id=result.request_id)

    def _send_to_failure_destination(
        self, shard: _Shard, attempt: _Attempt, outcome: _Outcome
    ) -> None:
        first, last = attempt.records[0], attempt.records[-1]
        if self.failure_sink is None or self.mapping.on_failure_arn is None:
            logger.error(
                "%s: dropping %d records %s..%s after %d retries (%s); no OnFailure destination",
                self.name,
                len(attempt.records),
                _sequence(first),
                _sequence(last),
                attempt.retries - 1,
                outcome.detail,
            )
            return
        message = failure_message(
            function_arn=self.function_arn,
            stream_arn=self.stream_arn,
            shard_id=shard.shard_id,
            records=attempt.records,
            invoke_count=attempt.retries,
            function_error=outcome.function_error,
            request_id=outcome.request_id,
        )
        self.failure_sink(self.mapping.on_failure_arn, message)
        self.stats.batches_sent_to_failure_destination += 1
        logger.error(
            "%s: sent %d records %s..%s to %s after %d retries (%s)",
            self.name,
            len(attempt.records),
            _sequence(first),
            _sequence(last),
            self.mapping.on_failure_arn,
            attempt.retries - 1,
            outcome.detail,
        )

    def _save(self, shard: _Shard, sequence_number: str | None) -> None:
        if sequence_number is None and not shard.finished:
            return
        shard.checkpoint = sequence_number
        self.checkpoints.save(
            self.name,
            self.stream_arn,
            shard.shard_id,
            ShardPosition(sequence_number=sequence_number, finished=shard.finished),
        )


def _first_line(message: Any, limit: int = 200) -> str:
    """The function's own output has the full traceback; a log line needs the gist."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sequence(record: dict[str, Any]) -> str:
    sequence: str = record["dynamodb"]["SequenceNumber"]
    return sequence


def _partial_outcome(payload: Any, records: list[dict[str, Any]]) -> _Outcome:
    """Read a ReportBatchItemFailures response the way Lambda does."""
    if not isinstance(payload, dict):
        return _Outcome(ok=True)
    failures = payload.get("batchItemFailures")
    if not failures:
        return _Outcome(ok=True)
    if not isinstance(failures, list):
        return _Outcome(ok=False, detail="batchItemFailures is not a list; whole batch failed")
    index_of = {_sequence(record): index for index, record in enumerate(records)}
    indexes = []
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in index_of:
            return _Outcome(
                ok=False,
                detail=f"batchItemFailures names {identifier!r}, which is not in the batch; "
                "whole batch failed",
            )
        indexes.append(index_of[identifier])
    lowest = min(indexes)
    return _Outcome(
        ok=True,
        failed_from=lowest,
        detail=f"the function reported {len(indexes)} failed records",
    )


def lambda_record(raw: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """Shape a GetRecords record as Lambda delivers it.

    boto3 parses timestamps into datetimes and binary attributes into bytes; Lambda's
    JSON has epoch seconds and base64 text. DynamoDB Local leaves out ``eventSourceARN``
    and names its region ``ddblocal``.
    """
    record: dict[str, Any] = _to_json(raw)
    record["eventSource"] = "aws:dynamodb"
    record["awsRegion"] = LOCAL_REGION
    record["eventSourceARN"] = stream_arn
    return record


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_json(item) for item in value]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return int(value.timestamp())
    return value


def failure_message(
    *,
    function_arn: str,
    stream_arn: str,
    shard_id: str,
    records: list[dict[str, Any]],
    invoke_count: int,
    function_error: str | None,
    request_id: str,
) -> dict[str, Any]:
    """The on-failure message Lambda sends for a discarded stream batch."""
    response_context: dict[str, Any] = {"statusCode": 200, "executedVersion": "$LATEST"}
    if function_error:
        response_context["functionError"] = function_error
    return {
        "requestContext": {
            "requestId": request_id or str(uuid.uuid4()),
            "functionArn": function_arn,
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": invoke_count,
        },
        "responseContext": response_context,
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "DDBStreamBatchInfo": {
            "shardId": shard_id,
            "startSequenceNumber": _sequence(records[0]),
            "endSequenceNumber": _sequence(records[-1]),
            "approximateArrivalOfFirstRecord": _arrival(records[0]),
            "approximateArrivalOfLastRecord": _arrival(records[-1]),
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


def _arrival(record: dict[str, Any]) -> str | None:
    seconds = record["dynamodb"].get("ApproximateCreationDateTime")
    if seconds is None:
        return None
    with contextlib.suppress(TypeError, ValueError, OverflowError):
        return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None
