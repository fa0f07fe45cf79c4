"""Figure 7: this store next to its peers on one workload, events appended and aggregates loaded.

Peers: the eventsourcing library's own SQLite module (a file in a temporary folder)
and the ``eventsourcing-dynamodb`` package (0.1.0), which pins eventsourcing below
9.4 and so runs in its own virtual environment under ``.cache/bench``. Both
DynamoDB stores use one DynamoDB Local started by this benchmark. Each store runs
:mod:`bench.peer_worker` in its own process with the same workload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    PROJECT_ROOT,
    RESULTS_DIR,
    FigureResult,
    Mode,
    Row,
    dynamodb_with_tables,
    run_main,
    stderr,
)

WORKLOADS = {
    "tiny": {"aggregates": 3, "events": 20, "per_commit": 10, "loads": 1},
    "quick": {"aggregates": 20, "events": 200, "per_commit": 10, "loads": 3},
    "full": {"aggregates": 50, "events": 1000, "per_commit": 10, "loads": 5},
}
PEER_PACKAGE = "eventsourcing-dynamodb==0.1.0"
PEER_VENV = RESULTS_DIR / "peer-venv"


def peer_python() -> Path:
    """Return the Python of the peer's virtual environment, creating it on first use."""
    python = PEER_VENV / "bin" / "python"
    marker = PEER_VENV / ".installed"
    if marker.is_file():
        return python
    stderr(f"figure 7: creating {PEER_VENV} with {PEER_PACKAGE}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            PEER_PACKAGE,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    marker.write_text(PEER_PACKAGE)
    return python


def run_worker(command: list[str], environment: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        return {"error": completed.stderr.strip()[-1500:] or f"exit {completed.returncode}"}
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def workload_arguments(workload: dict[str, int]) -> list[str]:
    return [
        f"--aggregates={workload['aggregates']}",
        f"--events={workload['events']}",
        f"--per-commit={workload['per_commit']}",
        f"--loads={workload['loads']}",
    ]


def run(mode: Mode) -> FigureResult:
    result = FigureResult("7", "Peers on the same workload", mode)
    workload = WORKLOADS[mode]
    arguments = workload_arguments(workload)
    outcomes: dict[str, dict[str, Any]] = {}
    with dynamodb_with_tables() as local, tempfile.TemporaryDirectory() as scratch:
        environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        stderr("figure 7: eventsourcing.sqlite")
        outcomes["sqlite"] = run_worker(
            [
                sys.executable,
                "-m",
                "bench.peer_worker",
                "--store=sqlite",
                f"--sqlite-path={Path(scratch) / 'events.sqlite'}",
                *arguments,
            ],
            environment,
        )
        stderr("figure 7: this store on DynamoDB Local")
        outcomes["ours"] = run_worker(
            [
                sys.executable,
                "-m",
                "bench.peer_worker",
                "--store=ours",
                f"--endpoint-url={local.endpoint_url}",
                f"--table={local.events}",
                *arguments,
            ],
            environment,
        )
        stderr("figure 7: eventsourcing-dynamodb on DynamoDB Local")
        try:
            python = peer_python()
        except (subprocess.CalledProcessError, OSError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            outcomes["es-dynamodb"] = {"error": f"installing {PEER_PACKAGE} failed: {detail}"}
        else:
            # -I: the worker must see the peer's eventsourcing, not the project's.
            outcomes["es-dynamodb"] = run_worker(
                [
                    str(python),
                    "-I",
                    str(PROJECT_ROOT / "bench" / "peer_worker.py"),
                    "--store=es-dynamodb",
                    "--create-table",
                    f"--endpoint-url={local.endpoint_url}",
                    *arguments,
                ],
                {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")},
            )

    ours = outcomes["ours"]
    labels = {
        "sqlite": "eventsourcing.sqlite (file)",
        "es-dynamodb": "eventsourcing-dynamodb 0.1.0",
    }
    for metric, label, unit in (
        ("append_events_per_second", "append", "events/s"),
        ("loads_per_second", "load", "aggregates/s"),
    ):
        for peer in ("sqlite", "es-dynamodb"):
            other = outcomes[peer]
            result.rows.append(
                Row(
                    f"{label}: ours (DynamoDB Local) vs {peer}",
                    ours.get(metric),
                    unit,
                    other.get(metric),
                    labels[peer],
                    note=other.get("error", ""),
                )
            )
    result.notes.append(
        f"Workload: {workload['aggregates']} aggregates of {workload['events']} events, saved "
        f"in commits of {workload['per_commit']} events; each loaded {workload['loads']} times. "
        "This store loads from the tip's snapshot (one GetItem); the SQLite module replays "
        "every event (no snapshotting configured); eventsourcing-dynamodb replays every event "
        "with an eventually consistent Query."
    )
    for name, outcome in outcomes.items():
        if "error" in outcome:
            result.notes.append(f"{name} did not run: {outcome['error']}")
            continue
        conflict = outcome["conflict"]
        if conflict["detected"]:
            text = f"rejected the second writer ({conflict['error']})"
        else:
            text = (
                "accepted both writers at the same version, no error; the stored total is "
                f"{conflict['final_total']} where both additions give 1001 (lost update)"
                if conflict["lost_update"]
                else "accepted both writers without an error"
            )
        result.notes.append(
            f"Concurrency check, {name} (eventsourcing {outcome['eventsourcing_version']}): {text}."
        )
    if any("error" in outcome for outcome in outcomes.values()):
        result.status = "error" if "error" in ours else "ok"
    result.details = {"workload": workload, "outcomes": outcomes}
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
