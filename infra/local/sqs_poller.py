"""Emulate a Lambda event source mapping on an SQS queue of moto.

Each ``Type: SQS`` event of a function is one mapping. An ``SqsPoller`` runs a few
poller threads (``DEFAULT_POLLERS``, at most the mapping's
``ScalingConfig.MaximumConcurrency`` and the function's ``ReservedConcurrentExecutions``),
so several batches of one queue are in the function at once, as on Lambda. Each thread:

- long-polls the queue (``WaitTimeSeconds`` 1, so a stop takes at most about a second)
  for up to ``BatchSize`` messages, receiving again within
  ``MaximumBatchingWindowInSeconds`` while the batch is not full;
- drops (deletes) messages that FilterCriteria rejects, as Lambda does;
- invokes the function with Lambda's SQS event shape (``Records`` with ``messageId``,
  ``receiptHandle``, ``body``, ``attributes``, ``messageAttributes``, ``md5OfBody``,
  ``eventSource``, ``eventSourceARN``, ``awsRegion``);
- on success deletes the batch. With ``ReportBatchItemFailures`` it deletes all but the
  ``batchItemFailures``. As on Lambda, a response that names a message outside the
  batch fails the whole batch. On a function error it deletes nothing.

Local choice: Lambda leaves a failed message invisible for the queue's whole
``VisibilityTimeout`` (minutes in the template). Locally a failed message is made visible
again after ``retry_visibility`` seconds (2 by default), so retries come quickly. SQS
itself (moto) moves a message to the queue's dead-letter queue once it has been received
``maxReceiveCount`` times; the poller logs when a failure was the last receive allowed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.local.event_pattern import EventPattern, PatternError, matches_any
from infra.local.runner import Invoker
from infra.local.template import LOCAL_REGION, Template, TemplateError

logger = logging.getLogger("orders.local.sqs")

DEFAULT_POLLERS = 3
DEFAULT_RETRY_VISIBILITY = 2
DEFAULT_WAIT_SECONDS = 1
RECEIVE_LIMIT = 10  # the maximum of ReceiveMessage and DeleteMessageBatch
MAX_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW = 300
_SUPPORTED = {
    "Queue",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "FunctionResponseTypes",
    "FilterCriteria",
    "ScalingConfig",
    "Enabled",
}


class SqsPollerError(RuntimeError):
    """Error raised when the mapping's queue is not found or cannot be read."""


@dataclass(frozen=True)
class SqsMapping:
    mapping_id: str
    """``Function/Event``: names the mapping in logs."""
    function_id: str
    queue_arn: str
    batch_size: int = 10
    batching_window: float = 0.0
    report_item_failures: bool = False
    filters: tuple[EventPattern, ...] = ()
    maximum_concurrency: int | None = None
    enabled: bool = True

    @property
    def queue_name(self) -> str:
        return self.queue_arn.rsplit(":", 1)[-1]


def sqs_mappings(template: Template) -> list[SqsMapping]:
    mappings = []
    for function_id, spec in template.functions().items():
        for event_name, properties in spec.events_of_type("SQS").items():
            mappings.append(parse_sqs_mapping(function_id, event_name, properties))
    return mappings


def parse_sqs_mapping(
    function_id: str, event_name: str, properties: Mapping[str, Any]
) -> SqsMapping:
    """Validate one resolved ``Type: SQS`` event's properties into a mapping."""
    where = f"{function_id}.Events.{event_name}"
    ignored = sorted(set(properties) - _SUPPORTED)
    if ignored:
        logger.warning("%s: the local SQS poller ignores %s", where, ", ".join(ignored))
    queue = str(properties.get("Queue", ""))
    if not queue.startswith("arn:aws:sqs:"):
        raise TemplateError(
            f"{where}: Queue must be a queue's ARN (!GetAtt Queue.Arn), got {queue!r}"
        )
    batch_size = _integer(properties.get("BatchSize", 10), "BatchSize", where, 1, MAX_BATCH_SIZE)
    window = _integer(
        properties.get("MaximumBatchingWindowInSeconds", 0),
        "MaximumBatchingWindowInSeconds",
        where,
        0,
        MAX_BATCHING_WINDOW,
    )
    if batch_size > RECEIVE_LIMIT and window < 1:
        raise TemplateError(
            f"{where}: a BatchSize over {RECEIVE_LIMIT} needs MaximumBatchingWindowInSeconds "
            "of at least 1, as on Lambda"
        )
    response_types = properties.get("FunctionResponseTypes") or []
    unknown = set(response_types) - {"ReportBatchItemFailures"}
    if unknown:
        raise TemplateError(f"{where}: unknown FunctionResponseTypes {sorted(unknown)}")
    scaling = properties.get("ScalingConfig") or {}
    maximum = scaling.get("MaximumConcurrency")
    return SqsMapping(
        mapping_id=f"{function_id}/{event_name}",
        function_id=function_id,
        queue_arn=queue,
        batch_size=batch_size,
        batching_window=float(window),
        report_item_failures="ReportBatchItemFailures" in response_types,
        filters=_filters(properties.get("FilterCriteria"), where),
        maximum_concurrency=(
            None
            if maximum is None
            else _integer(maximum, "ScalingConfig.MaximumConcurrency", where, 2, 1000)
        ),
        enabled=str(properties.get("Enabled", True)).strip().lower() != "false",
    )


def _integer(raw: Any, name: str, where: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise TemplateError(f"{where}: {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise TemplateError(f"{where}: {name} must be between {low} and {high}, got {value}")
    return value


def _filters(criteria: Any, where: str) -> tuple[EventPattern, ...]:
    if not criteria:
        return ()
    patterns = []
    for position, entry in enumerate(criteria.get("Filters", [])):
        text = entry.get("Pattern")
        if not isinstance(text, str):
            text = json.dumps(text)
        try:
            patterns.append(EventPattern.parse(text))
        except PatternError as error:
            raise TemplateError(f"{where}: FilterCriteria.Filters[{position}]: {error}") from None
    return tuple(patterns)


def poller_count(mapping: SqsMapping, reserved_concurrency: int | None, default: int) -> int:
    """How many batches of the queue may be in the function at once locally."""
    limits = [default]
    if mapping.maximum_concurrency is not None:
        limits.append(mapping.maximum_concurrency)
    if reserved_concurrency is not None:
        limits.append(reserved_concurrency)
    return max(1, min(limits))


# Records ------------------------------------------------------------------------------


def lambda_record(message: Mapping[str, Any], queue_arn: str) -> dict[str, Any]:
    """Shape a ReceiveMessage message as Lambda's SQS event delivers it."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": LOCAL_REGION,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [_base64(item) for item in value.get("BinaryListValues", [])],
        "dataType": value.get("DataType", "String"),
    }
    if "StringValue" in value:
        shaped["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        shaped["binaryValue"] = _base64(value["BinaryValue"])
    return shaped


def _base64(value: Any) -> str:
    raw = value if isinstance(value, bytes | bytearray) else str(value).encode()
    return base64.b64encode(raw).decode("ascii")


def _filter_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda filters on the body as JSON when it is JSON, else as a plain string."""
    view = dict(record)
    with contextlib.suppress(TypeError, ValueError):
        view["body"] = json.loads(record["body"])
    return view


@dataclass(frozen=True)
class _Outcome:
    failed_ids: frozenset[str]
    detail: str = ""


@dataclass
class SqsPollerStats:
    invocations: int = 0
    messages_delivered: int = 0
    messages_deleted: int = 0
    messages_filtered_out: int = 0
    messages_failed: int = 0
    in_flight: int = 0


class SqsPoller:
    """One SQS event source mapping: its poller threads and the function they invoke."""

    def __init__(
        self,
        mapping: SqsMapping,
        *,
        invoker: Invoker,
        sqs_client: Any,
        queue_url: str,
        pollers: int = DEFAULT_POLLERS,
        retry_visibility: int = DEFAULT_RETRY_VISIBILITY,
        wait_seconds: int = DEFAULT_WAIT_SECONDS,
    ) -> None:
        if pollers < 1:
            raise ValueError(f"pollers must be at least 1, got {pollers}")
        self.mapping = mapping
        self.invoker = invoker
        self.sqs = sqs_client
        self.queue_url = queue_url
        self.pollers = pollers
        self.retry_visibility = retry_visibility
        self.wait_seconds = wait_seconds
        self.stats = SqsPollerStats()
        self.max_receive_count: int | None = None
        self.dead_letter_queue: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def name(self) -> str:
        return self.mapping.mapping_id

    @property
    def busy(self) -> bool:
        with self._lock:
            return self.stats.in_flight > 0

    # Lifecycle ---------------------------------------------------------------------

    def start(self) -> SqsPoller:
        self._read_redrive_policy()
        for index in range(self.pollers):
            thread = threading.Thread(
                target=self._run, name=f"sqs-{self.name}-{index}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s: a poller did not stop within %.0f s", self.name, timeout)
        self._threads = []

    def _read_redrive_policy(self) -> None:
        try:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]
            )["Attributes"]
        except (BotoCoreError, ClientError) as error:
            raise SqsPollerError(
                f"{self.name}: cannot read the queue {self.mapping.queue_name!r} ({error}); "
                "is it declared in the template?"
            ) from None
        raw = attributes.get("RedrivePolicy")
        if raw:
            policy = json.loads(raw)
            self.max_receive_count = int(policy["maxReceiveCount"])
            self.dead_letter_queue = str(policy["deadLetterTargetArn"]).rsplit(":", 1)[-1]

    # Polling -----------------------------------------------------------------------

    def _run(self) -> None:
        failures_in_a_row = 0
        while not self._stop.is_set():
            try:
                messages = self._receive_batch()
                failures_in_a_row = 0
            except (BotoCoreError, ClientError) as error:
                failures_in_a_row += 1
                if failures_in_a_row in (1, 10) or failures_in_a_row % 100 == 0:
                    logger.warning(
                        "%s: receiving from %s failed (%s); retrying",
                        self.name,
                        self.mapping.queue_name,
                        error,
                    )
                self._stop.wait(min(2.0, 0.1 * failures_in_a_row))
                continue
            if not messages:
                continue
            with self._lock:
                self.stats.in_flight += 1
            try:
                self._process(messages)
            except Exception:
                logger.exception("%s: unexpected error while handling a batch", self.name)
            finally:
                with self._lock:
                    self.stats.in_flight -= 1

    def _receive_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.mapping.batching_window
        wait = self.wait_seconds
        while len(batch) < self.mapping.batch_size and not self._stop.is_set():
            response = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(RECEIVE_LIMIT, self.mapping.batch_size - len(batch)),
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            batch.extend(response.get("Messages", []))
            remaining = deadline - time.monotonic()
            if not batch or remaining <= 0:
                break
            wait = max(0, min(self.wait_seconds, int(remaining)))
        return batch

    def _process(self, messages: list[dict[str, Any]]) -> None:
        records = [lambda_record(message, self.mapping.queue_arn) for message in messages]
        if self.mapping.filters:
            kept = [r for r in records if matches_any(self.mapping.filters, _filter_view(r))]
            dropped = [r for r in records if r not in kept]
            if dropped:
                with self._lock:
                    self.stats.messages_filtered_out += len(dropped)
                self._delete(dropped)
            records = kept
            if not records:
                return
        outcome = self._invoke(records)
        failed = [record for record in records if record["messageId"] in outcome.failed_ids]
        done = [record for record in records if record["messageId"] not in outcome.failed_ids]
        self._delete(done)
        if failed:
            with self._lock:
                self.stats.messages_failed += len(failed)
            self._retry_later(failed, outcome.detail)

    def _invoke(self, records: list[dict[str, Any]]) -> _Outcome:
        every_id = frozenset(record["messageId"] for record in records)
        try:
            result = self.invoker.invoke({"Records": records})
        except Exception as error:
            return _Outcome(every_id, f"invoke failed: {error}")
        with self._lock:
            self.stats.invocations += 1
        if result.failed:
            payload = result.payload if isinstance(result.payload, dict) else {}
            message = str(payload.get("errorMessage", "")).strip().splitlines()
            return _Outcome(
                every_id,
                f"function error {payload.get('errorType', result.function_error)}: "
                f"{message[0][:200] if message else ''}",
            )
        with self._lock:
            self.stats.messages_delivered += len(records)
        if not self.mapping.report_item_failures:
            return _Outcome(frozenset())
        return _partial_outcome(result.payload, every_id)

    def _delete(self, records: list[dict[str, Any]]) -> None:
        for start in range(0, len(records), RECEIVE_LIMIT):
            chunk = records[start : start + RECEIVE_LIMIT]
            try:
                response = self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                        for index, record in enumerate(chunk)
                    ],
                )
            except (BotoCoreError, ClientError) as error:
                logger.warning(
                    "%s: deleting %d handled messages failed (%s); they will be delivered again",
                    self.name,
                    len(chunk),
                    error,
                )
                continue
            deleted = len(response.get("Successful", []))
            with self._lock:
                self.stats.messages_deleted += deleted
            for failure in response.get("Failed", []):
                logger.warning(
                    "%s: a handled message was not deleted (%s); it will be delivered again",
                    self.name,
                    failure.get("Message") or failure.get("Code"),
                )

    def _retry_later(self, records: list[dict[str, Any]], detail: str) -> None:
        for record in records:
            receives = int(record["attributes"].get("ApproximateReceiveCount", "1"))
            last = self.max_receive_count is not None and receives >= self.max_receive_count
            if last:
                logger.error(
                    "%s: message %s failed on receive %d of %d (%s); SQS moves it to %s",
                    self.name,
                    record["messageId"],
                    receives,
                    self.max_receive_count,
                    detail,
                    self.dead_letter_queue,
                )
            else:
                logger.warning(
                    "%s: message %s failed on receive %d%s (%s); retrying in %d s",
                    self.name,
                    record["messageId"],
                    receives,
                    f" of {self.max_receive_count}" if self.max_receive_count else "",
                    detail,
                    self.retry_visibility,
                )
            try:
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url,
                    ReceiptHandle=record["receiptHandle"],
                    VisibilityTimeout=self.retry_visibility,
                )
            except (BotoCoreError, ClientError) as error:
                logger.warning(
                    "%s: could not shorten the visibility of message %s (%s); it comes back "
                    "after the queue's visibility timeout",
                    self.name,
                    record["messageId"],
                    error,
                )


def _partial_outcome(payload: Any, every_id: frozenset[str]) -> _Outcome:
    """Read a ReportBatchItemFailures response the way Lambda does for SQS."""
    if not isinstance(payload, dict) or not payload.get("batchItemFailures"):
        return _Outcome(frozenset())
    failures = payload["batchItemFailures"]
    if not isinstance(failures, list):
        return _Outcome(every_id, "batchItemFailures is not a list; whole batch failed")
    failed = set()
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if identifier not in every_id:
            return _Outcome(
                every_id,
                f"batchItemFailures names {identifier!r}, which is not in the batch; "
                "whole batch failed",
            )
        failed.add(str(identifier))
    return _Outcome(frozenset(failed), f"the function reported {len(failed)} failed messages")
