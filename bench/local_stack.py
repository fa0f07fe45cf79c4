"""Helpers for the figures that run on the local stack: start it quietly, call its API."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

from bench.common import use_fake_aws_environment
from infra.local.stack import LocalStack

HTTP_TIMEOUT = 10
ORDER_LINES = [
    {"sku": "MUG-RED", "quantity": 1, "unit_price": 1250},
    {"sku": "TEA-GREEN", "quantity": 1, "unit_price": 499},
]


class FunctionOutput:
    """Counts the functions' log lines instead of printing them; keeps the errors."""

    def __init__(self) -> None:
        self.lines: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, function_name: str, line: str) -> None:
        with self._lock:
            self.lines[function_name] += 1
            if ('"level":"ERROR"' in line or "Traceback" in line) and len(self.errors) < 20:
                self.errors.append(f"{function_name}: {line[:300]}")


@contextmanager
def running_stack(**options: Any) -> Iterator[tuple[LocalStack, FunctionOutput]]:
    """Start the template's local stack with its own DynamoDB Local; stop it afterwards."""
    use_fake_aws_environment()
    for noisy in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    output = FunctionOutput()
    stack = LocalStack(
        name_prefix=f"bench{uuid.uuid4().hex[:6]}-", function_output=output, **options
    )
    with stack:
        yield stack, output


def restock(session: requests.Session, stack: LocalStack, quantity: int) -> None:
    for line in ORDER_LINES:
        response = session.post(
            f"{stack.api_url}/inventory/{line['sku']}/restock",
            json={"quantity": quantity},
            timeout=HTTP_TIMEOUT,
        )
        if response.status_code != 200:
            raise RuntimeError(f"restock answered {response.status_code}: {response.text}")


def post_order(session: requests.Session, stack: LocalStack, customer_id: str) -> str:
    body = {
        "customer_id": customer_id,
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "lines": ORDER_LINES,
    }
    response = session.post(
        f"{stack.api_url}/orders",
        json=body,
        headers={"Idempotency-Key": f"bench-{uuid.uuid4()}"},
        timeout=HTTP_TIMEOUT,
    )
    if response.status_code != 202:
        raise RuntimeError(f"POST /orders answered {response.status_code}: {response.text}")
    order_id: str = response.json()["order_id"]
    return order_id


def process_cpu_seconds(pid: int) -> float:
    """Return user + system CPU seconds of a process so far, from /proc (Linux only)."""
    import os

    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def component_processes(stack: LocalStack) -> dict[str, list[int]]:
    """Return component name -> process ids: each function, DynamoDB Local, the stack itself."""
    import os

    components: dict[str, list[int]] = {}
    function_pids: set[int] = set()
    for function_id, runner in stack.runners.items():
        components[f"function {function_id}"] = list(runner.process_ids)
        function_pids.update(runner.process_ids)
    others = [pid for pid in stack.child_process_ids() if pid not in function_pids]
    components["DynamoDB Local (Java)"] = others
    components["stack process (gateway, pollers, router, moto, fakes, load generator)"] = [
        os.getpid()
    ]
    return components


def cpu_by_component(components: dict[str, list[int]]) -> dict[str, float]:
    totals = {}
    for name, pids in components.items():
        seconds = 0.0
        for pid in pids:
            try:
                seconds += process_cpu_seconds(pid)
            except OSError:
                continue  # the environment ended; its CPU time is lost to this count
        totals[name] = seconds
    return totals
