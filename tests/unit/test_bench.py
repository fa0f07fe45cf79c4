"""The benchmark plumbing: every module imports, the meters count by AWS's rules, a lifecycle runs.

Speed is measured by ``make bench``, not here; these tests only keep the suite runnable.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import pytest

from application.orders import OrdersApplication
from bench.capacity import usd_per_million_orders
from bench.common import CapacityMeter, FigureResult, Row, percentile
from bench.lifecycle import build_apps, restock, run_lifecycle, saga_trigger_types
from bench.run import FIGURES

MODULES = [
    *FIGURES.values(),
    "bench.common",
    "bench.report",
    "bench.lifecycle",
    "bench.naive_store",
    "bench.local_stack",
    "bench.peer_worker",
    "bench.run",
]


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module: str) -> None:
    importlib.import_module(module)


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    assert percentile(list(map(float, range(101))), 99) == 99.0


def test_row_ratio_and_result_round_trip() -> None:
    row = Row("x", 3.0, "ms", 2.0, "floor", target="<= 1.3x", met=False)
    result = FigureResult("9", "title", "tiny", rows=[row], notes=["n"])
    again = FigureResult.from_dict(result.as_dict())
    assert again.rows[0].ratio == 1.5
    assert again.as_dict() == result.as_dict()


class _Model:
    def __init__(self, name: str) -> None:
        self.name = name


def _item(stream: str, position: int, payload: int, kind: str = "event") -> dict[str, Any]:
    return {
        "stream_id": {"S": stream},
        "position": {"N": str(position)},
        "kind": {"S": kind},
        "state": {"B": b"x" * payload},
    }


def _call(meter: CapacityMeter, name: str, params: dict[str, Any], parsed: dict[str, Any]) -> None:
    context: dict[str, Any] = {}
    meter._ask_for_capacity(params=params, model=_Model(name), context=context)
    meter._account(parsed=parsed, model=_Model(name), context=context)


def test_meter_doubles_transactional_writes_and_rounds_per_item() -> None:
    meter = CapacityMeter()
    actions = [{"Put": {"Item": _item("s", 0, 1500, "tip")}}, {"Put": {"Item": _item("s", 1, 10)}}]
    _call(meter, "TransactWriteItems", {"TransactItems": actions}, {"ConsumedCapacity": []})
    # 1.5 KB tip -> 2 units, small event -> 1 unit, both doubled in a transaction.
    assert meter.totals.write_units == 6
    assert meter.totals.write_units_by_kind == {"tip": 4, "event": 2}

    _call(meter, "PutItem", {"Item": _item("s", 0, 10, "tip")}, {})
    # A put is charged for the larger of the old item (1.5 KB) and the new one.
    assert meter.totals.write_units == 8


def test_meter_charges_strong_reads_per_4kb_and_a_miss_as_one_unit() -> None:
    meter = CapacityMeter()
    items = [_item("s", position, 3000) for position in range(1, 4)]
    _call(meter, "Query", {"ConsistentRead": True}, {"Items": items})
    assert meter.totals.read_units == 3  # about 9 KB in one page
    _call(meter, "GetItem", {"ConsistentRead": True}, {})
    assert meter.totals.read_units == 4


def test_price_per_million_orders() -> None:
    assert usd_per_million_orders(8, 8) == pytest.approx(8 * 0.625 + 8 * 0.125)


def test_order_lifecycle_runs_to_fulfilled_on_the_memory_store() -> None:
    apps = build_apps(OrdersApplication, {"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    # Each memory application keeps its own events, so all roles share one here.
    apps.saga_app = apps.worker = apps.inspector = apps.api
    apps.saga.app = apps.api
    restock(apps.worker, [("MUG-RED", 2, 1250), ("TEA-GREEN", 1, 499)], 10)
    trace = run_lifecycle(apps, saga_trigger_types(), pause=contextlib.nullcontext)
    assert trace.status == "FULFILLED"
    assert trace.reservations == 2
    assert trace.saga_triggers[0] == "OrderPlaced"
