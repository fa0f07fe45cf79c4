"""Helpers for the tests of the local stack itself (infra/local) and its fixture handlers."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from infra.local.stack import LocalStack

FIXTURES = Path(__file__).resolve().parent / "local_stack_fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"

T = TypeVar("T")

function_logger = logging.getLogger("tests.local_stack.functions")


def log_function_output(function_name: str, line: str) -> None:
    function_logger.info("%s | %s", function_name, line)


@contextmanager
def fixture_stack(
    dynamodb_endpoint_url: str,
    delivery_log_dir: Path,
    *,
    name_prefix: str | None = None,
    data_dir: Path | None = None,
) -> Iterator[LocalStack]:
    """The fixture template's stack on a shared DynamoDB Local, with quick retries."""
    delivery_log_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(
        template_path=FIXTURE_TEMPLATE,
        name_prefix=name_prefix or f"ls{uuid.uuid4().hex[:8]}-",
        dynamodb_endpoint_url=dynamodb_endpoint_url,
        data_dir=data_dir,
        python_path=[FIXTURES],
        environment={"DELIVERY_LOG_DIR": str(delivery_log_dir)},
        retry_delay=0.02,
        function_output=log_function_output,
    )
    with stack:
        yield stack


def wait_for(
    probe: Callable[[], T | None], timeout: float = 5.0, interval: float = 0.02
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"nothing came within {timeout} s from {probe}")
        time.sleep(interval)


def deliveries(log_dir: Path, function_name: str) -> list[dict[str, Any]]:
    """Every invocation the stream_recorder handler logged, oldest first."""
    path = log_dir / f"{function_name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def batches_with(log_dir: Path, function_name: str, prefix: str) -> list[list[str]]:
    """The keys starting with ``prefix`` in each invocation that delivered any of them."""
    batches = []
    for entry in deliveries(log_dir, function_name):
        keys = [key for key in entry["keys"] if key.startswith(prefix)]
        if keys:
            batches.append(keys)
    return batches
