"""Retries of the DynamoDB store: cancelled transactions, and responses lost on the way back.

The faults are faked at the HTTP layer, through botocore's ``before-send`` hook,
so botocore parses and retries them as it would real ones. DynamoDB Local never
cancels a transaction with ``TransactionConflict`` (it runs transactions one at a
time), so that response is built here in DynamoDB's wire format.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.compat import HTTPHeaders
from botocore.exceptions import ConnectionClosedError, HTTPClientError, ReadTimeoutError
from botocore.httpsession import URLLib3Session

from adapters.eventstore.dynamodb import DynamoDBRecorder, default_client_config
from application.errors import TransientStoreError, VersionConflictError
from infra.local.dynamodb_local import DynamoDBLocal
from tests.eventstore_contract import make_events, new_stream

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb

TRANSACT_WRITE_SENT = "before-send.dynamodb.TransactWriteItems"


class _Body:
    def __init__(self, content: bytes) -> None:
        self._content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._content


def body_of(request: AWSPreparedRequest) -> dict[str, Any]:
    assert isinstance(request.body, bytes | str)
    body: dict[str, Any] = json.loads(request.body)
    return body


def token_of(request: AWSPreparedRequest) -> str:
    token: str = body_of(request)["ClientRequestToken"]
    return token


def transaction_conflict_response(request: AWSPreparedRequest) -> AWSResponse:
    """Build the response DynamoDB sends when another transaction is writing the first item."""
    actions = len(body_of(request)["TransactItems"])
    reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}]
    reasons += [{"Code": "None"}] * (actions - 1)
    codes = ", ".join(reason["Code"] for reason in reasons)
    body = {
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": f"Transaction cancelled, please refer cancellation reasons for specific "
        f"reasons [{codes}]",
        "CancellationReasons": reasons,
    }
    headers = HTTPHeaders()
    headers["Content-Type"] = "application/x-amz-json-1.0"
    headers["x-amzn-RequestId"] = str(uuid.uuid4())
    return AWSResponse(request.url, 400, headers, _Body(json.dumps(body).encode()))


NetworkFake = Callable[..., AWSResponse | None]


def on_transaction_sent(client: DynamoDBClient, network: NetworkFake) -> None:
    # botocore uses a before-send handler's return value as the response, but
    # the stubs type every handler as returning None.
    client.meta.events.register(TRANSACT_WRITE_SENT, network)  # type: ignore[arg-type]


class ConflictingNetwork:
    """Return a TransactionConflict cancellation for the first ``conflicts`` transactions."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.tokens: list[str] = []

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        self.tokens.append(token_of(request))
        if len(self.tokens) <= self.conflicts:
            return transaction_conflict_response(request)
        return None


class LosingNetwork:
    """Delivers the first transaction to DynamoDB, then loses its response.

    ``new_token_on_retry`` rewrites the token of the resent request, to show what
    the retry would meet without it.
    """

    def __init__(self, error: type[HTTPClientError], *, new_token_on_retry: bool = False) -> None:
        self.error = error
        self.new_token_on_retry = new_token_on_retry
        self.tokens: list[str] = []

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        self.tokens.append(token_of(request))
        if len(self.tokens) == 1:
            http = URLLib3Session()
            try:
                delivered = http.send(request)
            finally:
                http.close()
            assert delivered.status_code == 200, delivered.content
            raise self.error(endpoint_url=request.url)
        if self.new_token_on_retry:
            body = body_of(request)
            body["ClientRequestToken"] = str(uuid.uuid4())
            request.body = json.dumps(body).encode()
            request.headers["Content-Length"] = str(len(request.body))
        return None


@pytest.fixture
def client(dynamodb_local_server: DynamoDBLocal) -> Iterator[DynamoDBClient]:
    # The production settings, so botocore retries as it would in Lambda.
    client = boto3.client(
        "dynamodb", endpoint_url=dynamodb_local_server.endpoint_url, config=default_client_config()
    )
    yield client
    client.close()


@pytest.fixture
def recorder(client: DynamoDBClient, tables: dict[str, str]) -> DynamoDBRecorder:
    return DynamoDBRecorder(client, tables["EventsTable"])


# TransactionConflict ------------------------------------------------------------------


def test_transaction_conflict_is_retried(
    client: DynamoDBClient, recorder: DynamoDBRecorder
) -> None:
    on_transaction_sent(client, ConflictingNetwork(conflicts=2))
    stream_id = new_stream()
    commit = make_events(stream_id, 1, 3)

    recorder.insert_events(commit)

    assert recorder.select_events(stream_id) == commit


def test_attempt_after_cancellation_sends_new_token(
    client: DynamoDBClient, recorder: DynamoDBRecorder
) -> None:
    network = ConflictingNetwork(conflicts=2)
    on_transaction_sent(client, network)

    recorder.insert_events(make_events(new_stream(), 1, 3))

    assert len(set(network.tokens)) == 3


def test_lasting_conflict_raises_transient_error(
    client: DynamoDBClient, recorder: DynamoDBRecorder
) -> None:
    network = ConflictingNetwork(conflicts=recorder.max_conflict_attempts)
    on_transaction_sent(client, network)

    with pytest.raises(TransientStoreError):
        recorder.insert_events(make_events(new_stream(), 1, 3))


def test_lasting_conflict_stops_after_max_attempts(
    client: DynamoDBClient, recorder: DynamoDBRecorder
) -> None:
    network = ConflictingNetwork(conflicts=100)
    on_transaction_sent(client, network)

    with pytest.raises(TransientStoreError):
        recorder.insert_events(make_events(new_stream(), 1, 3))

    assert len(network.tokens) == recorder.max_conflict_attempts


# A response lost after DynamoDB applied the transaction --------------------------------

LOST_RESPONSES = [
    pytest.param(ReadTimeoutError, id="read-timeout"),
    pytest.param(ConnectionClosedError, id="connection-closed"),
]


@pytest.mark.parametrize("error", LOST_RESPONSES)
def test_lost_response_retry_succeeds(
    client: DynamoDBClient, recorder: DynamoDBRecorder, error: type[HTTPClientError]
) -> None:
    on_transaction_sent(client, LosingNetwork(error))
    stream_id = new_stream()
    commit = make_events(stream_id, 1, 3)

    recorder.insert_events(commit)

    assert recorder.select_events(stream_id) == commit


@pytest.mark.parametrize("error", LOST_RESPONSES)
def test_lost_response_retry_resends_token(
    client: DynamoDBClient, recorder: DynamoDBRecorder, error: type[HTTPClientError]
) -> None:
    network = LosingNetwork(error)
    on_transaction_sent(client, network)

    recorder.insert_events(make_events(new_stream(), 1, 3))

    assert network.tokens == [network.tokens[0]] * 2


def test_lost_response_retry_with_new_token_conflicts(
    client: DynamoDBClient, recorder: DynamoDBRecorder
) -> None:
    # The control for the tests above: the token, not luck, turns the resend into success.
    on_transaction_sent(client, LosingNetwork(ReadTimeoutError, new_token_on_retry=True))

    with pytest.raises(VersionConflictError):
        recorder.insert_events(make_events(new_stream(), 1, 3))
