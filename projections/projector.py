"""Apply committed tips to the order summary read model, exactly once per event.

Each row stores the version of the last event it applied. A commit's events at
or below it are duplicates and skipped; a gap above it is filled from the event
store first, since events are durable there; the write is guarded by the
version read, so a concurrent projector makes it retry instead of losing an
update. The outcome is the same whether a record arrives once or many times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from eventsourcing.persistence import StoredEvent

from application.ports import StaleRowError, SummaryStore, Tip
from projections.order_summary import fold

logger = Logger(service="orders", child=True)

MAX_GUARD_ATTEMPTS = 5

DecodeEvent = Callable[[StoredEvent], Any]
ReadEvents = Callable[[str, int, int], Sequence[StoredEvent]]


@dataclass(frozen=True)
class ProjectionOutcome:
    stream_id: str
    applied: int
    skipped: int
    filled: int
    version: int


class OrderSummaryProjector:
    def __init__(self, store: SummaryStore, decode: DecodeEvent, read_events: ReadEvents) -> None:
        """``read_events(stream_id, after, up_to)`` returns events in (after, up_to]."""
        self.store = store
        self.decode = decode
        self.read_events = read_events

    def project(self, tip: Tip) -> ProjectionOutcome:
        for attempt in range(1, MAX_GUARD_ATTEMPTS + 1):
            try:
                return self._project_once(tip)
            except StaleRowError:
                logger.info(
                    "read-model row changed concurrently, reapplying",
                    extra={
                        "order_id": tip.stream_id,
                        "stream_id": tip.stream_id,
                        "version": tip.version,
                        "attempt": attempt,
                    },
                )
        raise StaleRowError(
            f"order {tip.stream_id}: the summary row kept changing during "
            f"{MAX_GUARD_ATTEMPTS} attempts to apply version {tip.version}"
        )

    def _project_once(self, tip: Tip) -> ProjectionOutcome:
        row = self.store.get(tip.stream_id)
        last = int(row["version"]) if row else 0

        new_events = [event for event in tip.events if event.originator_version > last]
        skipped = len(tip.events) - len(new_events)
        if not new_events:
            return ProjectionOutcome(tip.stream_id, 0, skipped, 0, last)

        filled: Sequence[StoredEvent] = ()
        first = new_events[0].originator_version
        if first > last + 1:
            filled = self.read_events(tip.stream_id, last, first - 1)
            if len(filled) != first - 1 - last:
                raise LookupError(
                    f"order {tip.stream_id}: versions {last + 1}..{first - 1} are missing "
                    f"from the event store ({len(filled)} found)"
                )
            logger.warning(
                "filled a gap from the event store",
                extra={
                    "order_id": tip.stream_id,
                    "stream_id": tip.stream_id,
                    "version": tip.version,
                    "from_version": last + 1,
                    "to_version": first - 1,
                },
            )

        events = [self.decode(stored) for stored in (*filled, *new_events)]
        updated = fold(dict(row) if row else None, events)
        assert updated is not None
        self.store.put(updated, expected_version=last)
        return ProjectionOutcome(
            tip.stream_id, len(new_events), skipped, len(filled), updated["version"]
        )
