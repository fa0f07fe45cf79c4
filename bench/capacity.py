"""Figure 5: capacity units and on-demand cost of one complete order lifecycle.

The same lifecycle (place, two line reservations, payment, shipment, fulfilment,
confirmation, with the saga's own stream and the inventory writes) runs on this
store and on the naive design of :mod:`bench.naive_store`, each on its own tables
of one DynamoDB Local. Every call of the three writing functions is metered by
:class:`bench.common.CapacityMeter`: the units DynamoDB Local reports, and the units
computed from item sizes by AWS's rules, which are the ones AWS bills.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from application.orders import OrdersApplication
from bench.common import (
    CapacityMeter,
    FigureResult,
    LocalTables,
    Mode,
    Row,
    dynamodb_with_tables,
    run_main,
    store_environment,
)
from bench.lifecycle import (
    DEFAULT_LINES,
    LifecycleApps,
    build_apps,
    restock,
    run_lifecycle,
    saga_trigger_types,
)
from bench.naive_store import NaiveOrdersApplication, naive_environment

ORDERS = {"tiny": 1, "quick": 5, "full": 25}

# On-demand prices of DynamoDB Standard tables in us-east-1, from the AWS DynamoDB
# pricing page as it stood after the price cut of 1 November 2024. No network here:
# check them at https://aws.amazon.com/dynamodb/pricing/on-demand/ before quoting.
PRICE_SOURCE = (
    "AWS DynamoDB on-demand pricing, us-east-1, Standard table class, "
    "as of November 2024 (after the 2024-11-01 price cut); not checked online, verify"
)
USD_PER_MILLION_WRITE_UNITS = 0.625
USD_PER_MILLION_READ_UNITS = 0.125


def usd_per_million_orders(write_units: float, read_units: float) -> float:
    """Return the on-demand request cost in USD of a million orders with these units each."""
    return write_units * USD_PER_MILLION_WRITE_UNITS + read_units * USD_PER_MILLION_READ_UNITS


def _measure(
    tables: dict[str, str],
    make_app: Callable[[dict[str, str]], OrdersApplication],
    environment: dict[str, str],
    orders: int,
) -> dict[str, Any]:
    apps: LifecycleApps = build_apps(make_app, environment)
    meter = CapacityMeter()
    for app in (apps.api, apps.saga_app, apps.worker):
        meter.attach(app.recorder.client)  # type: ignore[attr-defined]
    triggers = saga_trigger_types()
    per_order: list[dict[str, Any]] = []
    try:
        with meter.paused():
            restock(apps.worker, DEFAULT_LINES, 1_000_000)
        for _ in range(orders):
            before = (
                meter.totals.write_units,
                meter.totals.read_units,
                meter.totals.reported,
                meter.totals.reads,
                meter.totals.writes,
                meter.totals.written_items,
            )
            trace = run_lifecycle(apps, triggers, pause=meter.paused)
            after = (
                meter.totals.write_units,
                meter.totals.read_units,
                meter.totals.reported,
                meter.totals.reads,
                meter.totals.writes,
                meter.totals.written_items,
            )
            write_units, read_units, reported, reads, writes, items = (
                b - a for a, b in zip(before, after, strict=True)
            )
            per_order.append(
                {
                    "write_units": write_units,
                    "read_units": read_units,
                    "reported_units": reported,
                    "read_calls": reads,
                    "write_calls": writes,
                    "items_written": items,
                    "saga_triggers": trace.saga_triggers,
                    "reservations": trace.reservations,
                }
            )
        calls = dict(meter.totals.calls)
        by_kind = {
            kind: {
                "write_units": meter.totals.write_units_by_kind[kind] / len(per_order),
                "items": meter.totals.items_by_kind[kind] / len(per_order),
                "mean_bytes": round(
                    meter.totals.bytes_by_kind[kind] / meter.totals.items_by_kind[kind]
                ),
            }
            for kind in meter.totals.items_by_kind
        }
    finally:
        meter.close()
        for app in (apps.api, apps.saga_app, apps.worker, apps.inspector):
            app.close()
    count = len(per_order)

    def mean(key: str) -> float:
        return float(sum(entry[key] for entry in per_order)) / count

    return {
        "write_units": mean("write_units"),
        "read_units": mean("read_units"),
        "reported_units": mean("reported_units"),
        "read_calls": mean("read_calls"),
        "write_calls": mean("write_calls"),
        "items_written": mean("items_written"),
        "first_order": per_order[0],
        "last_order": per_order[-1],
        "calls_by_operation": {name: value / count for name, value in calls.items()},
        "writes_by_item_kind": by_kind,
        "tables": tables,
    }


def run(mode: Mode) -> FigureResult:
    result = FigureResult("5", "Capacity and cost per order lifecycle", mode)
    orders = ORDERS[mode]
    with dynamodb_with_tables() as local:
        ours = _measure(local.names, OrdersApplication, store_environment(local.events), orders)
        naive_tables = LocalTables.create_more(local)
        naive = _measure(
            naive_tables,
            NaiveOrdersApplication,
            naive_environment(naive_tables["EventsTable"]),
            orders,
        )
    ours_total = ours["write_units"] + ours["read_units"]
    naive_total = naive["write_units"] + naive["read_units"]
    ours_price = usd_per_million_orders(ours["write_units"], ours["read_units"])
    naive_price = usd_per_million_orders(naive["write_units"], naive["read_units"])
    baseline = "naive: item per event, no tip"
    result.rows = [
        Row(
            "write request units (AWS rules)",
            ours["write_units"],
            "WRU",
            naive["write_units"],
            baseline,
        ),
        Row(
            "read request units (AWS rules)",
            ours["read_units"],
            "RRU",
            naive["read_units"],
            baseline,
        ),
        Row(
            "all request units (AWS rules)",
            ours_total,
            "RU",
            naive_total,
            baseline,
            target="<= 0.5x naive",
            met=ours_total <= 0.5 * naive_total,
        ),
        Row(
            "units reported by DynamoDB Local",
            ours["reported_units"],
            "CU",
            naive["reported_units"],
            baseline,
        ),
        Row("on-demand cost per million orders", ours_price, "USD", naive_price, baseline),
        Row("write calls", ours["write_calls"], "calls", naive["write_calls"], baseline),
        Row("read calls", ours["read_calls"], "calls", naive["read_calls"], baseline),
        Row("items written", ours["items_written"], "items", naive["items_written"], baseline),
    ]
    result.notes = [
        f"Mean over {orders} sequential order lifecycles of 2 lines each on the events table "
        "(API, saga, item worker); restocking is setup and not counted. Read-model writes "
        "(projector) and stream reads (free for Lambda triggers) are outside this figure.",
        "Computed units: write = 1 per started KB of each item (the larger of old and new), "
        "x2 in a transaction; strongly consistent read = 1 per started 4 KB per GetItem or per "
        "Query page over the full size of every item read. DynamoDB Local's reported units do "
        "not double transactional writes, so they are shown but not priced.",
        f"Prices: ${USD_PER_MILLION_WRITE_UNITS} per million write request units, "
        f"${USD_PER_MILLION_READ_UNITS} per million read request units ({PRICE_SOURCE}).",
        "Naive per order, first vs last lifecycle: "
        f"{naive['first_order']['read_units']} -> {naive['last_order']['read_units']} RRU "
        "(its inventory Query grows with each sku's history); ours: "
        f"{ours['first_order']['read_units']} -> {ours['last_order']['read_units']} RRU.",
    ]
    result.details = {"ours": ours, "naive": naive, "price_source": PRICE_SOURCE}
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
