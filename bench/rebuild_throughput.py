"""Rebuild throughput against a raw floor, on the same DynamoDB Local in the same run.

The run starts DynamoDB Local (in memory), creates the template's tables and loads
orders with ``bench.load_orders``. Then, for each round:

- **rebuild**: ``RebuildCoordinator.start`` for every read model, one thread per
  segment running ``SegmentRebuilder``, then the switch, as ``orders projections
  rebuild`` does. It is timed from the first Scan to the switch. The table creation
  and the first wait for projectors to see the new tables are fixed delays, not
  rates, so they are reported separately.
- **floor**: a bare parallel Scan with the same segments, filter and projection,
  that writes, with ``BatchWriteItem`` (retrying ``UnprocessedItems``), as many
  rows as the rebuilt tables hold into an empty table of its own. Each row is one
  scanned event's key and payload, so rows are about the size of the rebuilt ones.

Both read the same events; events/s is events scanned per second, and the ratio is
rebuild / floor. Rounds alternate, so both see the same machine load; the median
of the rounds is what ``docs/benchmarks.md`` records. A warm-up round of both runs
first and is reported but not counted: the first rebuild of a DynamoDB Local
process was about a third slower than the later ones, even after a full Scan,
while the JVM was still compiling its write path.

    .venv/bin/python -m bench.rebuild_throughput --orders 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from bench.common import read_side_environment
from bench.load_orders import load
from infra.local import dynamodb_local
from infra.local.template import Template, create_tables

FAKE_CREDENTIALS = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
}
BATCH_WRITE_ITEMS = 25
RESULTS_PATH = Path(__file__).resolve().parents[1] / ".cache" / "bench" / "rebuild-throughput.json"


@dataclass(frozen=True)
class Timing:
    events: int
    rows: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds


@dataclass(frozen=True)
class RebuildTiming(Timing):
    setup_seconds: float
    replay_seconds: float
    finish_seconds: float
    fixed_wait_seconds: float

    @property
    def events_per_second_without_wait(self) -> float:
        return self.events / (self.seconds - self.fixed_wait_seconds)


def client(endpoint: str) -> Any:
    config = Config(max_pool_connections=64, retries={"mode": "standard", "max_attempts": 10})
    return boto3.client("dynamodb", endpoint_url=endpoint, config=config)


def count_rows(dynamodb: Any, table: str) -> int:
    total = 0
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT"):
        total += page["Count"]
    return total


def timed_rebuild(
    environment: Mapping[str, str], segments: int, flush_events: int
) -> RebuildTiming:
    """Rebuild every read model as ``orders projections rebuild`` does, and time it."""
    from adapters.composition import build_rebuild_services
    from projections.catalog import PROJECTIONS
    from projections.rebuild import FinishState

    services = build_rebuild_services(environment)
    coordinator = services.coordinator(scan_segments=segments)
    started = time.monotonic()
    run, _ = coordinator.start(list(PROJECTIONS.values()), segments)
    coordinator.wait_until_scan_may_start(run)
    scan_started = time.monotonic()
    rebuilder = services.segment_rebuilder(run, flush_events=flush_events)
    with ThreadPoolExecutor(max_workers=segments) as pool:
        checkpoints = list(pool.map(rebuilder.run, range(segments)))
    replayed = time.monotonic()
    state = coordinator.finish_waiting(run, poll_seconds=0.05)
    if state != FinishState.SWITCHED:
        raise RuntimeError(f"rebuild {run.rebuild_id} did not switch: {state}")
    finished = time.monotonic()
    rows = sum(count_rows(services.read_side.client, table) for table in run.tables.values())
    services.orders.close()
    return RebuildTiming(
        events=sum(c.events for c in checkpoints),
        rows=rows,
        seconds=finished - scan_started,
        setup_seconds=scan_started - started,
        replay_seconds=replayed - scan_started,
        finish_seconds=finished - replayed,
        # The finish waits once for projectors to see the guarded phase.
        fixed_wait_seconds=coordinator.propagation_seconds,
    )


def timed_floor(dynamodb: Any, events_table: str, segments: int, rows: int) -> Timing:
    """Scan the events a rebuild reads and batch-write ``rows`` rows of them."""
    from eventsourcing.utils import get_topic

    from adapters.event_scan import DynamoDBEventScanner
    from domain.inventory import InventoryItem
    from domain.order import Order

    table = f"floor-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.get_waiter("table_exists").wait(TableName=table)
    scanner = DynamoDBEventScanner(dynamodb, events_table)
    stream_types = [get_topic(Order), get_topic(InventoryItem)]
    lock = threading.Lock()
    budget = [rows]
    counts = {"events": 0, "rows": 0}

    def write(items: list[dict[str, Any]]) -> None:
        for start in range(0, len(items), BATCH_WRITE_ITEMS):
            request = {
                table: [
                    {"PutRequest": {"Item": item}}
                    for item in items[start : start + BATCH_WRITE_ITEMS]
                ]
            }
            while request:
                response = dynamodb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}

    def segment(number: int) -> None:
        key = None
        while True:
            page = scanner.scan_page(number, segments, key, stream_types)
            with lock:
                take = min(len(page.events), budget[0])
                budget[0] -= take
                counts["events"] += len(page.events)
                counts["rows"] += take
            write(
                [
                    {
                        "pk": {"S": f"{event.originator_id}#{event.originator_version}"},
                        "state": {"B": event.state},
                    }
                    for event in page.events[:take]
                ]
            )
            key = page.next_key
            if key is None:
                return

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=segments) as pool:
        list(pool.map(segment, range(segments)))
    seconds = time.monotonic() - started
    dynamodb.delete_table(TableName=table)
    return Timing(events=counts["events"], rows=counts["rows"], seconds=seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild_throughput", description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds, after one warm-up round"
    )
    parser.add_argument("--segments", type=int, default=4)
    parser.add_argument("--flush-events", type=int, default=20_000)
    parser.add_argument("--load-threads", type=int, default=8)
    parser.add_argument("--output", type=Path, default=RESULTS_PATH)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep DynamoDB Local's data in this (emptied) folder, as `orders dev` does; "
        "default: in memory, as the tests run it",
    )
    arguments = parser.parse_args(argv)

    os.environ.update(FAKE_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if arguments.data_dir is not None:
        shutil.rmtree(arguments.data_dir, ignore_errors=True)
    server = dynamodb_local.start(data_dir=arguments.data_dir)
    try:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint_url
        dynamodb = client(server.endpoint_url)
        template = Template.load(name_prefix="bench-")
        names = create_tables(dynamodb, template)
        environment = {
            **read_side_environment(names),
            # Nothing else reads the pointers here; the rebuild still waits its margin.
            "PROJECTION_POINTER_TTL_SECONDS": "0",
        }
        print(f"loading {arguments.orders:,} orders ...", flush=True)
        loaded = load(environment, arguments.orders, threads=arguments.load_threads)
        print(
            f"loaded {loaded.orders:,} orders, {loaded.commits:,} commits in "
            f"{loaded.seconds:.0f} s",
            flush=True,
        )
        rounds: list[dict[str, Any]] = []
        warm_up: dict[str, Any] = {}
        for number in range(arguments.rounds + 1):
            rebuilt = timed_rebuild(environment, arguments.segments, arguments.flush_events)
            floor = timed_floor(dynamodb, names["EventsTable"], arguments.segments, rebuilt.rows)
            ratio = rebuilt.events_per_second / floor.events_per_second
            without_wait = rebuilt.events_per_second_without_wait / floor.events_per_second
            result = {
                "rebuild": asdict(rebuilt),
                "floor": asdict(floor),
                "ratio": ratio,
                "ratio_without_fixed_wait": without_wait,
            }
            if number == 0:
                warm_up = result
                label = "warm-up round (not counted)"
            else:
                rounds.append(result)
                label = f"round {number}"
            print(
                f"{label}: rebuild {rebuilt.events:,} events, {rebuilt.rows:,} rows in "
                f"{rebuilt.seconds:.1f} s (replay {rebuilt.replay_seconds:.1f} s, finish "
                f"{rebuilt.finish_seconds:.1f} s of which {rebuilt.fixed_wait_seconds:.1f} s a "
                f"fixed wait) = {rebuilt.events_per_second:,.0f} events/s; floor "
                f"{floor.events:,} events, {floor.rows:,} rows in {floor.seconds:.1f} s = "
                f"{floor.events_per_second:,.0f} events/s; ratio {ratio:.2f} (without the "
                f"fixed wait {without_wait:.2f})",
                flush=True,
            )
        rebuild_rate = statistics.median(
            r["rebuild"]["events"] / r["rebuild"]["seconds"] for r in rounds
        )
        floor_rate = statistics.median(r["floor"]["events"] / r["floor"]["seconds"] for r in rounds)
        summary = {
            "dynamodb_local": "in memory" if arguments.data_dir is None else "on disk",
            "orders": loaded.orders,
            "commits": loaded.commits,
            "load_seconds": loaded.seconds,
            "warm_up_round": warm_up,
            "segments": arguments.segments,
            "flush_events": arguments.flush_events,
            "rounds": rounds,
            "median_rebuild_events_per_second": rebuild_rate,
            "median_floor_events_per_second": floor_rate,
            "median_ratio": statistics.median(r["ratio"] for r in rounds),
        }
        print(
            f"median: rebuild {rebuild_rate:,.0f} events/s, floor {floor_rate:,.0f} events/s, "
            f"ratio {summary['median_ratio']:.2f} (target >= 0.7)"
        )
        arguments.output.parent.mkdir(parents=True, exist_ok=True)
        arguments.output.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {arguments.output}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
