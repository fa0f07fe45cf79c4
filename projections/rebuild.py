"""Rebuild read models from the whole event log into new tables, then switch to them.

One rebuild run:

1. ``RebuildCoordinator.start`` creates a new table (generation) per read model and,
   in one transaction, records the run and points each read model's ``building`` at
   its new table. From then on the live projector writes every commit to the live
   table and to the new one, both under the version guard.
2. Nobody scans before ``scan_not_before``: by then every projector has re-read the
   pointer, so a commit the scan misses still reaches the new table.
3. Each segment of a parallel Scan runs ``SegmentRebuilder.run`` (a thread locally,
   one SQS message per segment in AWS). It buffers a few pages of events, restores
   each stream's order by position, folds each stream into its row and creates the
   rows in transactions of up to 100 writes, each write conditional on the row not
   existing. A row that exists was written by the live projector or by an earlier
   attempt of this segment; its stream is then brought up to date under the guard.
   After each flush the segment saves a checkpoint (scan key and counts), so a
   killed segment resumes after its last flush, and repeating a flush is harmless.
4. When every segment is done, ``finish`` switches all pointers in one transaction.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger
from eventsourcing.persistence import StoredEvent

from application.ports import (
    EventScanner,
    NewRow,
    ProjectionControl,
    ProjectionTable,
    RebuildConflictError,
    RebuildRun,
    SegmentCheckpoint,
    TableGenerations,
)
from projections.projection import Projection, stream_type_of
from projections.projector import DecodeEvent, GuardedProjector, MissingEventsError, ReadEvents

logger = Logger(service="orders", child=True)

# Events buffered before rows are written: bigger buffers merge more additions to
# summing rows into one write, smaller ones redo less work after a crash.
DEFAULT_FLUSH_EVENTS = 20_000
MAX_SEGMENTS = 1000
# Extra wait on top of the pointer cache lifetime before the scan starts.
PROPAGATION_MARGIN_SECONDS = 1.0


@dataclass(frozen=True)
class RebuildTarget:
    projection: Projection
    table: ProjectionTable


@dataclass(frozen=True)
class PageProgress:
    """Counts of one page, reported as the scan goes (before they are checkpointed)."""

    segment: int
    scanned: int
    events: int


Progress = Callable[[PageProgress], None]


def _never() -> bool:
    return False


def _ignore(_: PageProgress) -> None:
    return None


class SegmentRebuilder:
    def __init__(
        self,
        *,
        rebuild_id: str,
        total_segments: int,
        targets: Sequence[RebuildTarget],
        scanner: EventScanner,
        decode: DecodeEvent,
        read_events: ReadEvents,
        checkpoints: Any,
        flush_events: int = DEFAULT_FLUSH_EVENTS,
        page_limit: int | None = None,
    ) -> None:
        """``checkpoints`` implements the ``RebuildCheckpoints`` port."""
        self.rebuild_id = rebuild_id
        self.total_segments = total_segments
        self.targets = list(targets)
        self.scanner = scanner
        self.decode = decode
        self.read_events = read_events
        self.checkpoints = checkpoints
        self.flush_events = flush_events
        self.page_limit = page_limit
        self.stream_types = sorted(
            {t for target in targets for t in target.projection.stream_types}
        )
        self.projectors = {
            target.projection.name: GuardedProjector(target.projection, decode, read_events)
            for target in targets
        }

    def run(
        self,
        segment: int,
        *,
        should_stop: Callable[[], bool] = _never,
        on_page: Progress = _ignore,
    ) -> SegmentCheckpoint:
        """Rebuild one segment from its checkpoint; return the checkpoint it stopped at.

        ``should_stop`` is asked after every page; when it says yes the segment
        flushes what it buffered, checkpoints and returns before it is done.
        """
        checkpoint = self.checkpoints.load_checkpoint(self.rebuild_id, segment)
        checkpoint = checkpoint or SegmentCheckpoint(segment=segment)
        if checkpoint.done:
            return checkpoint
        buffer: dict[str, list[StoredEvent]] = {}
        buffered = pages = scanned = 0
        key = checkpoint.start_key
        while True:
            page = self.scanner.scan_page(
                segment, self.total_segments, key, self.stream_types, self.page_limit
            )
            for event in page.events:
                buffer.setdefault(str(event.originator_id), []).append(event)
            buffered += len(page.events)
            pages += 1
            scanned += page.scanned
            key = page.next_key
            on_page(PageProgress(segment, page.scanned, len(page.events)))
            finished = key is None
            stopping = should_stop()
            if not (finished or stopping or buffered >= self.flush_events):
                continue
            created, caught_up = self._flush(buffer)
            checkpoint = replace(
                checkpoint,
                start_key=key,
                pages=checkpoint.pages + pages,
                scanned=checkpoint.scanned + scanned,
                events=checkpoint.events + buffered,
                created=checkpoint.created + created,
                caught_up=checkpoint.caught_up + caught_up,
                done=finished,
            )
            self.checkpoints.save_checkpoint(self.rebuild_id, checkpoint)
            buffer.clear()
            buffered = pages = scanned = 0
            if finished or stopping:
                return checkpoint

    def _flush(self, buffer: Mapping[str, list[StoredEvent]]) -> tuple[int, int]:
        """Write the rows of every buffered stream; return (rows created, rows caught up)."""
        streams = {
            stream_id: self._whole_stream(stream_id, events) for stream_id, events in buffer.items()
        }
        decoded = {
            stream_id: [self.decode(event) for event in events]
            for stream_id, events in streams.items()
        }
        created = caught_up = 0
        for target in self.targets:
            projection = target.projection
            stream_ids = [
                stream_id
                for stream_id, events in streams.items()
                if stream_type_of(events[0].topic) in projection.stream_types
            ]
            new_rows = []
            for stream_id in stream_ids:
                row = projection.fold(None, decoded[stream_id])
                new_rows.append(
                    NewRow(
                        key=projection.row_key(stream_id),
                        row=row,
                        contributions=projection.contributions(None, row),
                    )
                )
            existed = target.table.create_rows(new_rows)
            created += len(new_rows) - len(existed)
            projector = self.projectors[projection.name]
            for index in existed:
                stream_id = stream_ids[index]
                events = streams[stream_id]
                known = {
                    event.originator_version: domain
                    for event, domain in zip(events, decoded[stream_id], strict=True)
                }
                outcome = projector.advance(target.table, stream_id, events, known)
                caught_up += 1 if outcome.applied else 0
        return created, caught_up

    def _whole_stream(self, stream_id: str, events: list[StoredEvent]) -> list[StoredEvent]:
        """Return the stream's events 1..n in order, reading from the store what the
        buffer lacks (the start of a stream that began on a page before the checkpoint)."""
        by_version = {event.originator_version: event for event in events}
        ordered = [by_version[version] for version in sorted(by_version)]
        top = ordered[-1].originator_version
        if ordered[0].originator_version == 1 and len(ordered) == top:
            return ordered
        stored = list(self.read_events(stream_id, 0, top))
        if [event.originator_version for event in stored] != list(range(1, top + 1)):
            raise MissingEventsError(
                f"stream {stream_id}: the scan saw version {top} but the store has "
                f"{len(stored)} events up to it"
            )
        return stored


def segment_message_body(rebuild_id: str, segment: int) -> str:
    """The SQS message that asks the rebuild function to work on one segment."""
    return json.dumps({"rebuild_id": rebuild_id, "segment": segment})


# Coordination ----------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RebuildCoordinator:
    """Starts, resumes, finishes and abandons rebuild runs."""

    def __init__(
        self,
        control: ProjectionControl,
        generations: TableGenerations,
        base_tables: Mapping[str, str],
        *,
        pointer_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.generations = generations
        self.base_tables = dict(base_tables)
        self.pointer_ttl_seconds = pointer_ttl_seconds
        self.clock = clock

    def start(
        self, projections: Sequence[Projection], total_segments: int, *, restart: bool = False
    ) -> tuple[RebuildRun, bool]:
        """Return the run to work on and whether it resumes an unfinished one.

        An unfinished run of exactly these read models and segments is resumed;
        with ``restart`` any unfinished run of them is abandoned first.
        """
        if not 1 <= total_segments <= MAX_SEGMENTS:
            raise ValueError(f"segments must be 1..{MAX_SEGMENTS}, not {total_segments}")
        names = tuple(sorted(projection.name for projection in projections))
        pointers = {name: self.control.pointer(name) for name in names}
        unfinished = {p.rebuild_id for p in pointers.values() if p.rebuild_id}
        for rebuild_id in sorted(unfinished):
            run = self.control.load_run(rebuild_id)
            if run is None:
                raise RebuildConflictError(
                    f"a pointer names rebuild {rebuild_id}, which has no record"
                )
            same = run.projections == names and run.total_segments == total_segments
            if same and not restart:
                return run, True
            if not restart:
                raise RebuildConflictError(
                    f"rebuild {rebuild_id} of {', '.join(run.projections)} with "
                    f"{run.total_segments} segments is unfinished: run it again with those "
                    "read models and --segments to resume it, or pass --restart to drop it"
                )
            self.abandon(run)
            pointers = {name: self.control.pointer(name) for name in names}

        rebuild_id = uuid.uuid4().hex[:12]
        generations = {name: pointers[name].last_generation + 1 for name in names}
        tables: dict[str, str] = {}
        try:
            for name in names:
                tables[name] = self.generations.create_generation(
                    self.base_tables[name], generations[name]
                )
            run = RebuildRun(
                rebuild_id=rebuild_id,
                projections=names,
                total_segments=total_segments,
                tables=tables,
                generations=generations,
                scan_not_before=self.clock()
                + self.pointer_ttl_seconds
                + PROPAGATION_MARGIN_SECONDS,
                created_at=now_iso(),
            )
            self.control.begin(run)
        except BaseException:
            for table in tables.values():
                self.generations.delete_table(table)
            raise
        logger.info(
            "rebuild started",
            extra={"rebuild_id": rebuild_id, "tables": tables, "segments": total_segments},
        )
        return run, False

    def wait_until_scan_may_start(
        self, run: RebuildRun, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        delay = run.scan_not_before - self.clock()
        if delay > 0:
            sleep(delay)

    def progress(self, run: RebuildRun) -> list[SegmentCheckpoint]:
        saved = {
            checkpoint.segment: checkpoint
            for checkpoint in self.control.checkpoints(run.rebuild_id)
        }
        return [
            saved.get(segment, SegmentCheckpoint(segment)) for segment in range(run.total_segments)
        ]

    def finish(self, run: RebuildRun) -> bool:
        """Switch to the run's tables if every segment is done; return whether it switched
        now. Safe to call from every segment worker: only the first call switches."""
        if not all(checkpoint.done for checkpoint in self.progress(run)):
            return False
        dropped = self.control.switch(run, self.clock())
        if dropped is None:
            return False
        protected = set(self.base_tables.values()) | set(run.tables.values())
        for table in dropped:
            if table not in protected:
                self.generations.delete_table(table)
        logger.info(
            "rebuild switched",
            extra={"rebuild_id": run.rebuild_id, "tables": dict(run.tables), "dropped": dropped},
        )
        return True

    def abandon(self, run: RebuildRun) -> None:
        self.control.abandon(run)
        for table in run.tables.values():
            if table not in self.base_tables.values():
                self.generations.delete_table(table)
        logger.info("rebuild abandoned", extra={"rebuild_id": run.rebuild_id})
