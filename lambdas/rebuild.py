"""SQS handler of a distributed rebuild: one message per parallel-Scan segment.

``orders projections rebuild --distributed`` creates the new tables, points the
read models' ``building`` at them and sends ``{"rebuild_id": ..., "segment": n}``
for every segment. This function replays its segment from the segment's
checkpoint. When the invocation is about to run out of time it checkpoints, sends
the same message again and returns, so a segment of any size finishes over
several invocations. The segment that finds every segment done takes the run on
towards the switch (``RebuildCoordinator.finish``). While the run waits for
projectors or for its indexes, a delayed ``{"rebuild_id": ..., "segment": null}``
message comes back to take the next step. A second attempt at a step does nothing.
"""

from __future__ import annotations

import math
import os
from typing import Annotated, Any

import boto3
from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from adapters.composition import REBUILD_QUEUE_URL, build_rebuild_services, require_env
from adapters.eventstore.dynamodb import default_client_config
from adapters.settings import number_setting
from projections.rebuild import (
    ABANDONED,
    DEFAULT_FLUSH_EVENTS,
    MAX_SEGMENTS,
    SWITCHED,
    FinishState,
    finish_message_body,
)

logger = Logger(service="orders")
services = build_rebuild_services()
coordinator = services.coordinator()
queue_url = require_env(REBUILD_QUEUE_URL)
sqs = boto3.client("sqs", config=default_client_config())
# A failed segment goes back to the queue (after three tries to its DLQ) as a reported
# item failure rather than as a function error.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
# Events buffered between checkpoints, and items per Scan page (unset: DynamoDB's 1 MB).
flush_events = int(
    number_setting(os.environ, "REBUILD_FLUSH_EVENTS", DEFAULT_FLUSH_EVENTS, minimum=1, maximum=1e6)
)
page_items = int(number_setting(os.environ, "REBUILD_SCAN_PAGE_ITEMS", 0, minimum=0, maximum=1e5))

# Time left when a segment stops to checkpoint and hand over to a new invocation:
# one flush (a few pages and their writes) has to fit in it.
HANDOVER_MILLISECONDS = 120_000
# How long a finished rebuild waits between checks of its new tables' indexes.
INDEX_CHECK_DELAY_SECONDS = 30
MAX_SQS_DELAY_SECONDS = 900
_invocation: dict[str, LambdaContext] = {}


class SegmentMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rebuild_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{12}$")]
    segment: Annotated[int | None, Field(strict=True, ge=0, lt=MAX_SEGMENTS)]
    """None: no segment to scan, only check whether the run can switch."""


def _time_is_short() -> bool:
    context = _invocation.get("context")
    return context is not None and context.get_remaining_time_in_millis() < HANDOVER_MILLISECONDS


def record_handler(record: SQSRecord) -> None:
    message = SegmentMessage.model_validate_json(record.body)
    extra: dict[str, Any] = {"rebuild_id": message.rebuild_id, "segment": message.segment}
    run = services.read_side.control.load_run(message.rebuild_id)
    if run is None or run.status in (SWITCHED, ABANDONED):
        logger.info("rebuild is over; message dropped", extra=extra)
        return
    if message.segment is not None:
        if message.segment >= run.total_segments:
            raise ValueError(f"segment {message.segment} of a {run.total_segments}-segment rebuild")
        coordinator.wait_until_scan_may_start(run)
        rebuilder = services.segment_rebuilder(
            run, flush_events=flush_events, page_limit=page_items or None
        )
        checkpoint = rebuilder.run(message.segment, should_stop=_time_is_short)
        extra.update(
            pages=checkpoint.pages,
            events=checkpoint.events,
            rows=checkpoint.rows,
            done=checkpoint.done,
        )
        if not checkpoint.done:
            sqs.send_message(QueueUrl=queue_url, MessageBody=record.body)
            logger.info("segment handed over to a new invocation", extra=extra)
            return
        logger.info("segment done", extra=extra)
    state = coordinator.finish(run)
    if state in (FinishState.WAITING, FinishState.INDEXING):
        delay = (
            INDEX_CHECK_DELAY_SECONDS
            if state == FinishState.INDEXING
            else math.ceil(coordinator.propagation_seconds)
        )
        sqs.send_message(
            QueueUrl=queue_url,
            MessageBody=finish_message_body(run.rebuild_id),
            DelaySeconds=min(delay, MAX_SQS_DELAY_SECONDS),
        )
    logger.info(f"rebuild {state}", extra={**extra, "tables": dict(run.tables)})


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    _invocation["context"] = context
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
