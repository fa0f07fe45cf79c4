"""Rebuild read models from the whole event log into new tables, then switch to them.

One rebuild run:

1. ``RebuildCoordinator.start`` creates a new table (generation) per read model and,
   in one transaction, records the run and points each read model's ``building`` at
   its new table, in the ``bulk`` phase. In that phase the live projector keeps
   writing the live tables and only marks which streams changed
   (:class:`~application.ports.DirtyStreams`); nothing else writes the new tables.
2. No segment scans before ``scan_not_before``. By then every projector has re-read
   the pointer, so a commit the scan misses is marked.
3. Each segment of a parallel Scan runs ``SegmentRebuilder.run`` (a thread locally,
   one SQS message per segment in AWS). It buffers a few pages of events, restores
   each stream's order by position (reading the start of a stream from the store
   when the buffer lacks it), folds each stream into its row and writes the rows
   with ``BatchWriteItem``, replacing whatever an earlier attempt wrote. After each
   flush the segment saves a checkpoint (scan key and counts), so a killed segment
   resumes after its last flush, and repeating a flush is harmless.
4. ``finish`` then takes the run to the switch, one step per call, each step safe to
   repeat. It sums the summing rows (customer stats) from the loaded per-stream
   rows while the other tables get their secondary indexes, which the bulk load
   leaves out because building them afterwards is cheaper. It moves the pointers
   to the ``guarded`` phase, in which projectors write the new tables under the
   version guard as they do the live ones, and waits out the pointer cache while
   the remaining indexes build. Once every index is active it brings every marked
   stream up to date under the guard and switches all pointers in one transaction.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aws_lambda_powertools import Logger
from eventsourcing.persistence import StoredEvent

from application.ports import (
    DirtyStreams,
    EventScanner,
    ProjectionControl,
    ProjectionTable,
    RebuildConflictError,
    RebuildRun,
    SegmentCheckpoint,
    TableGenerations,
    Tip,
)
from projections.projection import VERSION, Projection, Row, stream_type_of
from projections.projector import DecodeEvent, GuardedProjector, MissingEventsError, ReadEvents
from projections.replay import add_contribution, key_of

logger = Logger(service="orders", child=True)

# Events buffered before rows are written: bigger buffers merge more additions to
# summing rows into one write, smaller ones redo less work after a crash.
DEFAULT_FLUSH_EVENTS = 20_000
MAX_SEGMENTS = 1000
# Extra wait on top of the pointer cache lifetime before the scan starts.
PROPAGATION_MARGIN_SECONDS = 1.0
FINISH_POLL_SECONDS = 0.5
# How often the finisher checks whether a table can take its next index.
INDEX_POLL_SECONDS = 0.2
# A segment's claim runs out this long after its worker last renewed it (every page),
# so a killed worker holds up a resumed rebuild for at most this long.
SEGMENT_CLAIM_SECONDS = 60.0
# One finisher at a time writes the summing rows. It renews its claim every
# RENEW_EVERY_ROWS rows, so the claim of a killed finisher runs out after this long.
SUMMING_CLAIM_SECONDS = 60.0
RENEW_EVERY_ROWS = 1000


class FinishState(StrEnum):
    SEGMENTS_RUNNING = "segments running"
    WAITING = "waiting for projectors to see the guarded phase"
    INDEXING = "building indexes"
    SWITCHED = "switched"
    NOT_BUILDING = "no longer building"


# Run statuses, in order.
SCANNING = "scanning"
CATCHING_UP = "catching_up"
INDEXING = "indexing"
SWITCHED = "switched"
ABANDONED = "abandoned"


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


def _nothing() -> None:
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
        claim_seconds: float = SEGMENT_CLAIM_SECONDS,
        clock: Callable[[], float] = time.time,
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
        self.claim_seconds = claim_seconds
        self.clock = clock
        self.stream_types = sorted(
            {t for target in targets for t in target.projection.stream_types}
        )

    def run(
        self,
        segment: int,
        *,
        should_stop: Callable[[], bool] = _never,
        on_page: Progress = _ignore,
    ) -> SegmentCheckpoint:
        """Rebuild one segment from its checkpoint; return the checkpoint it stopped at.

        ``should_stop`` is called after every page; when it returns True the segment
        flushes what it buffered, checkpoints and returns before it is done. Raises
        :class:`~application.ports.SegmentClaimedError` if another worker has the
        segment.
        """
        owner = uuid.uuid4().hex
        self.checkpoints.claim_segment(
            self.rebuild_id, segment, owner, self.clock(), self.claim_seconds
        )
        try:
            return self._run_claimed(segment, owner, should_stop, on_page)
        finally:
            self.checkpoints.release_segment(self.rebuild_id, segment, owner)

    def _run_claimed(
        self, segment: int, owner: str, should_stop: Callable[[], bool], on_page: Progress
    ) -> SegmentCheckpoint:
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
                self.checkpoints.claim_segment(
                    self.rebuild_id, segment, owner, self.clock(), self.claim_seconds
                )
                continue
            written = self._flush(buffer)
            checkpoint = replace(
                checkpoint,
                start_key=key,
                pages=checkpoint.pages + pages,
                scanned=checkpoint.scanned + scanned,
                events=checkpoint.events + buffered,
                rows=checkpoint.rows + written,
                done=finished,
            )
            self.checkpoints.save_checkpoint(
                self.rebuild_id, checkpoint, owner, self.clock(), self.claim_seconds
            )
            buffer.clear()
            buffered = pages = scanned = 0
            if finished or stopping:
                return checkpoint

    def _flush(self, buffer: Mapping[str, list[StoredEvent]]) -> int:
        """Write the row of every buffered stream to every target; return the rows written."""
        streams = {
            stream_id: self._whole_stream(stream_id, events) for stream_id, events in buffer.items()
        }
        decoded = {
            stream_id: [self.decode(event) for event in events]
            for stream_id, events in streams.items()
        }
        written = 0
        for target in self.targets:
            projection = target.projection
            rows = [
                projection.fold(None, decoded[stream_id])
                for stream_id, events in streams.items()
                if stream_type_of(events[0].topic) in projection.stream_types
            ]
            target.table.put_rows(rows)
            written += len(rows)
        return written

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
    """Build the SQS message that makes the rebuild function work on one segment."""
    return json.dumps({"rebuild_id": rebuild_id, "segment": segment})


def finish_message_body(rebuild_id: str) -> str:
    """Build the SQS message that makes the rebuild function check the indexes again."""
    return json.dumps({"rebuild_id": rebuild_id, "segment": None})


# Coordination ----------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class CatchUp:
    """The collaborators ``finish`` uses to sum the summing rows and catch up marked
    streams."""

    dirty: DirtyStreams
    read_tip: Callable[[str], Tip | None]
    projectors: Mapping[str, GuardedProjector]
    open_table: Callable[[Projection, str], ProjectionTable]
    scan_segments: int = 4

    def targets(self, run: RebuildRun) -> list[RebuildTarget]:
        return [
            RebuildTarget(
                projector.projection, self.open_table(projector.projection, run.tables[name])
            )
            for name, projector in self.projectors.items()
            if name in run.tables
        ]

    def summing_projections(self, run: RebuildRun) -> set[str]:
        """Return the names of the run's read models that have summing rows."""
        return {
            target.projection.name
            for target in self.targets(run)
            if target.projection.has_summing_rows
        }

    def sum_rows(self, run: RebuildRun, renew: Callable[[], None] = _nothing) -> int:
        """Write every summing row as the sum of the loaded per-stream rows; return how many.

        ``renew`` is called every few hundred rows read or written, to keep the claim
        on this step alive; it raises if the claim was lost.
        """
        written = 0
        for target in self.targets(run):
            if not target.projection.has_summing_rows:
                continue
            rows = list(self._sums(target, renew).values())

            def put(chunk: Sequence[Row], table: ProjectionTable = target.table) -> None:
                table.put_rows(chunk)
                renew()

            chunks = [
                rows[start : start + RENEW_EVERY_ROWS]
                for start in range(0, len(rows), RENEW_EVERY_ROWS)
            ]
            with ThreadPoolExecutor(max_workers=self.scan_segments) as pool:
                list(pool.map(put, chunks))
            written += len(rows)
        return written

    def _sums(self, target: RebuildTarget, renew: Callable[[], None]) -> dict[tuple[str, ...], Row]:
        projection, table, segments = target.projection, target.table, self.scan_segments
        # Only what the contributions read: the per-order rows are most of the table.
        attributes = [
            *projection.key_attributes,
            VERSION,
            *projection.contribution_attributes,
        ]

        def scan(segment: int) -> list[Row]:
            rows = []
            for row in table.scan_rows(segment, segments, attributes):
                rows.append(row)
                if len(rows) % RENEW_EVERY_ROWS == 0:
                    renew()
            return rows

        sums: dict[tuple[str, ...], Row] = {}
        with ThreadPoolExecutor(max_workers=segments) as pool:
            for rows in pool.map(scan, range(segments)):
                for row in rows:
                    if VERSION not in row:
                        continue  # a summing row of an earlier attempt: recomputed here
                    for contribution in projection.contributions(None, row):
                        key = key_of(contribution.key, projection)
                        sums[key] = add_contribution(sums.get(key), contribution)
        return sums

    def apply_marked(self, run: RebuildRun) -> int:
        """Bring every stream marked during the bulk load up to its tip; return how many."""
        targets = self.targets(run)
        count = 0
        for stream_id, stream_type in self.dirty.marked(run.rebuild_id):
            tip = self.read_tip(stream_id)
            if tip is None:
                continue
            for target in targets:
                if stream_type in target.projection.stream_types:
                    self.projectors[target.projection.name].project(target.table, tip)
            count += 1
        return count


class RebuildCoordinator:
    """Starts, resumes, finishes and abandons rebuild runs."""

    def __init__(
        self,
        control: ProjectionControl,
        generations: TableGenerations,
        base_tables: Mapping[str, str],
        *,
        catch_up: CatchUp,
        pointer_ttl_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.generations = generations
        self.base_tables = dict(base_tables)
        self.catch_up = catch_up
        self.pointer_ttl_seconds = pointer_ttl_seconds
        self.clock = clock

    @property
    def propagation_seconds(self) -> float:
        """How long until every projector has re-read a changed pointer."""
        return self.pointer_ttl_seconds + PROPAGATION_MARGIN_SECONDS

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
                scan_not_before=self.clock() + self.propagation_seconds,
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

    def finish(self, run: RebuildRun) -> FinishState:
        """Take the run one step towards the switch (see the module's steps 4 and 5).

        Safe to call from every segment worker, concurrently and as often as needed:
        each step is repeatable, and the transitions between them are conditional.
        """
        current = self.control.load_run(run.rebuild_id) or run
        if current.status == SCANNING:
            if not all(checkpoint.done for checkpoint in self.progress(current)):
                return FinishState.SEGMENTS_RUNNING
            owner = uuid.uuid4().hex
            if not self._claim_summing(current, owner):
                return FinishState.WAITING
            try:
                # The bulk load is over: the indexes build while the sums are written,
                # except on the tables being summed. DynamoDB Local returned part of
                # each BatchWriteItem unprocessed while its table added an index, and
                # the back-off made the sums three times slower.
                summed = self.catch_up.summing_projections(current)
                sums_done = threading.Event()
                with ThreadPoolExecutor(max_workers=2) as pool:
                    indexing = pool.submit(self._index_until, current, summed, sums_done)
                    try:
                        sums = self.catch_up.sum_rows(
                            current, renew=lambda: self._renew_summing(current, owner)
                        )
                    finally:
                        sums_done.set()
                    indexing.result()
                self._add_indexes(current)
            except BaseException:
                self.control.release_summing(current, owner)
                raise
            self.control.enter_guarded_phase(current, self.clock())
            logger.info(
                "summing rows written; projectors now write the new tables",
                extra={"rebuild_id": run.rebuild_id, "summing_rows": sums},
            )
            return FinishState.WAITING
        if current.status == CATCHING_UP:
            guarded_since = current.guarded_since or 0.0
            # A table takes one new index at a time, so the next starts while waiting.
            # The catch-up writes only once every index is active: DynamoDB Local 3.3
            # failed a PutItem to a table adding its third index (InternalFailure).
            indexed = self._add_indexes(current)
            if self.clock() < guarded_since + self.propagation_seconds:
                return FinishState.WAITING
            if not indexed:
                return FinishState.INDEXING
            caught_up = self.catch_up.apply_marked(current)
            self.control.set_status(current, CATCHING_UP, INDEXING)
            logger.info(
                "streams marked during the bulk load caught up",
                extra={"rebuild_id": run.rebuild_id, "streams": caught_up},
            )
            current = replace(current, status=INDEXING)
        if current.status == INDEXING:
            if not self._add_indexes(current):
                return FinishState.INDEXING
            dropped = self.control.switch(current, self.clock())
            if dropped is None:
                return self._settled(current)
            protected = set(self.base_tables.values()) | set(current.tables.values())
            for table in dropped:
                if table not in protected:
                    self.generations.delete_table(table)
            logger.info(
                "rebuild switched",
                extra={
                    "rebuild_id": run.rebuild_id,
                    "tables": dict(current.tables),
                    "dropped": dropped,
                },
            )
            return FinishState.SWITCHED
        return self._settled(current)

    def _claim_summing(self, run: RebuildRun, owner: str) -> bool:
        return self.control.claim_summing(run, owner, self.clock(), SUMMING_CLAIM_SECONDS)

    def _renew_summing(self, run: RebuildRun, owner: str) -> None:
        if not self._claim_summing(run, owner):
            raise RebuildConflictError(
                f"rebuild {run.rebuild_id}: another finisher took over writing the sums"
            )

    def _add_indexes(self, run: RebuildRun, skip: Collection[str] = ()) -> bool:
        """Start the next indexes of every new table at once, except those of the read
        models in ``skip``; return whether all are active."""
        tables = sorted((name, table) for name, table in run.tables.items() if name not in skip)
        if not tables:
            return True
        with ThreadPoolExecutor(max_workers=len(tables)) as pool:
            ready = list(
                pool.map(
                    lambda entry: self.generations.add_indexes(
                        self.base_tables[entry[0]], entry[1]
                    ),
                    tables,
                )
            )
        return all(ready)

    def _index_until(self, run: RebuildRun, skip: Collection[str], done: threading.Event) -> None:
        """Keep starting the next index of each table not in ``skip`` until all are
        active or ``done`` is set: a table takes one new index at a time."""
        while not self._add_indexes(run, skip) and not done.wait(INDEX_POLL_SECONDS):
            pass

    def _settled(self, run: RebuildRun) -> FinishState:
        latest = self.control.load_run(run.rebuild_id) or run
        return FinishState.SWITCHED if latest.status == SWITCHED else FinishState.NOT_BUILDING

    def finish_waiting(
        self,
        run: RebuildRun,
        sleep: Callable[[float], None] = time.sleep,
        poll_seconds: float = FINISH_POLL_SECONDS,
    ) -> FinishState:
        """Call :meth:`finish` until the run switches or cannot; return the final state."""
        while True:
            state = self.finish(run)
            if state not in (FinishState.WAITING, FinishState.INDEXING):
                return state
            sleep(poll_seconds)

    def abandon(self, run: RebuildRun) -> None:
        self.control.abandon(run)
        for table in run.tables.values():
            if table not in self.base_tables.values():
                self.generations.delete_table(table)
        logger.info("rebuild abandoned", extra={"rebuild_id": run.rebuild_id})
