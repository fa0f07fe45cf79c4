"""Print a run's JSON as Markdown tables, for docs/benchmarks.md.

Usage: ``python -m bench.report .cache/bench/latest-full.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import FigureResult, format_number, verdict


def figure_markdown(result: FigureResult) -> str:
    lines = [
        f"### Figure {result.key}: {result.title}",
        "",
        "| figure | measured | baseline | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in result.rows:
        baseline = format_number(row.baseline, row.unit)
        if row.baseline_name:
            baseline = f"{baseline} ({row.baseline_name})"
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        lines.append(
            f"| {row.name} | {format_number(row.measured, row.unit)} | {baseline} | {ratio} "
            f"| {row.target or '-'} | {verdict(row)} |"
        )
    lines.append("")
    if result.status != "ok":
        lines.append(f"Status: **{result.status}**.")
        lines.append("")
    lines += [f"- {note}" for note in result.notes]
    lines.append(f"- Took {result.seconds:.0f} s.")
    return "\n".join(lines) + "\n"


def run_markdown(run: dict[str, Any]) -> str:
    machine = run["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in machine["packages"].items())
    header = [
        f"- Command: `{run['command']}` ({run['seconds'] / 60:.1f} min)",
        f"- Date: {machine['date']}; commit {machine['git_commit'][:10]}",
        f"- Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), "
        f"{machine['memory_gib']} GiB RAM, {machine['os']}, kernel {machine['kernel']}",
        f"- Python {machine['python']}; Java: {' '.join(machine['java'])}",
        f"- Packages: {packages}",
        f"- Load: before `{machine['uptime_before']}`; after `{machine.get('uptime_after', '?')}`",
        "",
    ]
    figures = [figure_markdown(FigureResult.from_dict(data)) for data in run["figures"]]
    return "\n".join(header) + "\n" + "\n".join(figures)


def main(argv: list[str] | None = None) -> int:
    arguments = argv if argv is not None else sys.argv[1:]
    if len(arguments) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(run_markdown(json.loads(Path(arguments[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
