"""SQS handler: runs the order saga for each order event that EventBridge delivered.

Messages are EventBridge events (``detail.order_id``), or operator commands
``{"action": "retry", "order_id": ...}`` sent by ``orders saga retry``.
"""

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

from adapters.composition import build_saga_process

logger = Logger(service="orders")
process = build_saga_process()
processor = BatchProcessor(event_type=EventType.SQS)


class InvalidSagaMessageError(ValueError):
    pass


def _order_id_of(body: dict[str, Any]) -> str:
    order_id = body.get("order_id") or body.get("detail", {}).get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidSagaMessageError("message has no order_id (detail.order_id or order_id)")
    return order_id


def record_handler(record: SQSRecord) -> None:
    body = json.loads(record.body)
    if not isinstance(body, dict):
        raise InvalidSagaMessageError("message body is not a JSON object")
    order_id = _order_id_of(body)
    logger.append_keys(
        order_id=order_id, stream_id=order_id, command_id=body.get("id") or record.message_id
    )
    try:
        if body.get("action") == "retry":
            outcome = process.retry_stuck(order_id)
        else:
            outcome = process.advance(order_id)
    finally:
        logger.remove_keys(["order_id", "stream_id", "command_id"])
    logger.info(
        "saga advanced",
        extra={
            "order_id": order_id,
            "trigger": body.get("detail-type", body.get("action")),
            "outcome": outcome.value if outcome else None,
        },
    )


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
