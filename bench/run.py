"""Run every benchmark figure, print its table, and write the run's JSON under .cache/bench.

``python -m bench.run --quick`` (``make bench``) takes a few minutes on two cores;
``--full`` (``make bench-full``) is the run recorded in docs/benchmarks.md. Each
figure runs in its own interpreter, which starts and stops its own DynamoDB Local
or local stack, so one figure's imports, environment and caches cannot leak into
another's. ``--only 1,5`` runs some figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.common import PROJECT_ROOT, RESULTS_DIR, FigureResult, print_figure, verdict

FIGURES = {
    "1": "bench.calls_per_command",
    "2": "bench.command_latency",
    "3": "bench.pipeline",
    "4": "bench.projection_lag",
    "5": "bench.capacity",
    "6": "bench.cold_start",
    "7": "bench.peers",
}
PACKAGES = (
    "boto3",
    "botocore",
    "eventsourcing",
    "aws-lambda-powertools",
    "pydantic",
    "moto",
    "stripe",
    "rich",
)
FIGURE_TIMEOUT_SECONDS = 1800


def _first_line(path: str, prefix: str, separator: str = ":") -> str:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix) and separator in line:
                return line.split(separator, 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _command_output(command: list[str]) -> str:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        return f"unavailable ({error})"
    return (completed.stdout or completed.stderr).strip()


def machine_description() -> dict[str, Any]:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    memory_kib = _first_line("/proc/meminfo", "MemTotal").split()[0]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": _first_line("/proc/cpuinfo", "model name"),
        "memory_gib": round(int(memory_kib) / 1024 / 1024, 1) if memory_kib.isdigit() else None,
        "os": _first_line("/etc/os-release", "PRETTY_NAME", "=").strip('"') or platform.platform(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "java": _command_output(["java", "-version"]).splitlines()[0:1],
        "packages": packages,
        "git_commit": _command_output(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"]),
        "uptime_before": _command_output(["uptime"]),
    }


def run_figure(key: str, mode: str, folder: Path) -> FigureResult:
    module = FIGURES[key]
    output = folder / f"figure-{key}.json"
    started = time.perf_counter()
    try:
        completed = subprocess.run(
            [sys.executable, "-m", module, f"--{mode}", "--json", str(output)],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            timeout=FIGURE_TIMEOUT_SECONDS,
            check=False,
        )
        failure = None if completed.returncode == 0 else f"exit code {completed.returncode}"
    except subprocess.TimeoutExpired:
        failure = f"timed out after {FIGURE_TIMEOUT_SECONDS} s"
    if output.is_file():
        return FigureResult.from_dict(json.loads(output.read_text()))
    result = FigureResult(key, module, mode, status="error")  # type: ignore[arg-type]
    result.notes.append(f"{module} produced no result: {failure}")
    result.seconds = time.perf_counter() - started
    return result


def print_summary(results: list[FigureResult], seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(title=f"Summary ({seconds / 60:.1f} min)", title_justify="left")
    for column in ("figure", "status", "targets met", "targets missed", "seconds"):
        table.add_column(column)
    for result in results:
        met = sum(1 for row in result.rows if verdict(row) == "met")
        missed = [row.name for row in result.rows if verdict(row) == "MISSED"]
        table.add_row(
            f"{result.key}. {result.title}",
            result.status,
            str(met),
            "; ".join(missed) or "-",
            f"{result.seconds:.0f}",
        )
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="mode", action="store_const", const="quick")
    group.add_argument("--full", dest="mode", action="store_const", const="full")
    group.add_argument("--tiny", dest="mode", action="store_const", const="tiny")
    parser.add_argument("--only", default="", help="comma-separated figure numbers, e.g. 1,5")
    parser.set_defaults(mode="quick")
    arguments = parser.parse_args(argv)
    keys = [key.strip() for key in arguments.only.split(",") if key.strip()] or list(FIGURES)
    unknown = [key for key in keys if key not in FIGURES]
    if unknown:
        parser.error(f"unknown figures {unknown}; choose from {', '.join(FIGURES)}")

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = RESULTS_DIR / f"run-{stamp}-{arguments.mode}"
    folder.mkdir(parents=True, exist_ok=True)
    machine = machine_description()
    started = time.perf_counter()
    results = [run_figure(key, arguments.mode, folder) for key in keys]
    seconds = time.perf_counter() - started
    machine["uptime_after"] = _command_output(["uptime"])

    print()
    for result in results:
        print_figure(result)
    print_summary(results, seconds)
    run = {
        "mode": arguments.mode,
        "command": f"python -m bench.run --{arguments.mode}"
        + (f" --only {arguments.only}" if arguments.only else ""),
        "seconds": round(seconds, 1),
        "machine": machine,
        "figures": [result.as_dict() for result in results],
    }
    path = folder / "run.json"
    path.write_text(json.dumps(run, indent=2, default=str))
    (RESULTS_DIR / f"latest-{arguments.mode}.json").write_text(path.read_text())
    print(f"results: {path.relative_to(PROJECT_ROOT)}")
    return 1 if any(result.status == "error" for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
