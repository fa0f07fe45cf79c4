"""Read-model tables in memory, with the DynamoDB store's guard and all-or-nothing rules.

Unit tests run the projector and the rebuild on these; the property tests compare
them row for row.
"""

from __future__ import annotations

import copy
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from application.ports import (
    Contribution,
    RowKey,
    SegmentCheckpoint,
    SegmentClaimedError,
    StaleRowError,
)
from projections.replay import add_contribution


class MemoryProjectionTable:
    """Implements the ``ProjectionTable`` port."""

    def __init__(self, name: str, key_attributes: Sequence[str]) -> None:
        self._name = name
        self.key_attributes = tuple(key_attributes)
        self.rows: dict[tuple[str, ...], dict[str, Any]] = {}
        self.writes = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    def _key(self, key: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple(str(key[name]) for name in self.key_attributes)

    def get_row(self, key: RowKey) -> dict[str, Any] | None:
        with self._lock:
            row = self.rows.get(self._key(key))
            return copy.deepcopy(row) if row is not None else None

    def apply(
        self,
        key: RowKey,
        row: Mapping[str, Any],
        *,
        expected_version: int,
        contributions: Sequence[Contribution] = (),
    ) -> None:
        with self._lock:
            current = self.rows.get(self._key(key))
            actual = int(current["version"]) if current else 0
            if actual != expected_version:
                raise StaleRowError(f"row at version {actual}, expected {expected_version}")
            self._write(key, row, contributions)

    def put_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                self.rows[self._key(row)] = copy.deepcopy(dict(row))
                self.writes += 1

    def _write(
        self, key: RowKey, row: Mapping[str, Any], contributions: Sequence[Contribution]
    ) -> None:
        self.rows[self._key(key)] = copy.deepcopy(dict(row))
        for contribution in contributions:
            summing = self._key(contribution.key)
            self.rows[summing] = add_contribution(self.rows.get(summing), contribution)
        self.writes += 1 + len(contributions)

    def scan_rows(
        self, segment: int, total_segments: int, attributes: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        with self._lock:
            snapshot = [copy.deepcopy(row) for row in self.rows.values()]
        for row in snapshot:
            if zlib.crc32(str(row[self.key_attributes[0]]).encode()) % total_segments == segment:
                if attributes is not None:
                    row = {name: value for name, value in row.items() if name in attributes}
                yield row


class MemoryRebuildCheckpoints:
    """Implements the ``RebuildCheckpoints`` port in a dict."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, int], SegmentCheckpoint] = {}
        self.claims: dict[tuple[str, int], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def load_checkpoint(self, rebuild_id: str, segment: int) -> SegmentCheckpoint | None:
        with self._lock:
            return self.saved.get((rebuild_id, segment))

    def claim_segment(
        self, rebuild_id: str, segment: int, owner: str, now: float, seconds: float
    ) -> None:
        with self._lock:
            holder, until = self.claims.get((rebuild_id, segment), (owner, 0.0))
            if holder != owner and until >= now:
                raise SegmentClaimedError(f"segment {segment} is claimed by {holder}")
            self.claims[(rebuild_id, segment)] = (owner, now + seconds)

    def save_checkpoint(
        self, rebuild_id: str, checkpoint: SegmentCheckpoint, owner: str, now: float, seconds: float
    ) -> None:
        with self._lock:
            holder, _ = self.claims.get((rebuild_id, checkpoint.segment), ("", 0.0))
            if holder != owner:
                raise SegmentClaimedError(f"segment {checkpoint.segment} is claimed by {holder}")
            self.claims[(rebuild_id, checkpoint.segment)] = (owner, now + seconds)
            self.saved[(rebuild_id, checkpoint.segment)] = checkpoint

    def release_segment(self, rebuild_id: str, segment: int, owner: str) -> None:
        with self._lock:
            holder, _ = self.claims.get((rebuild_id, segment), ("", 0.0))
            if holder == owner:
                self.claims[(rebuild_id, segment)] = (owner, 0.0)


class MemoryDirtyStreams:
    """Implements the ``DirtyStreams`` port in a set."""

    def __init__(self) -> None:
        self.streams: dict[str, set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def mark(self, rebuild_id: str, stream_id: str, stream_type: str) -> None:
        with self._lock:
            self.streams.setdefault(rebuild_id, set()).add((stream_id, stream_type))

    def marked(self, rebuild_id: str) -> Iterator[tuple[str, str]]:
        with self._lock:
            found = sorted(self.streams.get(rebuild_id, set()))
        yield from found
