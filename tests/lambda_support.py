"""Helpers to call the Lambda handlers in-process, as API Gateway and Lambda would."""

from __future__ import annotations

import importlib
import json
import uuid
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3
import pytest

from infra.local.iam import AccessGuard, FunctionPolicy
from infra.local.template import Template


@dataclass
class FakeLambdaContext:
    function_name: str = "test-function"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:test-function"
    aws_request_id: str = "test-request"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def handler_environment(tables: dict[str, str]) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
        "EVENTS_TABLE": tables["EventsTable"],
        "ORDER_SUMMARIES_TABLE": tables["OrderSummariesTable"],
        "CUSTOMER_STATS_TABLE": tables["CustomerStatsTable"],
        "INVENTORY_LEVELS_TABLE": tables["InventoryLevelsTable"],
        "PROJECTION_CONTROL_TABLE": tables["ProjectionControlTable"],
        # Tests switch pointers and expect the next call to see it.
        "PROJECTION_POINTER_TTL_SECONDS": "0",
        "POWERTOOLS_SERVICE_NAME": "orders",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


def load_handler_module(
    name: str, monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]
) -> ModuleType:
    """Import a handler module afresh with the environment its function gets."""
    for key, value in handler_environment(tables).items():
        monkeypatch.setenv(key, value)
    module = importlib.import_module(name)
    return importlib.reload(module)


def guard_calls(
    function_id: str, monkeypatch: pytest.MonkeyPatch, tables: dict[str, str]
) -> AccessGuard:
    """Check the calls of boto3 clients created from now on against a function's role.

    The clients that exist already (the test's own) are not checked. The guard records
    instead of refusing, so a test reads ``guard.denied`` after the handler ran.
    """
    prefix = tables["EventsTable"].removesuffix("EventsTable")
    policy = FunctionPolicy.from_template(Template.load(name_prefix=prefix), function_id)
    guard = AccessGuard(policy, enforce=False)
    session = boto3.session.Session()
    guard.install(session)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", session)
    return guard


def api_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> dict[str, Any]:
    text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers or {},
        "multiValueHeaders": {key: [value] for key, value in (headers or {}).items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": (
            {key: [value] for key, value in query.items()} if query else None
        ),
        "pathParameters": None,
        "body": text,
        "isBase64Encoded": False,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "stage": "v1",
            "resourcePath": path,
            "httpMethod": method,
            "path": path,
            "identity": {"sourceIp": "127.0.0.1"},
        },
    }


def response_header(response: dict[str, Any], name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return str(value)
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower() and values:
            return str(values[0])
    return None
