"""Compare a read model's table with a fresh replay of the event log, row for row.

The replay reads the whole log (parallel segments), folds every stream from its
first event and sums the summing rows, all in memory: an independent copy built
without the projector's guard or the rebuild's bulk writes. Rows of streams that
take commits during the comparison show up as differences, so compare on a quiet
system, or run it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import StoredEvent

from application.ports import EventScanner, ProjectionTable
from projections.projection import Projection, Row, row_key_tuple, stream_type_of
from projections.projector import DecodeEvent, MissingEventsError, ReadEvents
from projections.replay import RowsByKey, replay

MAX_SHOWN_FIELDS = 8


@dataclass(frozen=True)
class Difference:
    projection: str
    key: tuple[str, ...]
    expected: Row | None
    actual: Row | None

    def describe(self) -> str:
        where = f"{self.projection} {'/'.join(self.key)}"
        if self.actual is None:
            return f"{where}: missing from the table"
        if self.expected is None:
            return f"{where}: in the table but not in the log's replay"
        names = sorted(set(self.expected) | set(self.actual))
        changed = [
            f"{name}: {self.expected.get(name)!r} in the replay, {self.actual.get(name)!r} "
            "in the table"
            for name in names
            if self.expected.get(name) != self.actual.get(name)
        ]
        more = len(changed) - MAX_SHOWN_FIELDS
        shown = "; ".join(changed[:MAX_SHOWN_FIELDS]) + (f"; {more} more" if more > 0 else "")
        return f"{where}: {shown}"


def _scan_segment(
    scanner: EventScanner, segment: int, total_segments: int, stream_types: Sequence[str]
) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    key = None
    while True:
        page = scanner.scan_page(segment, total_segments, key, stream_types)
        events.extend(page.events)
        key = page.next_key
        if key is None:
            return events


def replay_log(
    scanner: EventScanner,
    decode: DecodeEvent,
    read_events: ReadEvents,
    projections: Sequence[Projection],
    total_segments: int,
) -> dict[str, RowsByKey]:
    """Return, per projection, the rows a replay of the whole log gives."""
    stream_types = sorted({t for projection in projections for t in projection.stream_types})
    with ThreadPoolExecutor(max_workers=total_segments) as pool:
        segments = pool.map(
            lambda segment: _scan_segment(scanner, segment, total_segments, stream_types),
            range(total_segments),
        )
        by_stream: dict[str, dict[int, StoredEvent]] = {}
        for segment_events in segments:
            for event in segment_events:
                versions = by_stream.setdefault(str(event.originator_id), {})
                versions[event.originator_version] = event
    decoded: dict[str, tuple[str, list[Any]]] = {}
    for stream_id, versions in by_stream.items():
        top = max(versions)
        if sorted(versions) != list(range(1, top + 1)):
            # Written while the scan ran: read the stream up to what was seen.
            stored = list(read_events(stream_id, 0, top))
            if len(stored) != top:
                raise MissingEventsError(f"stream {stream_id}: the store lacks events up to {top}")
            versions = {event.originator_version: event for event in stored}
        ordered = [versions[version] for version in range(1, top + 1)]
        decoded[stream_id] = (stream_type_of(ordered[0].topic), [decode(e) for e in ordered])
    return {
        projection.name: replay(
            projection,
            (
                (stream_id, domain_events)
                for stream_id, (stream_type, domain_events) in sorted(decoded.items())
                if stream_type in projection.stream_types
            ),
        )
        for projection in projections
    }


def table_rows(table: ProjectionTable, projection: Projection, total_segments: int) -> RowsByKey:
    with ThreadPoolExecutor(max_workers=total_segments) as pool:
        segments = pool.map(
            lambda segment: list(table.scan_rows(segment, total_segments)), range(total_segments)
        )
        return {row_key_tuple(projection, row): row for rows in segments for row in rows}


def compare(
    projection: str, expected: Mapping[tuple[str, ...], Row], actual: RowsByKey
) -> list[Difference]:
    return [
        Difference(projection, key, expected.get(key), actual.get(key))
        for key in sorted(set(expected) | set(actual))
        if expected.get(key) != actual.get(key)
    ]


@dataclass(frozen=True)
class Report:
    projection: str
    table: str
    expected_rows: int
    actual_rows: int
    differences: list[Difference]


def verify(
    projections: Sequence[Projection],
    scanner: EventScanner,
    decode: DecodeEvent,
    read_events: ReadEvents,
    open_live_table: Callable[[Projection], ProjectionTable],
    total_segments: int,
) -> list[Report]:
    """Compare each projection's live table with a replay of the log."""
    expected = replay_log(scanner, decode, read_events, projections, total_segments)
    reports = []
    for projection in projections:
        table = open_live_table(projection)
        actual = table_rows(table, projection, total_segments)
        reports.append(
            Report(
                projection=projection.name,
                table=table.name,
                expected_rows=len(expected[projection.name]),
                actual_rows=len(actual),
                differences=compare(projection.name, expected[projection.name], actual),
            )
        )
    return reports
