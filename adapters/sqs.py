"""SQS adapters: the reservation fan-out and the saga's attention queue."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from application.ports import ReservationRequest

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = Logger(service="orders", child=True)

MAX_BATCH = 10  # SendMessageBatch accepts at most 10 messages


class SendFailedError(RuntimeError):
    pass


def send_all(client: SQSClient, queue_url: str, bodies: Sequence[str], attempts: int = 4) -> None:
    """Send every body, in batches of ten, retrying only the messages SQS reports failed."""
    for start in range(0, len(bodies), MAX_BATCH):
        pending = {str(index): body for index, body in enumerate(bodies[start : start + MAX_BATCH])}
        for attempt in range(1, attempts + 1):
            entries: list[Any] = [{"Id": key, "MessageBody": body} for key, body in pending.items()]
            response = client.send_message_batch(QueueUrl=queue_url, Entries=entries)
            failed = response.get("Failed", [])
            sender_faults = [failure for failure in failed if failure.get("SenderFault")]
            if sender_faults:
                raise SendFailedError(
                    f"SQS rejected messages for {queue_url}: {sender_faults[0].get('Message')}"
                )
            pending = {failure["Id"]: pending[failure["Id"]] for failure in failed}
            if not pending:
                break
            time.sleep(0.05 * 2 ** (attempt - 1))
        if pending:
            raise SendFailedError(
                f"{len(pending)} messages to {queue_url} failed after {attempts} attempts"
            )


class SqsReservationQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def send(self, requests: Sequence[ReservationRequest]) -> None:
        bodies = [
            json.dumps(
                {"order_id": request.order_id, "sku": request.sku, "quantity": request.quantity}
            )
            for request in requests
        ]
        send_all(self.client, self.queue_url, bodies)


class SqsAttentionQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self.client = client
        self.queue_url = queue_url

    def report(self, *, order_id: str, step: str, reason: str) -> None:
        body = json.dumps(
            {
                "order_id": order_id,
                "step": step,
                "reason": reason,
                "action": "retry with: orders saga retry " + order_id,
            }
        )
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=body)
        logger.info(
            "saga step sent to the attention queue", extra={"order_id": order_id, "step": step}
        )
