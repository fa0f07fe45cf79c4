"""The event-store contract on DynamoDB Local, plus what only the DynamoDB store does."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from eventsourcing.persistence import NotSupportedError

from adapters.eventstore.dynamodb import DynamoDBRecorder
from infra.local.dynamodb_local import DynamoDBLocal
from tests.botocore_calls import recorded_calls
from tests.eventstore_contract import EventStore, EventStoreContract
from tests.integration.events_table import create_events_table_without_stream

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb


@pytest.fixture(scope="module")
def events_table(dynamodb_local_server: DynamoDBLocal) -> str:
    """One table for the module: every test writes to streams and commands of its own."""
    client = boto3.client("dynamodb", endpoint_url=dynamodb_local_server.endpoint_url)
    return create_events_table_without_stream(client)


class TestDynamoDBEventStore(EventStoreContract):
    @pytest.fixture
    def recorder(self, dynamodb_client: DynamoDBClient, events_table: str) -> EventStore:
        return DynamoDBRecorder(dynamodb_client, events_table)

    @pytest.fixture
    def another_recorder(
        self, dynamodb_local_server: DynamoDBLocal, events_table: str
    ) -> EventStore:
        client = boto3.client("dynamodb", endpoint_url=dynamodb_local_server.endpoint_url)
        return DynamoDBRecorder(client, events_table)

    def test_large_history_loads_whole_and_in_order(self, recorder: EventStore) -> None:
        assert isinstance(recorder, DynamoDBRecorder)
        with recorded_calls(recorder.client) as calls:
            super().test_large_history_loads_whole_and_in_order(recorder)

        # A Query page contains at most 1 MB, and the history is larger.
        assert calls.count("Query") > 1

    def test_notification_log_is_not_supported(self, recorder: EventStore) -> None:
        assert isinstance(recorder, DynamoDBRecorder)
        with pytest.raises(NotSupportedError):
            recorder.select_notifications(start=1, limit=10)
