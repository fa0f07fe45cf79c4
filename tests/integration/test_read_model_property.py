"""Property test on DynamoDB Local: stream-fed read models equal rebuilt ones, row for row.

The same workloads and delivery schedules as the in-memory property tests, through
the real adapters: the DynamoDB event store, the live projector with its pointers,
and a rebuild with its parallel Scan, bulk load, sums, indexes and switch. Each
example gets its own tables.
"""

from __future__ import annotations

import random
import uuid
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.composition import build_rebuild_services
from infra.local.dynamodb_local import DynamoDBLocal
from infra.local.template import Template
from projections.catalog import PROJECTIONS
from projections.projection import row_key_tuple
from projections.rebuild import FinishState
from tests.lambda_support import handler_environment
from tests.read_model_workload import Workload, delivery_schedule, run_workload, tip_for, workloads

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb


def create_tables(client: DynamoDBClient) -> dict[str, str]:
    template = Template.load(name_prefix=f"p{uuid.uuid4().hex[:10]}-")
    for request in template.create_table_requests().values():
        request.pop("StreamSpecification", None)
        client.create_table(**request)
    return template.table_names()


def all_rows(services: Any, table: str, projection: Any) -> dict[tuple[str, ...], Any]:
    opened = services.read_side.open_table(projection, table)
    return {row_key_tuple(projection, row): row for row in opened.scan_rows(0, 1)}


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    workload=workloads,
    seed=st.integers(0, 2**32 - 1),
    segments=st.integers(1, 3),
    page_limit=st.integers(2, 12),
)
def test_stream_fed_tables_equal_rebuilt_tables(
    dynamodb_local_server: DynamoDBLocal,
    dynamodb_client: DynamoDBClient,
    workload: Workload,
    seed: int,
    segments: int,
    page_limit: int,
) -> None:
    tables = create_tables(dynamodb_client)
    services = build_rebuild_services(handler_environment(tables))
    recorded = run_workload(services.orders, workload)
    projector = services.read_side.live_projector(services.orders)
    for delivery in delivery_schedule(recorded, random.Random(seed)):
        projector.project_tip(tip_for(recorded, delivery))

    coordinator = services.coordinator(scan_segments=segments)
    run, _ = coordinator.start(list(PROJECTIONS.values()), segments)
    rebuilder = services.segment_rebuilder(run, flush_events=7, page_limit=page_limit)
    for segment in range(segments):
        rebuilder.run(segment)
    state = coordinator.finish_waiting(run, poll_seconds=0.05)

    live = {
        name: all_rows(services, services.read_side.base_tables[name], projection)
        for name, projection in PROJECTIONS.items()
    }
    rebuilt = {
        name: all_rows(services, run.tables[name], projection)
        for name, projection in PROJECTIONS.items()
    }
    services.orders.close()
    assert state == FinishState.SWITCHED
    assert rebuilt == live
