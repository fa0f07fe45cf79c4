"""Loading an aggregate costs one read of its tip, however long its history."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import boto3
import pytest
from eventsourcing.domain import Aggregate, event

from adapters.eventstore.dynamodb import DynamoDBRecorder
from application.eventsourced import TipApplication
from infra.local.dynamodb_local import DynamoDBLocal
from tests.botocore_calls import recorded_calls
from tests.integration.events_table import create_events_table_without_stream

pytestmark = pytest.mark.dynamodb

SHORT_HISTORY = 10
LONG_HISTORY = 5_000
# 99 events and the tip make a full transaction of 100 actions.
EVENTS_PER_SAVE = 99
HISTORY_LENGTHS = (SHORT_HISTORY, LONG_HISTORY)


class Tally(Aggregate):
    def __init__(self) -> None:
        self.additions = 0
        self.total = 0

    @event("Added")
    def add(self, amount: int) -> None:
        self.additions += 1
        self.total += amount


def save_tally_with_history(app: TipApplication, length: int) -> UUID:
    """Save a tally whose history has ``length`` events: created, then adds of 1, 2, ..."""
    tally = Tally()
    for amount in range(1, length):
        tally.add(amount)
        if len(tally.pending_events) == EVENTS_PER_SAVE:
            app.save(tally)
    app.save(tally)
    return tally.id


@pytest.fixture(scope="module")
def env(dynamodb_local_server: DynamoDBLocal) -> dict[str, str]:
    client = boto3.client("dynamodb", endpoint_url=dynamodb_local_server.endpoint_url)
    return {
        "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
        "EVENTS_TABLE": create_events_table_without_stream(client),
    }


@pytest.fixture(scope="module")
def tally_ids(env: dict[str, str]) -> dict[int, UUID]:
    """History length -> id of a tally with that history, written once for the module."""
    writer = TipApplication(env=env)
    try:
        return {length: save_tally_with_history(writer, length) for length in HISTORY_LENGTHS}
    finally:
        writer.close()


@pytest.fixture
def reader(env: dict[str, str]) -> Iterator[TipApplication]:
    """A new application, as a cold Lambda container has: nothing cached from the writes."""
    app = TipApplication(env=env)
    yield app
    app.close()


def calls_to_load(app: TipApplication, aggregate_id: UUID) -> list[str]:
    recorder = app.recorder
    assert isinstance(recorder, DynamoDBRecorder)
    with recorded_calls(recorder.client) as calls:
        app.repository.get(aggregate_id)
    return calls


def test_load_cost_is_independent_of_history(
    reader: TipApplication, tally_ids: dict[int, UUID]
) -> None:
    short = calls_to_load(reader, tally_ids[SHORT_HISTORY])
    long = calls_to_load(reader, tally_ids[LONG_HISTORY])

    assert short == long


def test_load_of_long_history_is_one_get_item(
    reader: TipApplication, tally_ids: dict[int, UUID]
) -> None:
    assert calls_to_load(reader, tally_ids[LONG_HISTORY]) == ["GetItem"]


@pytest.mark.parametrize("length", HISTORY_LENGTHS)
def test_loaded_aggregate_has_history_version(
    reader: TipApplication, tally_ids: dict[int, UUID], length: int
) -> None:
    tally: Tally = reader.repository.get(tally_ids[length])

    assert tally.version == length


@pytest.mark.parametrize("length", HISTORY_LENGTHS)
def test_loaded_aggregate_has_history_state(
    reader: TipApplication, tally_ids: dict[int, UUID], length: int
) -> None:
    tally: Tally = reader.repository.get(tally_ids[length])

    assert tally.additions == length - 1
    assert tally.total == sum(range(1, length))
