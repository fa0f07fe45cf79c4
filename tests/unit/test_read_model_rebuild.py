"""Property tests: live read models equal rebuilt ones, row for row.

The live side gets each commit's tip the way a stream consumer does: with drops
(later commits fill the gap), duplicates and streams interleaved. The rebuild
reads the log through a parallel scan in small pages, so streams are cut
between pages and flushes. The second test runs the rebuild while commits and
deliveries keep happening, stops segments part-way and crashes one mid-flush,
as a killed process would.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory_event_scan import MemoryEventScanner
from adapters.memory_read_models import MemoryProjectionTable, MemoryRebuildCheckpoints
from application.orders import OrdersApplication
from application.ports import NewRow, Tip
from projections.catalog import PROJECTIONS, projections_for
from projections.projection import stream_type_of
from projections.projector import GuardedProjector
from projections.rebuild import RebuildTarget, SegmentRebuilder
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


class LiveProjector:
    """What the stream handler does with a tip: apply it to every target table."""

    def __init__(self, app: OrdersApplication) -> None:
        self.projectors = {
            name: GuardedProjector(projection, app.mapper.to_domain_event, read_events_of(app))
            for name, projection in PROJECTIONS.items()
        }

    def deliver(self, tip: Tip, targets: Sequence[Tables]) -> None:
        for projection in projections_for(tip.stream_type):
            for tables in targets:
                self.projectors[projection.name].project(tables[projection.name], tip)


def rebuilder(
    app: OrdersApplication,
    tables: Mapping[str, Any],
    checkpoints: MemoryRebuildCheckpoints,
    segments: int,
    page_limit: int,
    flush_events: int,
) -> SegmentRebuilder:
    return SegmentRebuilder(
        rebuild_id="r1",
        total_segments=segments,
        targets=[RebuildTarget(PROJECTIONS[name], table) for name, table in tables.items()],
        scanner=MemoryEventScanner(app.recorder),
        decode=app.mapper.to_domain_event,
        read_events=read_events_of(app),
        checkpoints=checkpoints,
        flush_events=flush_events,
        page_limit=page_limit,
    )


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
    app = new_app()
    recorded = run_workload(app, workload)
    live = new_tables("live")
    projector = LiveProjector(app)
    for delivery in delivery_schedule(recorded, random.Random(seed)):
        projector.deliver(tip_for(recorded, delivery), [live])

    rebuilt = new_tables("g1")
    segment_rebuilder = rebuilder(
        app, rebuilt, MemoryRebuildCheckpoints(), segments, page_limit, flush_events
    )
    for segment in range(segments):
        segment_rebuilder.run(segment)

    assert rows(rebuilt) == rows(live)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workload=workloads, seed=st.integers(0, 2**32 - 1))
def test_rebuilt_read_models_equal_the_fold_of_every_stream(workload: Workload, seed: int) -> None:
    app = new_app()
    run_workload(app, workload)
    rng = random.Random(seed)
    segments = rng.randint(1, 4)
    rebuilt = new_tables("g1")
    segment_rebuilder = rebuilder(
        app, rebuilt, MemoryRebuildCheckpoints(), segments, rng.randint(1, 9), rng.randint(1, 40)
    )
    for segment in range(segments):
        segment_rebuilder.run(segment)

    assert rows(rebuilt) == oracle(app)


class KilledError(Exception):
    """Stands for the process being killed."""


class CrashingTable:
    """A table whose n-th bulk create fails after writing the first half of its rows,
    like a process killed in the middle of a flush."""

    def __init__(self, table: MemoryProjectionTable, crash_at: int) -> None:
        self.table = table
        self.crash_at = crash_at
        self.calls = 0

    @property
    def name(self) -> str:
        return self.table.name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.table, attribute)

    def create_rows(self, new_rows: Sequence[NewRow]) -> list[int]:
        self.calls += 1
        if self.calls == self.crash_at:
            self.table.create_rows(new_rows[: len(new_rows) // 2])
            raise KilledError("killed mid-flush")
        return self.table.create_rows(new_rows)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=workloads,
    seed=st.integers(0, 2**32 - 1),
    segments=st.integers(1, 3),
    crash_at=st.integers(1, 6),
)
def test_rebuild_during_live_traffic_loses_nothing(
    workload: Workload, seed: int, segments: int, crash_at: int
) -> None:
    """Commits, deliveries and rebuild pages interleave at random. From the moment the
    rebuild starts the projector writes to the live tables and to the new ones."""
    rng = random.Random(seed)
    app = new_app()
    runner = WorkloadRunner(app, workload)
    steps = runner.steps()
    started = rng.randint(0, len(steps))
    for step in steps[:started]:
        step()
    live = new_tables("live")
    projector = LiveProjector(app)
    delivered_commits = {stream: 0 for stream in runner.recorded.tips}
    pending = delivery_schedule(runner.recorded, rng)
    for delivery in pending[: rng.randint(0, len(pending))]:
        projector.deliver(tip_for(runner.recorded, delivery), [live])
        delivered_commits[delivery.stream_id] = max(
            delivered_commits[delivery.stream_id], delivery.commit + 1
        )

    building = new_tables("g1")
    crashing = {name: CrashingTable(table, crash_at) for name, table in building.items()}
    checkpoints = MemoryRebuildCheckpoints()
    page_limit, flush_events = rng.randint(1, 6), rng.randint(1, 25)
    crashy = rebuilder(app, crashing, checkpoints, segments, page_limit, flush_events)
    steady = rebuilder(app, building, checkpoints, segments, page_limit, flush_events)
    remaining_steps = list(steps[started:])
    unfinished = set(range(segments))

    def one_page() -> Callable[[], bool]:
        return lambda: True

    while remaining_steps or unfinished:
        choice = rng.random()
        if remaining_steps and choice < 0.4:
            remaining_steps.pop(0)()
        elif choice < 0.7 and runner.recorded.tips:
            # Deliver some of what has been committed so far: the newest commit of a
            # random stream, perhaps a second time.
            stream_id = rng.choice(sorted(runner.recorded.tips))
            tips = runner.recorded.tips[stream_id]
            commit = rng.randint(delivered_commits.get(stream_id, 0), len(tips)) - 1
            if commit >= 0:
                projector.deliver(tips[commit], [live, building])
                delivered_commits[stream_id] = max(delivered_commits.get(stream_id, 0), commit + 1)
        elif unfinished:
            segment = rng.choice(sorted(unfinished))
            try:
                checkpoint = crashy.run(segment, should_stop=one_page())
            except KilledError:
                checkpoint = steady.run(segment, should_stop=one_page())
            if checkpoint.done:
                unfinished.discard(segment)

    # The stream eventually delivers every stream's last commit.
    for tips in runner.recorded.tips.values():
        projector.deliver(tips[-1], [live, building])

    assert rows(building) == rows(live)
