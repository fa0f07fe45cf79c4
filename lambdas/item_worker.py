"""SQS handler: reserves one order line's stock per message (the saga's fan-out)."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from adapters.composition import build_order_services
from application.commands import EntityId, Sku
from application.ports import ReservationRequest
from application.saga import reserve_line

logger = Logger(service="orders")
services = build_order_services()
processor = BatchProcessor(event_type=EventType.SQS)


class ReservationMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order_id: EntityId
    sku: Sku
    quantity: int = Field(ge=1)


def record_handler(record: SQSRecord) -> None:
    message = ReservationMessage.model_validate(json.loads(record.body))
    done = reserve_line(
        services.orders,
        ReservationRequest(order_id=message.order_id, sku=message.sku, quantity=message.quantity),
    )
    if not done:
        logger.info(
            "reservation already handled",
            extra={
                "order_id": message.order_id,
                "stream_id": message.order_id,
                "sku": message.sku,
                "message_id": record.message_id,
            },
        )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
