"""Shared fixtures: one DynamoDB Local per test session, fresh tables per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest

from infra.local import dynamodb_local
from infra.local.template import Template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

FAKE_AWS_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}


@pytest.fixture(scope="session", autouse=True)
def fake_aws_credentials() -> Iterator[None]:
    """Keep every test away from real AWS accounts and the developer's profile."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENVIRONMENT.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def dynamodb_local_server(fake_aws_credentials: None) -> Iterator[dynamodb_local.DynamoDBLocal]:
    server = dynamodb_local.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL_DYNAMODB", server.endpoint_url)
            yield server
    finally:
        server.stop()


@pytest.fixture
def dynamodb_client(dynamodb_local_server: dynamodb_local.DynamoDBLocal) -> DynamoDBClient:
    return boto3.client("dynamodb", endpoint_url=dynamodb_local_server.endpoint_url)


@pytest.fixture
def tables(dynamodb_client: DynamoDBClient) -> dict[str, str]:
    """Create the template's tables under a prefix unique to this test; logical id -> name.

    The tables have no streams: DynamoDB Local slows down as stream-enabled tables
    accumulate in one process, and these tests read no stream. Tests of stream
    consumers start a local stack, which creates its own tables with streams.
    """
    template = Template.load(name_prefix=f"t{uuid.uuid4().hex[:10]}-")
    for request in template.create_table_requests().values():
        request.pop("StreamSpecification", None)
        dynamodb_client.create_table(**request)
    return template.table_names()
