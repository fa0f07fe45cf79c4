"""Figure 4: projection lag on the local stack, from commit to read-model visibility.

Orders are placed one at a time over HTTP on the template's local stack (its own
DynamoDB Local, stream pollers, saga). The lag of one order runs from the moment
the 202 answer arrives (the commit happened just before it) to the first
``GET /orders/{id}`` that returns 200, polled every ``POLL_SECONDS``. It is
reported as a multiple of the stream poller's interval; the projector's event source
mapping also sets a batching window (``MaximumBatchingWindowInSeconds``), which the
local poller honours as Lambda does, so the figure is run with the template's window
and with the window set to 0.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import requests

from bench.common import FigureResult, Mode, Row, percentile, run_main, stderr
from bench.local_stack import HTTP_TIMEOUT, post_order, restock, running_stack
from infra.local.stream_mapping import stream_mappings

ORDERS = {"tiny": 3, "quick": 20, "full": 80}
POLL_SECONDS = 0.01
DEADLINE_SECONDS = 10.0


def projector_batching_window(stack: Any) -> float:
    for mapping in stream_mappings(stack.template):
        if mapping.function_id == "ProjectorFunction":
            return float(mapping.batching_window)
    raise LookupError("the template has no stream mapping for ProjectorFunction")


def measure(batching_window: float | None, orders: int) -> dict[str, Any]:
    lags: list[float] = []
    with (
        running_stack(batching_window=batching_window) as (stack, output),
        requests.Session() as session,
    ):
        window = projector_batching_window(stack) if batching_window is None else batching_window
        restock(session, stack, orders * 2 + 10)
        for index in range(orders):
            order_id = post_order(session, stack, f"c-lag-{index}")
            committed = time.monotonic()
            while True:
                response = session.get(f"{stack.api_url}/orders/{order_id}", timeout=HTTP_TIMEOUT)
                if response.status_code == 200:
                    lags.append((time.monotonic() - committed) * 1000)
                    break
                if time.monotonic() - committed > DEADLINE_SECONDS:
                    raise RuntimeError(f"order {order_id} not visible after {DEADLINE_SECONDS} s")
                time.sleep(POLL_SECONDS)
        return {
            "poll_interval_ms": stack.poll_interval * 1000,
            "batching_window_ms": window * 1000,
            "lags_ms": lags,
            "errors": output.errors,
        }


def run(mode: Mode) -> FigureResult:
    result = FigureResult("4", "Projection lag: commit to read-model visibility", mode)
    runs = {}
    for label, window in (("template's batching window", None), ("batching window 0", 0.0)):
        stderr(f"figure 4: {label}")
        runs[label] = measure(window, ORDERS[mode])
    for label, measured in runs.items():
        poll = measured["poll_interval_ms"]
        floor = measured["batching_window_ms"] + poll
        for q in (50, 99):
            value = percentile(measured["lags_ms"], q)
            result.rows.append(
                Row(
                    f"{label} ({measured['batching_window_ms']:.0f} ms), p{q}",
                    value,
                    "ms",
                    poll,
                    "stream poller interval",
                    note=f"{value / floor:.2f}x (window + one interval)",
                )
            )
    result.notes = [
        f"{ORDERS[mode]} orders per setting, placed one after another while the saga runs "
        f"them to the end; visibility polled every {POLL_SECONDS * 1000:.0f} ms over HTTP, so "
        "each lag includes up to one poll and one GET.",
        "Ratio = lag / poller interval. With the template's window the lag is dominated by "
        "MaximumBatchingWindowInSeconds, a cost-for-latency setting of the projector's mapping, "
        "not by the poller; on AWS the same window applies.",
    ]
    errors = [error for measured in runs.values() for error in measured["errors"]]
    if errors:
        result.notes.append(f"Function errors logged during the run: {errors[:3]}")
    result.details = runs
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
