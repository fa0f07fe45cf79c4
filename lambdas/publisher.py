"""Stream handler: publishes every committed event to EventBridge.

A batch's tips become PutEvents entries, sent ten at a time. Entries that
EventBridge reports failed are retried on their own. A record whose entries
still fail is reported as a batch item failure, so the stream redelivers it
and the records after it. Consumers are idempotent, so publishing a
redelivered record again is harmless.
"""

from __future__ import annotations

from typing import Any, cast

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from eventsourcing.domain import Snapshot

from adapters.composition import build_publisher
from adapters.eventstore.items import KIND_TIP, tip_from_item
from application.integration_events import IntegrationEvent, to_integration_event

logger = Logger(service="orders")
services = build_publisher()


def _events_of(record: dict[str, Any]) -> list[IntegrationEvent]:
    image = record.get("dynamodb", {}).get("NewImage")
    if not image or image.get("kind", {}).get("S") != KIND_TIP:
        return []
    tip = tip_from_item(image)
    mapper = services.orders.mapper
    aggregate = None
    if tip.snapshot is not None:
        snapshot = cast("Snapshot", mapper.to_domain_event(tip.snapshot))
        aggregate = snapshot.mutate(None)
    events = []
    for stored in tip.events:
        integration_event = to_integration_event(mapper.to_domain_event(stored), aggregate)
        if integration_event is not None:
            events.append(integration_event)
    return events


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = event.get("Records", [])
    entries: list[IntegrationEvent] = []
    owners: list[str] = []
    failures: set[str] = set()

    for record in records:
        sequence_number = record.get("dynamodb", {}).get("SequenceNumber", "")
        try:
            record_events = _events_of(record)
        except Exception:
            logger.exception(
                "stream record could not be decoded", extra={"sequence_number": sequence_number}
            )
            failures.add(sequence_number)
            continue
        entries.extend(record_events)
        owners.extend([sequence_number] * len(record_events))

    for failed in services.publisher.publish(entries):
        failures.add(owners[failed.index])
        logger.error(
            "event not published after retries",
            extra={
                "sequence_number": owners[failed.index],
                "error_code": failed.error_code,
                "detail_type": entries[failed.index].detail_type,
                "stream_id": entries[failed.index].detail.get("stream_id"),
            },
        )

    logger.info(
        "events published",
        extra={"records": len(records), "entries": len(entries), "failed_records": len(failures)},
    )
    return {"batchItemFailures": [{"itemIdentifier": sequence} for sequence in sorted(failures)]}
