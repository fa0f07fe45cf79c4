"""Apply a stream's events to one table of one read model, exactly once per event.

Each per-stream row stores the version of the last event it applied. Events at or
below it are duplicates and skipped. A gap above it is first filled from the event
store, where events are durable. The write is conditional on the version read, so a
concurrent writer makes it retry instead of losing an update. A read model that
sums many streams adds to its summing rows in the same write, all or nothing. So a
commit delivered many times changes the rows as much as one delivered once.

The live projector calls :meth:`GuardedProjector.project` for each tip; the rebuild
calls :meth:`GuardedProjector.advance` for a stream whose row already exists.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from eventsourcing.persistence import StoredEvent

from application.ports import ProjectionTable, StaleRowError, Tip
from projections.projection import VERSION, Projection

logger = Logger(service="orders", child=True)

MAX_GUARD_ATTEMPTS = 5

DecodeEvent = Callable[[StoredEvent], Any]
ReadEvents = Callable[[str, int, int], Sequence[StoredEvent]]
"""``read_events(stream_id, after, up_to)`` returns the stream's events in (after, up_to]."""


class MissingEventsError(LookupError):
    """The event store lacks events that a later commit proves were written."""


@dataclass(frozen=True)
class ProjectionOutcome:
    projection: str
    table: str
    stream_id: str
    applied: int
    skipped: int
    filled: int
    version: int


class GuardedProjector:
    def __init__(
        self,
        projection: Projection,
        decode: DecodeEvent,
        read_events: ReadEvents,
        *,
        max_attempts: int = MAX_GUARD_ATTEMPTS,
        warn_on_gap: bool = True,
    ) -> None:
        """``warn_on_gap``: log a filled gap as a warning (a live record went missing)
        rather than at debug level (a rebuild's catch-up, where gaps are expected)."""
        self.projection = projection
        self.decode = decode
        self.read_events = read_events
        self.max_attempts = max_attempts
        self.warn_on_gap = warn_on_gap

    def project(self, table: ProjectionTable, tip: Tip) -> ProjectionOutcome:
        """Apply the events of a tip's commit (and any gap before them)."""
        return self.advance(table, tip.stream_id, tip.events)

    def advance(
        self,
        table: ProjectionTable,
        stream_id: str,
        events: Sequence[StoredEvent],
        decoded: Mapping[int, Any] | None = None,
    ) -> ProjectionOutcome:
        """Bring the row up to the last of ``events``.

        ``decoded`` maps versions to events that are already decoded (the rebuild has
        them in memory); the projector uses them instead of decoding or reading again.
        """
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._advance_once(table, stream_id, events, decoded or {})
            except StaleRowError:
                logger.info(
                    "read-model row changed concurrently, reapplying",
                    extra={
                        "projection": self.projection.name,
                        "table": table.name,
                        "order_id": stream_id,
                        "stream_id": stream_id,
                        "version": events[-1].originator_version if events else None,
                        "attempt": attempt,
                    },
                )
        raise StaleRowError(
            f"{self.projection.name} row of stream {stream_id} in {table.name} kept changing "
            f"during {self.max_attempts} attempts to apply version "
            f"{events[-1].originator_version if events else '?'}"
        )

    def _advance_once(
        self,
        table: ProjectionTable,
        stream_id: str,
        events: Sequence[StoredEvent],
        decoded: Mapping[int, Any],
    ) -> ProjectionOutcome:
        key = self.projection.row_key(stream_id)
        row = table.get_row(key)
        last = int(row[VERSION]) if row else 0

        new_events = [event for event in events if event.originator_version > last]
        skipped = len(events) - len(new_events)
        if not new_events:
            return self._outcome(table, stream_id, 0, skipped, 0, last)

        first = new_events[0].originator_version
        missing = range(last + 1, first)
        filled: Sequence[Any] = []
        if missing:
            filled = self._fill(stream_id, last, first - 1, decoded)

        domain_events = [*filled] + [
            decoded[event.originator_version]
            if event.originator_version in decoded
            else self.decode(event)
            for event in new_events
        ]
        updated = self.projection.fold(dict(row) if row else None, domain_events)
        table.apply(
            key,
            updated,
            expected_version=last,
            contributions=self.projection.contributions(row, updated),
        )
        return self._outcome(
            table, stream_id, len(new_events), skipped, len(filled), int(updated[VERSION])
        )

    def _fill(
        self, stream_id: str, after: int, up_to: int, decoded: Mapping[int, Any]
    ) -> list[Any]:
        wanted = range(after + 1, up_to + 1)
        if all(version in decoded for version in wanted):
            return [decoded[version] for version in wanted]
        stored = self.read_events(stream_id, after, up_to)
        if [event.originator_version for event in stored] != list(wanted):
            raise MissingEventsError(
                f"stream {stream_id}: versions {after + 1}..{up_to} are missing from the "
                f"event store ({len(stored)} found)"
            )
        log = logger.warning if self.warn_on_gap else logger.debug
        log(
            "filled a gap from the event store",
            extra={
                "projection": self.projection.name,
                "order_id": stream_id,
                "stream_id": stream_id,
                "from_version": after + 1,
                "to_version": up_to,
            },
        )
        return [self.decode(event) for event in stored]

    def _outcome(
        self,
        table: ProjectionTable,
        stream_id: str,
        applied: int,
        skipped: int,
        filled: int,
        version: int,
    ) -> ProjectionOutcome:
        return ProjectionOutcome(
            self.projection.name, table.name, stream_id, applied, skipped, filled, version
        )
