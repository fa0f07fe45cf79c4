"""The 20,000-order rebuild scenario on the local stack, with real interruptions.

1. Start the local stack from the template on a DynamoDB Local that keeps its data
   on disk, as ``orders dev`` does. The publisher's handler is replaced by one that
   publishes nothing, so the saga stays idle while the loader plays the saga's
   outcomes itself (see ``bench.load_orders``). The projector runs as deployed, fed
   by the stream poller.
2. Load the orders, and wait until the projector has applied every commit.
3. ``orders projections verify``: the stream-fed read models against a replay.
4. ``orders projections rebuild``, then ``verify``.
5. Rebuild again while a trickle of new orders keeps committing; kill the process
   with SIGKILL when about half the events are replayed, run the same command to
   resume, then ``verify`` once the trickle is projected.
6. The same with SIGINT (Ctrl-C), which makes the CLI checkpoint and exit.

Every command runs as its own process, as an operator would run it. The numbers go
to stdout and to ``.cache/bench/rebuild-scenario.json``.

    .venv/bin/python -m bench.rebuild_scenario --orders 20000
    .venv/bin/python -m bench.rebuild_scenario --keep-data   # skip step 2's load

With ``--keep-data`` the stream pollers start again from the oldest stream record,
because this stack keeps no stream checkpoints: the projector reads every commit
of the earlier runs again (skipping them as duplicates) before the first verify.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import read_side_environment
from bench.load_orders import Loader, load, plan_orders
from infra.local import dynamodb_local
from infra.local.stack import LocalStack

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / ".cache" / "bench" / "rebuild-scenario"
RESULTS_PATH = PROJECT_ROOT / ".cache" / "bench" / "rebuild-scenario.json"
PREFIX = "scenario-"
IDLE_TIMEOUT_SECONDS = 3600
TRICKLE_ORDERS = 300
TRICKLE_INTERVAL_SECONDS = 0.05
REPLAYED = re.compile(r"replayed ([\d,]+) events in ([\d.]+) s \(([\d,]+) events/s\)")


class ScenarioError(RuntimeError):
    pass


def cli(*arguments: str, endpoint: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "infra.local.cli",
        "projections",
        *arguments,
        "--endpoint-url",
        endpoint,
        "--table-prefix",
        PREFIX,
    ]


def run_cli(*arguments: str, endpoint: str, expect: int = 0) -> tuple[float, str]:
    started = time.monotonic()
    completed = subprocess.run(
        cli(*arguments, endpoint=endpoint),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        check=False,
    )
    seconds = time.monotonic() - started
    output = completed.stdout + completed.stderr
    command = " ".join(arguments)
    print(f"$ orders projections {command}  ({seconds:.1f} s, exit {completed.returncode})")
    print("  " + output.strip().replace("\n", "\n  "), flush=True)
    if completed.returncode != expect:
        raise ScenarioError(f"orders projections {arguments[0]} exited {completed.returncode}")
    return seconds, output


def replayed_rate(output: str) -> dict[str, float]:
    match = REPLAYED.search(output)
    if match is None:
        return {}
    return {
        "events": float(match.group(1).replace(",", "")),
        "seconds": float(match.group(2)),
        "events_per_second": float(match.group(3).replace(",", "")),
    }


def events_done(stack: LocalStack) -> int:
    """Events replayed so far by the rebuild the pointers name (from its checkpoints)."""
    from adapters.composition import build_read_side

    read_side = build_read_side(_environment(stack))
    pointer = read_side.control.pointer("order_summary")
    if not pointer.rebuild_id:
        return 0
    return sum(c.events for c in read_side.control.checkpoints(pointer.rebuild_id))


def _environment(stack: LocalStack) -> dict[str, str]:
    return read_side_environment(stack.table_names)


def interrupted_rebuild(
    stack: LocalStack, endpoint: str, total_events: int, signal_number: int
) -> dict[str, Any]:
    """Rebuild with live orders trickling in; interrupt halfway; resume; verify."""
    environment = _environment(stack)
    trickle_done = threading.Event()

    def trickle() -> None:
        from application.orders import OrdersApplication

        loader = Loader(OrdersApplication(env=environment))
        for planned in plan_orders(TRICKLE_ORDERS, seed=signal_number * 1000 + int(time.time())):
            loader.run(planned)
            time.sleep(TRICKLE_INTERVAL_SECONDS)
        loader.app.close()
        trickle_done.set()

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    process = subprocess.Popen(
        cli("rebuild", "--segments", "4", "--no-progress", endpoint=endpoint),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=PROJECT_ROOT,
    )
    while process.poll() is None and events_done(stack) < total_events // 2:
        time.sleep(0.2)
    at = events_done(stack)
    if process.poll() is not None:
        raise ScenarioError("the rebuild finished before it could be interrupted")
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=120)
    interrupted_after = time.monotonic() - started
    name = signal.Signals(signal_number).name
    print(
        f"$ orders projections rebuild --segments 4  ({name} after {interrupted_after:.1f} s, "
        f"{at:,} of about {total_events:,} events replayed, exit {process.returncode})"
    )
    print("  " + output.strip().replace("\n", "\n  "), flush=True)
    resume_seconds, resume_output = run_cli(
        "rebuild", "--segments", "4", "--no-progress", endpoint=endpoint
    )
    if not trickle_done.wait(timeout=IDLE_TIMEOUT_SECONDS):
        raise ScenarioError("the live orders did not finish")
    idle = stack.wait_until_idle(IDLE_TIMEOUT_SECONDS)
    verify_seconds, verify_output = run_cli("verify", endpoint=endpoint)
    return {
        "signal": name,
        "interrupted_after_seconds": interrupted_after,
        "events_replayed_when_interrupted": at,
        "exit_code_when_interrupted": process.returncode,
        "resume_seconds": resume_seconds,
        "resume": replayed_rate(resume_output),
        "live_orders_during_rebuild": TRICKLE_ORDERS,
        "stack_idle_before_verify": idle,
        "verify_seconds": verify_seconds,
        "verify_clean": "differences" not in verify_output.replace("no differences", ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild_scenario", description=__doc__)
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--load-threads", type=int, default=8)
    parser.add_argument("--keep-data", action="store_true", help="reuse a loaded data folder")
    arguments = parser.parse_args(argv)
    # A plain kill should still stop the DynamoDB Local and stack this process started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    if not arguments.keep_data:
        shutil.rmtree(DATA_DIR, ignore_errors=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"orders": arguments.orders}
    server = dynamodb_local.start(
        data_dir=DATA_DIR / "dynamodb", log_path=DATA_DIR / "dynamodb-local.log"
    )
    try:
        with LocalStack(
            name_prefix=PREFIX,
            dynamodb_endpoint_url=server.endpoint_url,
            handlers={"PublisherFunction": "bench.noop_publisher.handler"},
            function_output=lambda name, line: None,
        ) as stack:
            endpoint = server.endpoint_url
            for name, value in stack.service_environment.items():
                os.environ[name] = value
            if not arguments.keep_data:
                print(f"loading {arguments.orders:,} orders ...", flush=True)
                loaded = load(
                    _environment(stack),
                    arguments.orders,
                    threads=arguments.load_threads,
                    report=lambda count, commits: print(
                        f"  {count:,} orders, {commits:,} commits", flush=True
                    ),
                )
                results["load"] = {
                    "seconds": loaded.seconds,
                    "commits": loaded.commits,
                    "commits_per_second": loaded.commits_per_second,
                }
                print(f"loaded in {loaded.seconds:.0f} s; waiting for the projector", flush=True)
            waited = time.monotonic()
            results["projector_idle"] = stack.wait_until_idle(IDLE_TIMEOUT_SECONDS)
            results["projector_catch_up_seconds"] = time.monotonic() - waited

            seconds, output = run_cli("verify", endpoint=endpoint)
            results["verify_stream_fed"] = {"seconds": seconds, "output": output}
            seconds, output = run_cli(
                "rebuild", "--segments", "4", "--no-progress", endpoint=endpoint
            )
            results["rebuild"] = {"command_seconds": seconds, "replay": replayed_rate(output)}
            total_events = int(results["rebuild"]["replay"].get("events", 0))
            seconds, output = run_cli("verify", endpoint=endpoint)
            results["verify_rebuilt"] = {"seconds": seconds, "output": output}
            results["sigkill"] = interrupted_rebuild(stack, endpoint, total_events, signal.SIGKILL)
            results["sigint"] = interrupted_rebuild(stack, endpoint, total_events, signal.SIGINT)
    finally:
        server.stop()
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
