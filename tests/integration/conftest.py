"""Fixtures for the integration tests: one local stack of the fixture template per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local import dynamodb_local
from infra.local.stack import LocalStack
from tests.integration.local_stack_support import fixture_stack


@pytest.fixture(scope="session")
def delivery_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("deliveries")


@pytest.fixture(scope="session")
def local_stack(
    dynamodb_local_server: dynamodb_local.DynamoDBLocal, delivery_log_dir: Path
) -> Iterator[LocalStack]:
    """The fixture template (echo API, recording stream consumers) on the shared DynamoDB."""
    with fixture_stack(dynamodb_local_server.endpoint_url, delivery_log_dir) as stack:
        yield stack
