"""Publish integration events with ``PutEvents``, retrying only the entries that failed."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from application.integration_events import IntegrationEvent

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

logger = Logger(service="orders", child=True)

MAX_ENTRIES_PER_CALL = 10  # PutEvents accepts at most 10 entries


@dataclass(frozen=True)
class FailedEntry:
    index: int
    error_code: str
    error_message: str


class EventBridgePublisher:
    def __init__(
        self,
        client: EventBridgeClient,
        bus_name: str,
        *,
        max_attempts: int = 4,
        base_delay: float = 0.05,
    ) -> None:
        self.client = client
        self.bus_name = bus_name
        self.max_attempts = max_attempts
        self.base_delay = base_delay

    def publish(self, events: Sequence[IntegrationEvent]) -> list[FailedEntry]:
        """Publish every event; return those that still failed after the retries."""
        failed: list[FailedEntry] = []
        for start in range(0, len(events), MAX_ENTRIES_PER_CALL):
            chunk = events[start : start + MAX_ENTRIES_PER_CALL]
            for entry in self._publish_chunk(chunk):
                failed.append(
                    FailedEntry(start + entry.index, entry.error_code, entry.error_message)
                )
        return failed

    def _publish_chunk(self, events: Sequence[IntegrationEvent]) -> list[FailedEntry]:
        pending = list(range(len(events)))
        last_failures: list[FailedEntry] = []
        for attempt in range(1, self.max_attempts + 1):
            entries: list[Any] = [
                {
                    "Source": events[index].source,
                    "DetailType": events[index].detail_type,
                    "Detail": events[index].detail_json(),
                    "EventBusName": self.bus_name,
                }
                for index in pending
            ]
            response = self.client.put_events(Entries=entries)
            if response.get("FailedEntryCount", 0) == 0:
                return []
            last_failures = []
            still_pending = []
            for index, result in zip(pending, response["Entries"], strict=True):
                if "ErrorCode" in result:
                    still_pending.append(index)
                    last_failures.append(
                        FailedEntry(index, result["ErrorCode"], result.get("ErrorMessage", ""))
                    )
            logger.warning(
                "PutEvents rejected some entries",
                extra={
                    "failed": len(still_pending),
                    "attempt": attempt,
                    "codes": sorted({failure.error_code for failure in last_failures}),
                },
            )
            pending = still_pending
            if attempt < self.max_attempts:
                time.sleep(random.uniform(0, self.base_delay * 2 ** (attempt - 1)))
        return last_failures
