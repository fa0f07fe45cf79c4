"""Rebuilding read models on DynamoDB Local: switch, resume, live commits, the function."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from adapters.composition import RebuildServices, build_rebuild_services
from application.ports import RebuildConflictError, RebuildRun, SegmentClaimedError
from projections.catalog import PROJECTIONS, projections_named
from projections.rebuild import FinishState, RebuildTarget, SegmentRebuilder, segment_message_body
from projections.verify import Report, verify
from tests.lambda_support import (
    FakeLambdaContext,
    api_event,
    guard_calls,
    handler_environment,
    load_handler_module,
)
from tests.read_model_workload import PlannedOrder, Workload, WorkloadRunner

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb

PAGE_LIMIT = 7
WORKLOAD = Workload(
    stock=(5, 0, 2, 9),
    orders=tuple(
        PlannedOrder(
            customer=f"c-{index % 3}",
            currency="USD" if index % 4 else "EUR",
            lines=(("MUG", 1 + index % 2, 1250), ("TEA", 1, 499))[: 1 + index % 2],
            outcome=outcome,
            attention=("none", "flagged", "resolved")[index % 3],
        )
        for index, outcome in enumerate(
            [
                "fulfilled",
                "placed",
                "unavailable",
                "paid",
                "cancelled_paid",
                "failed_paid",
                "reserved",
                "cancelled_placed",
                "fulfilled",
                "paid",
            ]
        )
    ),
)


@pytest.fixture
def environment(tables: dict[str, str]) -> dict[str, str]:
    return handler_environment(tables)


@pytest.fixture
def services(environment: dict[str, str]) -> Iterator[RebuildServices]:
    built = build_rebuild_services(environment)
    yield built
    built.orders.close()


@pytest.fixture
def projector(monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]) -> ModuleType:
    return load_handler_module("lambdas.projector", monkeypatch, tables)


@dataclass
class Traffic:
    """The workload's commits, run on demand, each delivered once to the live projector."""

    runner: WorkloadRunner
    projector: ModuleType
    steps: list[Callable[[], None]] = field(default_factory=list)
    delivered: int = 0

    def commit(self, count: int) -> None:
        for _ in range(min(count, len(self.steps))):
            self.steps.pop(0)()
        self.deliver()

    def deliver(self) -> None:
        tips = [tip for tips in self.runner.recorded.tips.values() for tip in tips]
        tips.sort(key=lambda tip: tip.recorded_at)
        for tip in tips[self.delivered :]:
            self.projector.project_tip(tip)
        self.delivered = len(tips)


@pytest.fixture
def traffic(services: RebuildServices, projector: ModuleType) -> Traffic:
    runner = WorkloadRunner(services.orders, WORKLOAD)
    return Traffic(runner, projector, runner.steps())


def run_segments(
    services: RebuildServices,
    run: RebuildRun,
    *,
    stop_after_pages: int | None = None,
    rebuilder: SegmentRebuilder | None = None,
) -> list[Any]:
    segment_rebuilder = rebuilder or services.segment_rebuilder(
        run, flush_events=10, page_limit=PAGE_LIMIT
    )
    checkpoints = []
    for segment in range(run.total_segments):
        pages = 0

        def stop() -> bool:
            nonlocal pages
            pages += 1
            return stop_after_pages is not None and pages >= stop_after_pages

        checkpoints.append(segment_rebuilder.run(segment, should_stop=stop))
    return checkpoints


def rebuild_all(services: RebuildServices, segments: int = 3) -> RebuildRun:
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), segments)
    run_segments(services, run)
    assert coordinator.finish_waiting(run, poll_seconds=0.05) == FinishState.SWITCHED
    return run


def verify_live(services: RebuildServices) -> list[Report]:
    read_side = services.read_side

    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return services.orders.recorder.select_events(stream_id, gt=after, lte=up_to)

    return verify(
        list(PROJECTIONS.values()),
        services.scanner,
        services.orders.mapper.to_domain_event,
        read_events,
        lambda p: read_side.open_table(p, read_side.control.pointer(p.name).live_table),
        total_segments=2,
    )


def differences(reports: Sequence[Report]) -> dict[str, list[str]]:
    return {report.projection: [d.describe() for d in report.differences] for report in reports}


NO_DIFFERENCES = {name: [] for name in PROJECTIONS}


def table_exists(client: DynamoDBClient, name: str) -> bool:
    try:
        client.describe_table(TableName=name)
    except client.exceptions.ResourceNotFoundException:
        return False
    return True


def test_rebuild_switches_to_equal_tables(services: RebuildServices, traffic: Traffic) -> None:
    traffic.commit(len(traffic.steps))
    assert differences(verify_live(services)) == NO_DIFFERENCES  # the stream-fed tables

    run = rebuild_all(services)

    pointers = {name: services.read_side.control.pointer(name) for name in PROJECTIONS}
    assert {name: p.live_table for name, p in pointers.items()} == dict(run.tables)
    assert differences(verify_live(services)) == NO_DIFFERENCES


def test_api_reads_the_switched_tables(
    services: RebuildServices,
    traffic: Traffic,
    monkeypatch: pytest.MonkeyPatch,
    tables: dict[str, str],
    dynamodb_client: DynamoDBClient,
) -> None:
    traffic.commit(len(traffic.steps))
    rebuild_all(services)
    order_id = next(
        stream_id
        for stream_id, tips in traffic.runner.recorded.tips.items()
        if tips[0].stream_type.endswith(":Order")
    )
    # Once the pointer moved, queries no longer read the template's table.
    dynamodb_client.delete_item(
        TableName=tables["OrderSummariesTable"], Key={"order_id": {"S": order_id}}
    )
    api = load_handler_module("lambdas.api", monkeypatch, tables)

    response = api.handler(api_event("GET", f"/orders/{order_id}"), FakeLambdaContext())

    assert response["statusCode"] == 200


def test_stopped_rebuild_resumes_from_its_checkpoints(
    services: RebuildServices, traffic: Traffic, environment: dict[str, str]
) -> None:
    traffic.commit(len(traffic.steps))
    run, resumed = services.coordinator().start(list(PROJECTIONS.values()), 2)
    stopped = run_segments(services, run, stop_after_pages=2)
    assert not any(checkpoint.done for checkpoint in stopped)

    # A new process: the same command finds the unfinished run.
    again = build_rebuild_services(environment)
    same_run, resumed = again.coordinator().start(list(PROJECTIONS.values()), 2)
    finished = run_segments(again, same_run)

    assert (same_run.rebuild_id, resumed) == (run.rebuild_id, True)
    assert [c.pages > s.pages for c, s in zip(finished, stopped, strict=True)] == [True, True]
    assert again.coordinator().finish_waiting(same_run, poll_seconds=0.05) == FinishState.SWITCHED
    assert differences(verify_live(again)) == NO_DIFFERENCES


class KilledError(Exception):
    """Stands for the process being killed."""


class DyingTable:
    """Forwards to a table; its first bulk write stores part of the rows and dies."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.died = False

    @property
    def name(self) -> str:
        return str(self.table.name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.table, attribute)

    def put_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not self.died:
            self.died = True
            self.table.put_rows(rows[: len(rows) // 2])
            raise KilledError("killed mid-flush")
        self.table.put_rows(rows)


def test_killed_flush_is_redone_once(services: RebuildServices, traffic: Traffic) -> None:
    traffic.commit(len(traffic.steps))
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), 1)
    steady = services.segment_rebuilder(run, flush_events=10, page_limit=PAGE_LIMIT)
    dying = SegmentRebuilder(
        rebuild_id=run.rebuild_id,
        total_segments=1,
        targets=[RebuildTarget(t.projection, DyingTable(t.table)) for t in steady.targets],
        scanner=steady.scanner,
        decode=steady.decode,
        read_events=steady.read_events,
        checkpoints=steady.checkpoints,
        flush_events=10,
        page_limit=PAGE_LIMIT,
    )
    with pytest.raises(KilledError):
        dying.run(0)

    run_segments(services, run, rebuilder=steady)

    assert coordinator.finish_waiting(run, poll_seconds=0.05) == FinishState.SWITCHED
    assert differences(verify_live(services)) == NO_DIFFERENCES


def test_commits_during_the_rebuild_reach_the_new_tables(
    services: RebuildServices, traffic: Traffic
) -> None:
    traffic.commit(len(traffic.steps) // 2)
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), 2)
    run_segments(services, run, stop_after_pages=1)
    traffic.commit(len(traffic.steps) // 2)  # the projector writes live and new tables
    run_segments(services, run, stop_after_pages=2)
    traffic.commit(len(traffic.steps))
    run_segments(services, run)

    assert coordinator.finish_waiting(run, poll_seconds=0.05) == FinishState.SWITCHED
    assert differences(verify_live(services)) == NO_DIFFERENCES


def test_second_worker_on_a_claimed_segment_is_refused(services: RebuildServices) -> None:
    run, _ = services.coordinator().start(list(PROJECTIONS.values()), 1)
    services.read_side.control.claim_segment(run.rebuild_id, 0, "other", time.time(), 60)

    with pytest.raises(SegmentClaimedError, match="claimed by another worker"):
        services.segment_rebuilder(run).run(0)


def test_claim_of_a_killed_worker_runs_out(services: RebuildServices, traffic: Traffic) -> None:
    traffic.commit(len(traffic.steps))
    run, _ = services.coordinator().start(list(PROJECTIONS.values()), 1)
    services.read_side.control.claim_segment(run.rebuild_id, 0, "killed", time.time() - 120, 60)

    checkpoint = services.segment_rebuilder(run).run(0)

    assert checkpoint.done


def test_finish_waits_while_another_finisher_writes_the_sums(
    services: RebuildServices, traffic: Traffic
) -> None:
    traffic.commit(len(traffic.steps))
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), 1)
    run_segments(services, run)
    services.read_side.control.claim_summing(run, "other", time.time(), 60)

    assert coordinator.finish(run) == FinishState.WAITING
    assert services.read_side.control.pointer("customer_stats").building_phase == "bulk"


def test_finish_takes_over_killed_sums(services: RebuildServices, traffic: Traffic) -> None:
    traffic.commit(len(traffic.steps))
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), 1)
    run_segments(services, run)
    services.read_side.control.claim_summing(run, "killed", time.time() - 120, 60)

    assert coordinator.finish_waiting(run, poll_seconds=0.05) == FinishState.SWITCHED
    assert differences(verify_live(services)) == NO_DIFFERENCES


def test_overlapping_unfinished_rebuild_is_refused(services: RebuildServices) -> None:
    coordinator = services.coordinator()
    coordinator.start(list(PROJECTIONS.values()), 2)

    with pytest.raises(RebuildConflictError, match="is unfinished"):
        coordinator.start(projections_named(["order_summary"]), 2)


def test_restart_drops_the_unfinished_rebuild(
    services: RebuildServices, dynamodb_client: DynamoDBClient
) -> None:
    coordinator = services.coordinator()
    first, _ = coordinator.start(projections_named(["order_summary"]), 2)

    second, resumed = coordinator.start(projections_named(["order_summary"]), 2, restart=True)

    assert (resumed, second.rebuild_id != first.rebuild_id) == (False, True)
    assert not table_exists(dynamodb_client, first.tables["order_summary"])


def test_third_rebuild_drops_the_first_generation(
    services: RebuildServices, traffic: Traffic, dynamodb_client: DynamoDBClient
) -> None:
    traffic.commit(len(traffic.steps))
    first = rebuild_all(services, segments=1)
    rebuild_all(services, segments=1)
    third = rebuild_all(services, segments=1)

    kept = {
        table: table_exists(dynamodb_client, table)
        for table in (
            *first.tables.values(),
            *third.tables.values(),
            *services.read_side.base_tables.values(),
        )
    }
    assert kept == {
        **{table: False for table in first.tables.values()},
        **{table: True for table in third.tables.values()},
        **{table: True for table in services.read_side.base_tables.values()},
    }


# The rebuild function -------------------------------------------------------------------


class FakeQueue:
    def __init__(self) -> None:
        self.bodies: list[str] = []

    def send_message(self, **request: Any) -> dict[str, str]:
        self.bodies.append(request["MessageBody"])
        return {"MessageId": str(len(self.bodies))}


class LongContext(FakeLambdaContext):
    """An invocation with most of the rebuild function's 15 minutes left."""

    def get_remaining_time_in_millis(self) -> int:
        return 800_000


class ShortContext(FakeLambdaContext):
    """An invocation with less time left than one flush needs."""

    def get_remaining_time_in_millis(self) -> int:
        return 1_000


def sqs_event(*bodies: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": f"m-{index}",
                "receiptHandle": "handle",
                "body": body,
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:RebuildQueue",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }


@pytest.fixture
def rebuild_function(monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]) -> ModuleType:
    monkeypatch.setenv("REBUILD_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/000000000000/q")
    monkeypatch.setenv("REBUILD_FLUSH_EVENTS", "5")
    monkeypatch.setenv("REBUILD_SCAN_PAGE_ITEMS", str(PAGE_LIMIT))
    module = load_handler_module("lambdas.rebuild", monkeypatch, tables)
    monkeypatch.setattr(module, "sqs", FakeQueue())
    return module


def test_rebuild_function_switches_after_the_last_segment(
    services: RebuildServices, traffic: Traffic, rebuild_function: ModuleType
) -> None:
    traffic.commit(len(traffic.steps))
    run, _ = services.coordinator().start(list(PROJECTIONS.values()), 2)
    bodies = [segment_message_body(run.rebuild_id, segment) for segment in range(2)]

    answer = rebuild_function.handler(sqs_event(*bodies), LongContext())
    # Index checks come back as delayed messages until the indexes are active.
    for _ in range(200):
        if not rebuild_function.sqs.bodies:
            break
        time.sleep(0.05)
        rebuild_function.handler(sqs_event(rebuild_function.sqs.bodies.pop(0)), LongContext())

    assert answer == {"batchItemFailures": []}
    assert (
        services.read_side.control.pointer("order_summary").live_table
        == run.tables["order_summary"]
    )
    assert differences(verify_live(services)) == NO_DIFFERENCES


def test_rebuild_function_hands_over_when_time_runs_short(
    services: RebuildServices, traffic: Traffic, rebuild_function: ModuleType
) -> None:
    traffic.commit(len(traffic.steps))
    run, _ = services.coordinator().start(list(PROJECTIONS.values()), 1)
    body = segment_message_body(run.rebuild_id, 0)

    rebuild_function.handler(sqs_event(body), ShortContext())

    assert rebuild_function.sqs.bodies == [body]
    assert services.read_side.control.pointer("order_summary").rebuild_id == run.rebuild_id


def test_rebuild_function_rejects_a_malformed_message(rebuild_function: ModuleType) -> None:
    answer = rebuild_function.handler(
        sqs_event(json.dumps({"rebuild_id": "x; DROP", "segment": -1})), LongContext()
    )
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}


# The functions' calls against their roles in the template ------------------------


def test_rebuild_function_calls_only_what_its_role_allows(
    services: RebuildServices,
    traffic: Traffic,
    monkeypatch: pytest.MonkeyPatch,
    tables: dict[str, str],
) -> None:
    traffic.commit(len(traffic.steps) // 2)
    guard = guard_calls("RebuildFunction", monkeypatch, tables)
    monkeypatch.setenv("REBUILD_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/000000000000/q")
    monkeypatch.setenv("REBUILD_FLUSH_EVENTS", "5")
    monkeypatch.setenv("REBUILD_SCAN_PAGE_ITEMS", str(PAGE_LIMIT))
    function = load_handler_module("lambdas.rebuild", monkeypatch, tables)
    monkeypatch.setattr(function, "sqs", FakeQueue())
    run, _ = services.coordinator().start(list(PROJECTIONS.values()), 2)
    traffic.commit(len(traffic.steps))  # marked during the bulk load: caught up at the end
    bodies = [segment_message_body(run.rebuild_id, segment) for segment in range(2)]

    function.handler(sqs_event(*bodies), LongContext())
    for _ in range(200):
        if not function.sqs.bodies:
            break
        time.sleep(0.05)
        function.handler(sqs_event(function.sqs.bodies.pop(0)), LongContext())

    # The whole run went through the function: scan, bulk load, sums, catch-up, switch.
    pointer = services.read_side.control.pointer("order_summary")
    assert pointer.live_table == run.tables["order_summary"]
    assert sorted({str(permission) for permission in guard.denied}) == []


def test_projector_calls_only_what_its_role_allows(
    services: RebuildServices, monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]
) -> None:
    guard = guard_calls("ProjectorFunction", monkeypatch, tables)
    projector = load_handler_module("lambdas.projector", monkeypatch, tables)
    runner = WorkloadRunner(services.orders, WORKLOAD)
    traffic = Traffic(runner, projector, runner.steps())
    traffic.commit(len(traffic.steps) // 3)
    coordinator = services.coordinator()
    run, _ = coordinator.start(list(PROJECTIONS.values()), 2)
    traffic.commit(len(traffic.steps) // 2)  # bulk phase: live tables, streams marked
    run_segments(services, run)
    assert coordinator.finish_waiting(run, poll_seconds=0.05) == FinishState.SWITCHED
    traffic.commit(len(traffic.steps))  # the new tables, under the guard

    assert {"dynamodb:PutItem", "dynamodb:UpdateItem"} <= {p.action for p in guard.checked}
    assert sorted({str(permission) for permission in guard.denied}) == []
