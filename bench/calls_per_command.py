"""Figure 1: DynamoDB calls per command at histories of 10, 1,000 and 10,000 events.

The command is a restock of an ``InventoryItem`` (the aggregate whose history grows
for as long as a sku is sold), run through ``application.inventory.restock`` as the
API function runs it. Calls are counted with botocore's ``before-call`` hook on the
client the store uses. Three situations per history length:

- cold: a new application without a cache, as in a new container;
- warm: the application that ran the cold command, with the template's cache, runs
  a second command;
- conflict: another writer restocks first, so the warm container's write fails; the
  conflict returns the current tip and the retry succeeds without a read.

The baseline is the naive design (:mod:`bench.naive_store`) running the cold command
on the same history, measured in the same run.
"""

from __future__ import annotations

import sys
from typing import Any

from application import inventory
from application.orders import OrdersApplication
from bench.common import (
    CallCounter,
    CapacityMeter,
    FigureResult,
    LocalTables,
    Mode,
    Row,
    dynamodb_with_tables,
    run_main,
    stderr,
    store_environment,
)
from bench.naive_store import NaiveOrdersApplication, NaiveRecorder, naive_environment
from domain.inventory import InventoryItem

HISTORIES = {"tiny": (10, 200), "quick": (10, 1_000, 10_000), "full": (10, 1_000, 10_000)}
# 99 events and the tip fill a transaction of 100 actions.
EVENTS_PER_COMMIT = 99
CACHE = {"AGGREGATE_CACHE_MAXSIZE": "1000"}


def build_history(app: OrdersApplication, sku: str, length: int) -> None:
    """Save an item with ``length`` events: registered, then restocks of one unit."""
    item = InventoryItem.register(sku)
    for _ in range(length - 1):
        item.add_stock(1)
        if len(item.pending_events) == EVENTS_PER_COMMIT:
            app.save(item)
    app.save(item)


def build_naive_history(
    recorder: NaiveRecorder, app: OrdersApplication, sku: str, length: int
) -> None:
    item = InventoryItem.register(sku)
    for _ in range(length - 1):
        item.add_stock(1)
    recorder.bulk_load(app.mapper.to_stored_event(event) for event in item.collect_events())


def _count(app: OrdersApplication, sku: str) -> dict[str, Any]:
    client = app.recorder.client  # type: ignore[attr-defined]
    counter = CallCounter(client)
    meter = CapacityMeter()
    meter.attach(client)
    try:
        inventory.restock(app, sku, 1)
    finally:
        counter.close()
        meter.close()
    return {
        "reads": counter.reads,
        "writes": counter.writes,
        "calls": dict(counter.calls),
        "read_units": meter.totals.read_units,
        "write_units": meter.totals.write_units,
    }


def measure_length(local: LocalTables, naive_table: str, length: int) -> dict[str, Any]:
    sku = f"SKU-{length}"
    environment = store_environment(local.events)
    builder = OrdersApplication(env=environment)
    build_history(builder, sku, length)

    cold_app = OrdersApplication(env={**environment, **CACHE})
    cold = _count(cold_app, sku)
    warm = _count(cold_app, sku)
    inventory.restock(builder, sku, 1)  # another writer moves the stream
    conflict = _count(cold_app, sku)

    naive_app = NaiveOrdersApplication(env=naive_environment(naive_table))
    build_naive_history(naive_app.recorder, naive_app, sku, length)  # type: ignore[arg-type]
    naive = _count(naive_app, sku)
    for app in (builder, cold_app, naive_app):
        app.close()
    return {"cold": cold, "warm": warm, "conflict": conflict, "naive_cold": naive}


def run(mode: Mode) -> FigureResult:
    result = FigureResult("1", "DynamoDB calls per command", mode)
    measured: dict[int, dict[str, Any]] = {}
    with dynamodb_with_tables() as local:
        naive_table = local.create_more()["EventsTable"]
        for length in HISTORIES[mode]:
            stderr(f"figure 1: history of {length} events")
            measured[length] = measure_length(local, naive_table, length)

    naive_name = "naive design, cold"
    for length, counts in measured.items():
        naive_calls = counts["naive_cold"]["reads"] + counts["naive_cold"]["writes"]
        cases = (
            ("cold", counts["cold"], 1, 1),
            ("warm", counts["warm"], 0, 1),
            ("conflict", counts["conflict"], 0, 2),
        )
        for case, found, reads, writes in cases:
            total = found["reads"] + found["writes"]
            met = found["reads"] == reads and found["writes"] == writes
            result.rows.append(
                Row(
                    f"{length:,} events, {case}: {found['reads']} read + {found['writes']} write",
                    total,
                    "calls",
                    naive_calls,
                    naive_name,
                    target=f"{reads} read + {writes} write",
                    met=met,
                )
            )
        result.rows.append(
            Row(
                f"{length:,} events, cold: read units (AWS rules)",
                counts["cold"]["read_units"],
                "RRU",
                counts["naive_cold"]["read_units"],
                naive_name,
            )
        )
    result.notes = [
        "A command is one restock through application.inventory.restock; reads are GetItem "
        "and Query calls, writes TransactWriteItems (ours) or PutItem (naive).",
        "Conflict: another application restocked first; the warm container's transaction "
        "failed on the tip's version condition, took the current tip from the cancellation "
        "reason (ReturnValuesOnConditionCheckFailure=ALL_OLD) and retried: 2 writes, 0 reads.",
        "Naive baseline per history: "
        + ", ".join(
            f"{length:,}: {counts['naive_cold']['calls']}" for length, counts in measured.items()
        ),
    ]
    result.details = {str(length): counts for length, counts in measured.items()}
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
