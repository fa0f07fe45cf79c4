"""Count the requests a boto3 client makes, through botocore's event hooks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.client import BaseClient
from botocore.model import OperationModel


@contextmanager
def recorded_calls(client: BaseClient, service: str = "dynamodb") -> Iterator[list[str]]:
    """Yield a list that receives the operation name of each call the client makes.

    ``before-call`` fires once per API call, so botocore's own retries of one call
    are not counted. ``before-send`` would count every HTTP attempt.
    """
    names: list[str] = []

    def record(model: OperationModel, **_: Any) -> None:
        names.append(model.name)

    event_name = f"before-call.{service}"
    unique_id = f"recorded-calls-{uuid.uuid4()}"
    client.meta.events.register(event_name, record, unique_id=unique_id)
    try:
        yield names
    finally:
        client.meta.events.unregister(event_name, unique_id=unique_id)
