"""A parallel scan over the in-memory event store, shaped like DynamoDB's.

Streams are split into segments by a hash of the stream id, and a segment lists
its streams in hash order with each stream's events in position order, as a
DynamoDB segment does. Pages end after ``limit`` items, so a stream can be cut
between two pages.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence

from eventsourcing.persistence import ApplicationRecorder, StoredEvent

from adapters.eventstore.items import stream_type_of
from application.ports import ScanPage

DEFAULT_PAGE_ITEMS = 1000


def _hash(stream_id: str) -> int:
    return zlib.crc32(stream_id.encode())


class MemoryEventScanner:
    """Implements the ``EventScanner`` port over an eventsourcing application recorder."""

    def __init__(self, recorder: ApplicationRecorder) -> None:
        self.recorder = recorder

    def all_events(self) -> list[StoredEvent]:
        last = self.recorder.max_notification_id() or 0
        notifications = self.recorder.select_notifications(start=1, limit=max(last, 1))
        return [
            StoredEvent(
                originator_id=str(n.originator_id),
                originator_version=n.originator_version,
                topic=n.topic,
                state=n.state,
            )
            for n in notifications
        ]

    def scan_page(
        self,
        segment: int,
        total_segments: int,
        start_key: str | None,
        stream_types: Sequence[str],
        limit: int | None = None,
    ) -> ScanPage:
        ordered = sorted(
            (
                (
                    _hash(str(event.originator_id)),
                    str(event.originator_id),
                    event.originator_version,
                    event,
                )
                for event in self.all_events()
                if _hash(str(event.originator_id)) % total_segments == segment
            ),
            key=lambda entry: entry[:3],
        )
        if start_key is not None:
            stream_id, position = json.loads(start_key)
            after = (_hash(stream_id), stream_id, position)
            ordered = [entry for entry in ordered if entry[:3] > after]
        page = ordered[: limit or DEFAULT_PAGE_ITEMS]
        more = len(ordered) > len(page)
        wanted = set(stream_types)
        events = [entry[3] for entry in page if stream_type_of(entry[3].topic) in wanted]
        next_key = json.dumps([page[-1][1], page[-1][2]]) if more and page else None
        return ScanPage(events=events, scanned=len(page), next_key=next_key)

    def approximate_item_count(self) -> int:
        return len(self.all_events())
