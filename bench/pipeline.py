"""Figure 3: orders per second from ``POST /orders`` to ``FULFILLED`` on the local stack.

K orders are posted from several client threads at once (after a restock), and the
clock stops when the read model shows every one of them ``FULFILLED``. Writes per
order are counted afterwards from the events table: every commit is one
``TransactWriteItems`` and stamps one ``recorded_at`` on all of its items, so the
distinct ``recorded_at`` values written during the run are the transactions.

The floor is what the same DynamoDB Local does with raw two-action
``TransactWriteItems`` (a tip-sized and an event-sized item) from as many threads as
the stack has writing function environments, divided by the transactions an order
costs. Where the time goes: CPU seconds of every process of the stack during the
run, and a sampling profile of the stack's own process threads.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import requests

from adapters.eventstore.dynamodb import default_client_config
from bench.common import FigureResult, Mode, Row, run_main, stderr
from bench.local_stack import (
    component_processes,
    cpu_by_component,
    post_order,
    restock,
    running_stack,
)

ORDERS = {"tiny": 4, "quick": 40, "full": 200}
CLIENT_THREADS = 4
PROFILE_LIFECYCLES = {"tiny": 2, "quick": 10, "full": 30}
FLOOR_SECONDS = {"tiny": 2.0, "quick": 5.0, "full": 15.0}
DEADLINE_SECONDS = {"tiny": 60.0, "quick": 180.0, "full": 600.0}
CHECK_INTERVAL = 0.25
SAMPLE_INTERVAL = 0.2


def fulfilled_count(client: Any, table: str, order_ids: list[str]) -> int:
    done = 0
    for start in range(0, len(order_ids), 100):
        keys = [{"order_id": {"S": order_id}} for order_id in order_ids[start : start + 100]]
        request: dict[str, Any] = {
            table: {
                "Keys": keys,
                "ProjectionExpression": "#s",
                "ExpressionAttributeNames": {"#s": "status"},
            }
        }
        while request:
            response = client.batch_get_item(RequestItems=request)
            for item in response["Responses"].get(table, []):
                if item.get("status", {}).get("S") == "FULFILLED":
                    done += 1
            request = response.get("UnprocessedKeys") or {}
    return done


def transactions_since(client: Any, table: str, started_iso: str) -> dict[str, int]:
    """Count commits (distinct recorded_at) and items written at or after ``started_iso``."""
    stamps: set[str] = set()
    items: Counter[str] = Counter()
    paginator = client.get_paginator("scan")
    for page in paginator.paginate(
        TableName=table,
        ProjectionExpression="recorded_at, kind",
        ConsistentRead=True,
    ):
        for item in page["Items"]:
            stamp = item.get("recorded_at", {}).get("S", "")
            if stamp >= started_iso:
                stamps.add(stamp)
                items[item.get("kind", {}).get("S", "other")] += 1
    return {
        "transactions": len(stamps),
        **{f"items_{kind}": count for kind, count in items.items()},
    }


class ThreadCpu:
    """CPU seconds per thread of this process (the stack's gateway, pollers, router, moto).

    Reads ``/proc/self/task/*/stat`` every ``SAMPLE_INTERVAL`` seconds, so a thread that
    ends between two reads loses at most its last interval.
    """

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-thread-cpu", daemon=True)

    def __enter__(self) -> ThreadCpu:
        self._start = self._read()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    @staticmethod
    def _read() -> dict[int, float]:
        ticks = os.sysconf("SC_CLK_TCK")
        found = {}
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[int(task)] = (int(fields[11]) + int(fields[12])) / ticks
        return found

    def _sample(self) -> None:
        self.names.update(
            {thread.native_id: thread.name for thread in threading.enumerate() if thread.native_id}
        )
        for tid, seconds in self._read().items():
            self.seconds[tid] = seconds - self._start.get(tid, 0.0)

    def by_name(self) -> dict[str, float]:
        totals: Counter[str] = Counter()
        for tid, seconds in self.seconds.items():
            name = self.names.get(tid, "main" if tid == os.getpid() else "short-lived thread")
            # Thread names end in a counter or a target name; group by their stem.
            stem = name.split(" ")[0].rstrip("0123456789").rstrip("-_")
            totals[stem] += round(seconds * 1000)
        return {name: value / 1000 for name, value in totals.most_common(10)}


def profile_saga_in_process(endpoint_url: str, table: str, lifecycles: int) -> dict[str, Any]:
    """Profile order lifecycles run in-process through the functions' code (saga included)."""
    from application.orders import OrdersApplication
    from bench.common import profile_calls, self_time_by_group, store_environment
    from bench.lifecycle import DEFAULT_LINES, build_apps, run_lifecycle, saga_trigger_types

    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint_url
    apps = build_apps(OrdersApplication, store_environment(table))
    triggers = saga_trigger_types()
    restock_lines = [(f"{sku}-P", quantity, price) for sku, quantity, price in DEFAULT_LINES]
    from bench.lifecycle import restock as restock_in_process

    restock_in_process(apps.worker, restock_lines, 1000)
    started = time.perf_counter()

    def lifecycle() -> None:
        run_lifecycle(apps, triggers, pause=contextlib.nullcontext, lines=restock_lines)

    stats = profile_calls(lifecycle, lifecycles)
    seconds = time.perf_counter() - started
    groups = self_time_by_group(stats)
    total = sum(groups.values()) or 1.0
    return {
        "milliseconds_per_lifecycle": round(seconds / lifecycles * 1000, 1),
        "self_time_share": {
            name: round(value / total, 3) for name, value in list(groups.items())[:8]
        },
    }


def raw_transaction_floor(endpoint_url: str, table: str, threads: int, seconds: float) -> float:
    """Return TransactWriteItems per second of ``threads`` threads of raw two-action commits."""
    tip_state = os.urandom(1100)
    event_state = os.urandom(250)
    deadline = time.monotonic() + seconds
    counts = [0] * threads

    def worker(index: int) -> None:
        client = boto3.client("dynamodb", endpoint_url=endpoint_url, config=default_client_config())
        while time.monotonic() < deadline:
            stream = str(uuid.uuid4())
            client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {
                                "stream_id": {"S": stream},
                                "position": {"N": "0"},
                                "kind": {"S": "floor"},
                                "state": {"B": tip_state},
                            },
                            "ConditionExpression": "attribute_not_exists(stream_id)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": table,
                            "Item": {
                                "stream_id": {"S": stream},
                                "position": {"N": "1"},
                                "kind": {"S": "floor"},
                                "state": {"B": event_state},
                            },
                            "ConditionExpression": "attribute_not_exists(stream_id)",
                        }
                    },
                ]
            )
            counts[index] += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.monotonic() - started)


def run(mode: Mode) -> FigureResult:
    result = FigureResult("3", "Pipeline throughput: POST /orders to FULFILLED", mode)
    count = ORDERS[mode]
    with (
        running_stack(parameters={"SagaRetryBaseSeconds": "0.2"}) as (stack, output),
        requests.Session() as session,
    ):
        dynamodb = stack.client("dynamodb")
        events_table = stack.table_names["EventsTable"]
        summaries = stack.table_names["OrderSummariesTable"]
        restock(session, stack, count * 2 + 10)
        if not stack.wait_until_idle(30):
            stderr("figure 3: the stack was not idle after the restock")
        writers = sum(
            runner.max_concurrency
            for function_id, runner in stack.runners.items()
            if function_id in ("ApiFunction", "SagaFunction", "ItemWorkerFunction")
        )
        components = component_processes(stack)
        cpu_before = cpu_by_component(components)
        started_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))
        stderr(f"figure 3: posting {count} orders from {CLIENT_THREADS} threads")
        order_ids: list[str] = []
        with ThreadCpu() as thread_cpu:
            started = time.monotonic()
            with ThreadPoolExecutor(CLIENT_THREADS) as pool:

                def post(index: int) -> str:
                    return post_order(session, stack, f"c-{index % 50}")

                order_ids = list(pool.map(post, range(count)))
            posted = time.monotonic() - started
            done = 0
            while time.monotonic() - started < DEADLINE_SECONDS[mode]:
                done = fulfilled_count(dynamodb, summaries, order_ids)
                if done == count:
                    break
                time.sleep(CHECK_INTERVAL)
            elapsed = time.monotonic() - started
        components = component_processes(stack)
        cpu_after = cpu_by_component(components)
        stack.wait_until_idle(30)
        writes = transactions_since(dynamodb, events_table, started_iso)
        stderr("figure 3: raw transaction floor")
        floor_tps = raw_transaction_floor(
            stack.dynamodb_endpoint_url, events_table, writers, FLOOR_SECONDS[mode]
        )
        errors = list(output.errors)
        stderr("figure 3: profiling order lifecycles in-process")
        profile = profile_saga_in_process(
            stack.dynamodb_endpoint_url, events_table, PROFILE_LIFECYCLES[mode]
        )

    cpu = {
        name: round(cpu_after.get(name, 0.0) - cpu_before.get(name, 0.0), 2) for name in cpu_after
    }
    cpu = dict(sorted(cpu.items(), key=lambda item: -item[1]))
    busiest = next(iter(cpu))
    if done < count:
        result.status = "error"
        result.notes.append(
            f"Only {done} of {count} orders reached FULFILLED in {DEADLINE_SECONDS[mode]:.0f} s."
        )
    throughput = done / elapsed
    per_order = writes["transactions"] / max(done, 1)
    floor_orders = floor_tps / per_order
    result.rows = [
        Row(
            "orders per second to FULFILLED",
            throughput,
            "orders/s",
            floor_orders,
            f"raw TransactWriteItems/s / {per_order:.1f}",
        ),
        Row("event-store transactions per order", per_order, "writes", None),
        Row(
            "raw TransactWriteItems per second", floor_tps, "tx/s", None, note=f"{writers} threads"
        ),
    ]
    result.notes += [
        f"{count} orders of 2 lines posted from {CLIENT_THREADS} client threads in {posted:.1f} s; "
        f"all FULFILLED in the read model after {elapsed:.1f} s. Writes counted from the events "
        f"table: {writes}.",
        f"Floor: {writers} threads (the writing functions' environments: API, saga, item "
        "worker) of raw 2-action transactions on the same DynamoDB Local, after the run.",
        "CPU seconds during the run by component: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in cpu.items())
        + f". Busiest: {busiest}.",
        "CPU seconds of the stack process by thread: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in thread_cpu.by_name().items()),
        f"In-process profile of {PROFILE_LIFECYCLES[mode]} lifecycles through the functions' code "
        f"({profile['milliseconds_per_lifecycle']} ms each), share of self time: "
        + ", ".join(f"{name} {share:.0%}" for name, share in profile["self_time_share"].items()),
    ]
    if errors:
        result.notes.append(f"Function errors logged: {errors[:3]}")
    result.details = {
        "orders": count,
        "fulfilled": done,
        "seconds_to_all_fulfilled": elapsed,
        "seconds_posting": posted,
        "writes": writes,
        "floor_transactions_per_second": floor_tps,
        "floor_threads": writers,
        "cpu_seconds_by_component": cpu,
        "stack_process_cpu_by_thread": thread_cpu.by_name(),
        "in_process_profile": profile,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
