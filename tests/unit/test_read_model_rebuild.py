"""Property tests: live read models equal rebuilt ones, row for row.

The live side gets each commit's tip the way a stream consumer does: with drops
(later commits fill the gap), duplicates and streams interleaved. The rebuild
reads the log through a parallel scan in small pages, so streams are cut between
pages and flushes. The last test runs the rebuild while commits and deliveries
keep happening, through both of its phases, stops segments part-way and kills one
in the middle of a flush.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory_event_scan import MemoryEventScanner
from adapters.memory_read_models import (
    MemoryDirtyStreams,
    MemoryProjectionTable,
    MemoryRebuildCheckpoints,
)
from application.orders import OrdersApplication
from application.ports import BULK_PHASE, GUARDED_PHASE, ProjectionPointer, RebuildRun, Tip
from projections.catalog import PROJECTIONS
from projections.live import LiveProjector
from projections.projection import Projection, stream_type_of
from projections.projector import GuardedProjector
from projections.rebuild import CatchUp, RebuildTarget, SegmentRebuilder
from projections.replay import replay
from tests.read_model_workload import (
    Workload,
    WorkloadRunner,
    delivery_schedule,
    run_workload,
    streams_of,
    tip_for,
    workloads,
)

Tables = dict[str, MemoryProjectionTable]
REBUILD_ID = "r1"


def new_app() -> OrdersApplication:
    return OrdersApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})


def new_tables(label: str) -> Tables:
    return {
        name: MemoryProjectionTable(f"{name}-{label}", projection.key_attributes)
        for name, projection in PROJECTIONS.items()
    }


def rows(tables: Mapping[str, MemoryProjectionTable]) -> dict[str, dict[Any, Any]]:
    return {name: dict(table.rows) for name, table in tables.items()}


def read_events_of(app: OrdersApplication) -> Callable[[str, int, int], Any]:
    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return app.recorder.select_events(stream_id, gt=after, lte=up_to)

    return read_events


def projectors_of(app: OrdersApplication) -> dict[str, GuardedProjector]:
    return {
        name: GuardedProjector(projection, app.mapper.to_domain_event, read_events_of(app))
        for name, projection in PROJECTIONS.items()
    }


@dataclass
class MemoryDirectory:
    """Pointers that change at once for every projector (a cache lifetime of zero)."""

    pointers: dict[str, ProjectionPointer]

    def pointer(self, projection: str) -> ProjectionPointer:
        return self.pointers[projection]

    def write_targets(self, projection: str) -> list[str]:
        return self.pointers[projection].write_targets(now=0.0, grace_seconds=0.0)

    def invalidate(self, projection: str) -> None:
        return None

    def set_phase(self, live: Tables, building: Tables | None, phase: str | None) -> None:
        for name in PROJECTIONS:
            self.pointers[name] = ProjectionPointer(
                projection=name,
                live_table=live[name].name,
                building_table=building[name].name if building else None,
                rebuild_id=REBUILD_ID if building else None,
                building_phase=phase,
            )


@dataclass
class World:
    """One application, its live tables, the tables a rebuild builds, and the projector."""

    app: OrdersApplication
    live: Tables = field(default_factory=lambda: new_tables("live"))
    building: Tables = field(default_factory=lambda: new_tables("g1"))
    dirty: MemoryDirtyStreams = field(default_factory=MemoryDirtyStreams)
    directory: MemoryDirectory = field(default_factory=lambda: MemoryDirectory({}))

    def __post_init__(self) -> None:
        self.directory.set_phase(self.live, None, None)
        by_name = {table.name: table for table in (*self.live.values(), *self.building.values())}
        self.by_name = by_name
        self.projector = LiveProjector(
            projectors_of(self.app), self.directory, self.open_table, self.dirty
        )

    def open_table(self, projection: Projection, name: str) -> MemoryProjectionTable:
        return self.by_name[name]

    def deliver(self, tip: Tip) -> None:
        self.projector.project_tip(tip)

    def run(self) -> RebuildRun:
        return RebuildRun(
            rebuild_id=REBUILD_ID,
            projections=tuple(PROJECTIONS),
            total_segments=1,
            tables={name: table.name for name, table in self.building.items()},
            generations={name: 1 for name in PROJECTIONS},
            scan_not_before=0.0,
        )

    def catch_up(self) -> CatchUp:
        def read_tip(stream_id: str) -> Tip | None:
            return self.app.recorder.select_tip(stream_id)  # type: ignore[attr-defined, no-any-return]

        return CatchUp(
            dirty=self.dirty,
            read_tip=read_tip,
            projectors=projectors_of(self.app),
            open_table=self.open_table,
            scan_segments=3,
        )

    def rebuilder(
        self,
        tables: Mapping[str, Any],
        checkpoints: MemoryRebuildCheckpoints,
        segments: int,
        page_limit: int,
        flush_events: int,
    ) -> SegmentRebuilder:
        return SegmentRebuilder(
            rebuild_id=REBUILD_ID,
            total_segments=segments,
            targets=[RebuildTarget(PROJECTIONS[name], table) for name, table in tables.items()],
            scanner=MemoryEventScanner(self.app.recorder),
            decode=self.app.mapper.to_domain_event,
            read_events=read_events_of(self.app),
            checkpoints=checkpoints,
            flush_events=flush_events,
            page_limit=page_limit,
        )


def rebuild_quietly(world: World, segments: int, page_limit: int, flush_events: int) -> None:
    segment_rebuilder = world.rebuilder(
        world.building, MemoryRebuildCheckpoints(), segments, page_limit, flush_events
    )
    for segment in range(segments):
        segment_rebuilder.run(segment)
    world.catch_up().sum_rows(world.run())


def oracle(app: OrdersApplication) -> dict[str, dict[Any, Any]]:
    """Every read model as the fold of each whole stream, summed per summing row."""
    types = {
        str(event.originator_id): stream_type_of(event.topic)
        for event in MemoryEventScanner(app.recorder).all_events()
    }
    result = {}
    for name, projection in PROJECTIONS.items():
        stream_ids = sorted(sid for sid, kind in types.items() if kind in projection.stream_types)
        result[name] = replay(projection, streams_of(app, stream_ids))
    return result


@pytest.fixture
def app() -> Iterator[OrdersApplication]:
    orders = new_app()
    yield orders
    orders.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=workloads,
    seed=st.integers(0, 2**32 - 1),
    segments=st.integers(1, 4),
    page_limit=st.integers(1, 7),
    flush_events=st.integers(1, 30),
)
def test_live_read_models_equal_rebuilt_ones(
    workload: Workload, seed: int, segments: int, page_limit: int, flush_events: int
) -> None:
    world = World(new_app())
    recorded = run_workload(world.app, workload)
    for delivery in delivery_schedule(recorded, random.Random(seed)):
        world.deliver(tip_for(recorded, delivery))

    rebuild_quietly(world, segments, page_limit, flush_events)

    assert rows(world.building) == rows(world.live)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads, seed=st.integers(0, 2**32 - 1))
def test_rebuilt_read_models_equal_replay(workload: Workload, seed: int) -> None:
    world = World(new_app())
    run_workload(world.app, workload)
    rng = random.Random(seed)

    rebuild_quietly(world, rng.randint(1, 4), rng.randint(1, 9), rng.randint(1, 40))

    assert rows(world.building) == oracle(world.app)


class KilledError(Exception):
    """Stands for the process being killed."""


class DyingTable:
    """A table whose n-th bulk write stores half of its rows and dies, like a process
    killed in the middle of a flush."""

    def __init__(self, table: MemoryProjectionTable, die_at: int) -> None:
        self.table = table
        self.die_at = die_at
        self.calls = 0

    @property
    def name(self) -> str:
        return self.table.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.table, attribute)

    def put_rows(self, new_rows: Sequence[Mapping[str, Any]]) -> None:
        self.calls += 1
        if self.calls == self.die_at:
            self.table.put_rows(new_rows[: len(new_rows) // 2])
            raise KilledError("killed mid-flush")
        self.table.put_rows(new_rows)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=workloads,
    seed=st.integers(0, 2**32 - 1),
    segments=st.integers(1, 3),
    die_at=st.integers(1, 6),
)
def test_rebuild_during_live_traffic_loses_nothing(
    workload: Workload, seed: int, segments: int, die_at: int
) -> None:
    """Commits, deliveries and rebuild steps interleave at random: the bulk load page by
    page, the sums, the switch of projectors to guarded writes, the catch-up."""
    rng = random.Random(seed)
    world = World(new_app())
    runner = WorkloadRunner(world.app, workload)
    steps = runner.steps()
    started = rng.randint(0, len(steps))
    for step in steps[:started]:
        step()
    delivered = {stream: 0 for stream in runner.recorded.tips}
    pending = delivery_schedule(runner.recorded, rng)
    for delivery in pending[: rng.randint(0, len(pending))]:
        world.deliver(tip_for(runner.recorded, delivery))
        delivered[delivery.stream_id] = max(delivered[delivery.stream_id], delivery.commit + 1)

    world.directory.set_phase(world.live, world.building, BULK_PHASE)
    checkpoints = MemoryRebuildCheckpoints()
    page_limit, flush_events = rng.randint(1, 6), rng.randint(1, 25)
    dying = {name: DyingTable(table, die_at) for name, table in world.building.items()}
    crashy = world.rebuilder(dying, checkpoints, segments, page_limit, flush_events)
    steady = world.rebuilder(world.building, checkpoints, segments, page_limit, flush_events)
    catch_up = world.catch_up()
    remaining = list(steps[started:])
    unfinished = set(range(segments))
    phase = "bulk"

    def deliver_something() -> None:
        # The newest commit of a random stream, or the one delivered last once more.
        stream_id = rng.choice(sorted(runner.recorded.tips))
        tips = runner.recorded.tips[stream_id]
        commit = rng.randint(delivered.get(stream_id, 0), len(tips)) - 1
        if commit >= 0:
            world.deliver(tips[commit])
            delivered[stream_id] = max(delivered.get(stream_id, 0), commit + 1)

    while remaining or phase != "done":
        choice = rng.random()
        if remaining and choice < 0.35:
            remaining.pop(0)()
        elif choice < 0.65 and runner.recorded.tips:
            deliver_something()
        elif phase == "bulk" and unfinished:
            segment = rng.choice(sorted(unfinished))
            try:
                checkpoint = crashy.run(segment, should_stop=lambda: True)
            except KilledError:
                checkpoint = steady.run(segment, should_stop=lambda: True)
            if checkpoint.done:
                unfinished.discard(segment)
        elif phase == "bulk":
            catch_up.sum_rows(world.run())
            world.directory.set_phase(world.live, world.building, GUARDED_PHASE)
            phase = "guarded"
        elif phase == "guarded":
            catch_up.apply_marked(world.run())
            phase = "done"

    # The stream eventually delivers every commit. One already delivered may never come
    # again, so what the bulk load missed must have been marked and caught up.
    for stream_id, tips in runner.recorded.tips.items():
        if delivered.get(stream_id, 0) < len(tips):
            world.deliver(tips[-1])

    assert rows(world.building) == rows(world.live)


def test_bulk_phase_marks_instead_of_writing(app: OrdersApplication) -> None:
    world = World(app)
    world.directory.set_phase(world.live, world.building, BULK_PHASE)
    recorded = run_workload(app, Workload(stock=(1, 0, 0, 0), orders=()))
    stream_id, tips = next(iter(recorded.tips.items()))

    world.deliver(tips[-1])

    assert list(world.dirty.marked(REBUILD_ID)) == [(stream_id, tips[-1].stream_type)]
    assert all(not table.rows for table in world.building.values())


def test_guarded_phase_writes_the_new_tables(app: OrdersApplication) -> None:
    world = World(app)
    world.directory.set_phase(world.live, world.building, GUARDED_PHASE)
    recorded = run_workload(app, Workload(stock=(1, 0, 0, 0), orders=()))
    _, tips = next(iter(recorded.tips.items()))

    world.deliver(tips[-1])

    assert rows(world.building)["inventory_levels"] == rows(world.live)["inventory_levels"]
    assert list(world.dirty.marked(REBUILD_ID)) == []


def test_rerun_flush_replaces_rows(app: OrdersApplication) -> None:
    world = World(app)
    run_workload(app, Workload(stock=(3, 1, 0, 0), orders=()))
    rebuild_quietly(world, 1, 2, 1)
    first = rows(world.building)

    rebuild_quietly(world, 1, 2, 1)

    assert rows(world.building) == first
