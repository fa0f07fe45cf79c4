"""Stream handler: applies committed tips from the events table to the read models.

The event source mapping delivers tip records only (filter criteria in the
template). Each record is processed on its own and failures are reported per
record, so one bad record is retried, bisected and finally sent to the DLQ
without stalling the shard.

Each read model's pointer names the tables to keep current (see
:mod:`projections.live`); a commit is applied to each under its own version guard.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from adapters.composition import build_order_services
from adapters.eventstore.items import KIND_TIP, tip_from_item
from application.ports import Tip
from projections.projector import ProjectionOutcome

logger = Logger(service="orders")
services = build_order_services()
read_side = services.read_side
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


live_projector = read_side.live_projector(services.orders)


def project_tip(tip: Tip) -> list[ProjectionOutcome]:
    """Apply one tip to every table of every read model that folds its stream type."""
    return live_projector.project_tip(tip)


def record_handler(record: DynamoDBRecord) -> None:
    image = record.raw_event.get("dynamodb", {}).get("NewImage")
    if not image or image.get("kind", {}).get("S") != KIND_TIP:
        # The filter criteria should have dropped it; nothing to apply.
        logger.debug("record is not a tip, skipped", extra={"event_id": record.event_id})
        return
    tip = tip_from_item(image)
    for outcome in project_tip(tip):
        logger.info(
            "tip projected",
            extra={
                "order_id": tip.stream_id,
                "stream_id": tip.stream_id,
                "version": tip.version,
                "projection": outcome.projection,
                "table": outcome.table,
                "applied": outcome.applied,
                "skipped": outcome.skipped,
                "filled": outcome.filled,
                "sequence_number": record.dynamodb.sequence_number if record.dynamodb else None,
            },
        )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
