"""Stream handler: applies committed tips from the events table to the read models.

The event source mapping delivers tip records only (filter criteria in the
template). Each record is processed on its own and failures are reported per
record, so one bad record is retried, bisected and finally sent to the DLQ
without stalling the shard.
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
from eventsourcing.utils import get_topic

from adapters.composition import build_order_services
from adapters.eventstore.items import KIND_TIP, tip_from_item
from domain.order import Order
from projections.projector import OrderSummaryProjector

logger = Logger(service="orders")
services = build_order_services()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)

ORDER_STREAM_TYPE = get_topic(Order)


def _read_events(stream_id: str, after: int, up_to: int) -> Any:
    return services.orders.recorder.select_events(stream_id, gt=after, lte=up_to)


projector = OrderSummaryProjector(
    store=services.summaries,
    decode=services.orders.mapper.to_domain_event,
    read_events=_read_events,
)


def record_handler(record: DynamoDBRecord) -> None:
    image = record.raw_event.get("dynamodb", {}).get("NewImage")
    if not image or image.get("kind", {}).get("S") != KIND_TIP:
        # The filter criteria should have dropped it; nothing to apply.
        logger.debug("record is not a tip, skipped", extra={"event_id": record.event_id})
        return
    tip = tip_from_item(image)
    if tip.stream_type != ORDER_STREAM_TYPE:
        return

    outcome = projector.project(tip)
    logger.info(
        "tip projected",
        extra={
            "order_id": tip.stream_id,
            "stream_id": tip.stream_id,
            "version": tip.version,
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
