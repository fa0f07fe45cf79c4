"""Ports: what the application needs from infrastructure, declared as Protocols."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent

COMMAND_STREAM_PREFIX = "command#"


@dataclass(frozen=True)
class Tip:
    """The head of one stream: its version, the last commit's events and a snapshot."""

    stream_id: str
    version: int
    stream_type: str
    events: tuple[StoredEvent, ...]
    snapshot: StoredEvent | None
    recorded_at: str

    @property
    def first_version(self) -> int:
        """Version of the first event of the last commit."""
        return self.events[0].originator_version if self.events else self.version


@dataclass(frozen=True)
class CommandRecord:
    """Proof that a command ran, stored atomically with the events it produced."""

    command_id: str
    request_hash: str
    result: Mapping[str, str] = field(default_factory=dict)
    recorded_at: str = ""


@runtime_checkable
class TipRecorder(Protocol):
    """A recorder that keeps a tip per stream and records command ids."""

    def select_tip(self, originator_id: UUID | str) -> Tip | None: ...

    def select_command(self, command_id: str) -> CommandRecord | None: ...


@dataclass(frozen=True)
class Page:
    items: Sequence[Mapping[str, Any]]
    next_cursor: str | None


class InvalidCursorError(ValueError):
    """A pagination cursor was not issued by this API for this query."""


class OrderQueries(Protocol):
    """The read models the API queries. Lists are newest first unless documented otherwise."""

    def get_order(self, order_id: str) -> Mapping[str, Any] | None: ...

    def list_customer_orders(self, customer_id: str, limit: int, cursor: str | None) -> Page: ...

    def list_orders_by_status(self, status: str, limit: int, cursor: str | None) -> Page: ...

    def list_orders_needing_attention(self, limit: int, cursor: str | None) -> Page:
        """Orders an operator has to look at, longest flagged first."""
        ...

    def get_customer_stats(self, customer_id: str) -> Mapping[str, Any] | None: ...

    def get_stock(self, sku: str) -> Mapping[str, Any] | None: ...


class StaleRowError(Exception):
    """A read-model row changed between reading it and writing it back."""


class TableMissingError(LookupError):
    """A read-model table named by a projection pointer does not exist (any more)."""

    def __init__(self, table_name: str) -> None:
        super().__init__(f"read-model table {table_name} does not exist")
        self.table_name = table_name


RowKey = Mapping[str, str]
"""The key attributes of a read-model row; every key attribute is a string."""


@dataclass(frozen=True)
class Contribution:
    """What one stream adds to a row that sums many streams (customer stats).

    ``add`` contains numbers added atomically (DynamoDB ``ADD``), so contributions of
    different streams commute. ``set_once`` contains attributes written only if absent.
    """

    key: RowKey
    add: Mapping[str, int]
    set_once: Mapping[str, str] = field(default_factory=dict)


class ProjectionTable(Protocol):
    """One table (one generation) of a read model.

    Every per-stream row carries ``version``: the version of the last event of its
    stream that it reflects. Writes are guarded by it.
    """

    @property
    def name(self) -> str: ...

    def get_row(self, key: RowKey) -> dict[str, Any] | None:
        """Return the row, read consistently, or None."""
        ...

    def apply(
        self,
        key: RowKey,
        row: Mapping[str, Any],
        *,
        expected_version: int,
        contributions: Sequence[Contribution] = (),
    ) -> None:
        """Replace the row if it is at ``expected_version`` (0: no row yet), and add the
        contributions, all or nothing.

        Raises :class:`StaleRowError` if the row moved on (nothing is written) and
        :class:`TableMissingError` if the table is gone.
        """
        ...

    def put_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write whole rows without any condition, replacing what is stored (a bulk load).

        Only a rebuild's bulk load calls it, while no other writer touches the table.
        """
        ...

    def scan_rows(
        self, segment: int, total_segments: int, attributes: Sequence[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Yield every row of one scan segment, with only ``attributes`` when given
        (verification reads the whole table)."""
        ...


@dataclass(frozen=True)
class ScanPage:
    """One page of a segment of the event log, and the key to continue after it."""

    events: Sequence[StoredEvent]
    scanned: int
    next_key: str | None
    """Opaque continuation key; None once the segment is exhausted."""


class EventScanner(Protocol):
    """Reads the whole event log in parallel segments (DynamoDB parallel Scan)."""

    def scan_page(
        self,
        segment: int,
        total_segments: int,
        start_key: str | None,
        stream_types: Sequence[str],
        limit: int | None = None,
    ) -> ScanPage:
        """Return the next page of events of the given aggregate types in one segment.

        Within a segment a stream's events come in position order; ``limit`` caps the
        items examined per page (tests use it to get many small pages).
        """
        ...

    def approximate_item_count(self) -> int:
        """Items in the whole log table (events, tips, commands); may lag behind."""
        ...


@dataclass(frozen=True)
class ReservationRequest:
    order_id: str
    sku: str
    quantity: int


class ReservationQueue(Protocol):
    """Fan-out of an order's lines: one message per line to the item workers."""

    def send(self, requests: Sequence[ReservationRequest]) -> None: ...


class AttentionQueue(Protocol):
    """Dead-letter queue for saga steps that failed after their retries."""

    def report(self, *, order_id: str, step: str, reason: str) -> None: ...


@dataclass(frozen=True)
class SegmentCheckpoint:
    """How far one segment of a rebuild has got; saved after every flush of rows."""

    segment: int
    start_key: str | None = None
    """The key the scan continues after (opaque, from :class:`ScanPage`); None at the start."""
    pages: int = 0
    scanned: int = 0
    events: int = 0
    rows: int = 0
    done: bool = False


class SegmentClaimedError(RuntimeError):
    """Another worker has claimed the segment (a duplicate message, or a second process)."""


class RebuildCheckpoints(Protocol):
    """Per-segment progress, and a claim so that one worker at a time writes a segment.

    A claim lasts ``seconds`` unless renewed. The worker renews it after every page, so
    the claim of a killed worker runs out soon and another worker can take over.
    """

    def load_checkpoint(self, rebuild_id: str, segment: int) -> SegmentCheckpoint | None: ...

    def claim_segment(
        self, rebuild_id: str, segment: int, owner: str, now: float, seconds: float
    ) -> None:
        """Claim or renew the segment for ``owner``; raise :class:`SegmentClaimedError`
        if another owner's claim has not run out."""
        ...

    def save_checkpoint(
        self, rebuild_id: str, checkpoint: SegmentCheckpoint, owner: str, now: float, seconds: float
    ) -> None:
        """Record progress and renew the claim; raise :class:`SegmentClaimedError` if
        ``owner`` lost the claim (nothing is recorded then)."""
        ...

    def release_segment(self, rebuild_id: str, segment: int, owner: str) -> None:
        """End ``owner``'s claim early (a graceful stop); a no-op if it is not the owner."""
        ...


BULK_PHASE = "bulk"
GUARDED_PHASE = "guarded"


@dataclass(frozen=True)
class ProjectionPointer:
    """The table (generation) of a read model that queries read, and the one being built.

    Generation 0 is the table the template declares; a rebuild builds generation n+1
    in a new table and switches the pointer to it.
    """

    projection: str
    live_table: str
    live_generation: int = 0
    building_table: str | None = None
    building_generation: int | None = None
    rebuild_id: str | None = None
    previous_table: str | None = None
    switched_at: float | None = None
    last_generation: int = 0
    building_phase: str | None = None
    """``bulk`` while the rebuild loads the new table, ``guarded`` after it."""

    @property
    def marking_for(self) -> str | None:
        """The rebuild that needs the ids of changed streams: one in its bulk load."""
        bulk = self.building_table is not None and self.building_phase == BULK_PHASE
        return self.rebuild_id if bulk else None

    def write_targets(self, now: float, grace_seconds: float) -> list[str]:
        """Tables the projector keeps current under the version guard: live, the one being
        built once its bulk load is over, and for a short while after a switch the
        previous one, which stale readers may still query."""
        targets = [self.live_table]
        guarded = self.building_phase == GUARDED_PHASE
        if self.building_table and guarded and self.building_table not in targets:
            targets.append(self.building_table)
        recently_switched = self.switched_at is not None and now < self.switched_at + grace_seconds
        if self.previous_table and recently_switched and self.previous_table not in targets:
            targets.append(self.previous_table)
        return targets


@dataclass(frozen=True)
class RebuildRun:
    rebuild_id: str
    projections: tuple[str, ...]
    total_segments: int
    tables: Mapping[str, str]
    """Projection name -> the table this run builds."""
    generations: Mapping[str, int]
    scan_not_before: float
    """Epoch seconds; before it some projector may not yet know the new tables."""
    status: str = "scanning"
    """scanning, catching_up, indexing, switched or abandoned."""
    created_at: str = ""
    guarded_since: float | None = None
    """Epoch seconds when the pointers left the bulk phase."""


class RebuildConflictError(RuntimeError):
    """Another rebuild of the same read model is unfinished, or the pointer moved."""


class ProjectionControl(RebuildCheckpoints, Protocol):
    def pointer(self, projection: str) -> ProjectionPointer:
        """Return the pointer, read consistently; generation 0 if none was written."""
        ...

    def begin(self, run: RebuildRun) -> None:
        """Record the run and point each projection's ``building`` at its new table, all
        or nothing; raise :class:`RebuildConflictError` if one is already building."""
        ...

    def load_run(self, rebuild_id: str) -> RebuildRun | None: ...

    def checkpoints(self, rebuild_id: str) -> list[SegmentCheckpoint]: ...

    def claim_summing(self, run: RebuildRun, owner: str, now: float, seconds: float) -> bool:
        """Claim or renew, for ``owner``, the writing of the run's summing rows for
        ``seconds``.

        Return False if another finisher's claim has not run out, or if the run is
        past that step.
        """
        ...

    def release_summing(self, run: RebuildRun, owner: str) -> None:
        """End ``owner``'s claim early (a graceful stop)."""
        ...

    def enter_guarded_phase(self, run: RebuildRun, now: float) -> bool:
        """End the bulk load: projectors write the new tables under the guard from now on.

        Moves the run from scanning to catching_up; return False if it was not scanning.
        """
        ...

    def set_status(self, run: RebuildRun, expected: str, status: str) -> bool:
        """Move the run from ``expected`` to ``status``; return False if it was elsewhere."""
        ...

    def switch(self, run: RebuildRun, now: float) -> list[str] | None:
        """Make every table of the run live at once.

        Return the tables that dropped out of the pointers (the old previous
        generations), or None if the run had already switched or been abandoned.
        """
        ...

    def abandon(self, run: RebuildRun) -> None:
        """Stop pointing at the run's tables and mark it abandoned."""
        ...


class DirtyStreams(Protocol):
    """Streams that changed while a rebuild loaded its tables in bulk."""

    def mark(self, rebuild_id: str, stream_id: str, stream_type: str) -> None: ...

    def marked(self, rebuild_id: str) -> Iterator[tuple[str, str]]:
        """Yield (stream id, stream type) of every marked stream, each at least once."""
        ...


class TableGenerations(Protocol):
    def create_generation(self, base_table: str, generation: int) -> str:
        """Create an empty table with the keys of ``base_table`` but none of its secondary
        indexes; return its name."""
        ...

    def add_indexes(self, base_table: str, table_name: str) -> bool:
        """Start creating the next index that ``base_table`` has and ``table_name`` lacks;
        return True once the table has every index and all of them are active."""
        ...

    def delete_table(self, table_name: str) -> None: ...
