"""Shared parts of the benchmarks: results, modes, DynamoDB Local, call and capacity meters.

Every benchmark module exposes ``run(mode) -> FigureResult`` and a ``main()`` that
prints the figure's table and can write its JSON. A row compares a measured value
with a baseline measured in the same run; its ratio is ``measured / baseline``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3

from adapters.eventstore.items import item_size
from infra.local import dynamodb_local
from infra.local.template import Template, create_tables

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from mypy_boto3_dynamodb import DynamoDBClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / ".cache" / "bench"

Mode = Literal["tiny", "quick", "full"]
MODES: tuple[Mode, ...] = ("tiny", "quick", "full")

READ_OPERATIONS = frozenset(
    {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems", "ExecuteStatement"}
)
WRITE_OPERATIONS = frozenset(
    {
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
        "BatchExecuteStatement",
    }
)

FAKE_AWS_ENVIRONMENT = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


# Results ----------------------------------------------------------------------------


@dataclass
class Row:
    """One measured figure next to its baseline from the same run."""

    name: str
    measured: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    """None when the issue sets no target for the row."""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.measured is None or self.baseline is None or self.baseline == 0:
            return None
        return self.measured / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass
class FigureResult:
    key: str
    title: str
    mode: Mode
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: Literal["ok", "unavailable", "error"] = "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "mode": self.mode,
            "status": self.status,
            "seconds": round(self.seconds, 1),
            "rows": [row.as_dict() for row in self.rows],
            "notes": self.notes,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FigureResult:
        rows = [
            Row(**{key: value for key, value in row.items() if key != "ratio"})
            for row in data["rows"]
        ]
        return cls(
            key=data["key"],
            title=data["title"],
            mode=data["mode"],
            rows=rows,
            notes=list(data["notes"]),
            details=dict(data["details"]),
            seconds=float(data["seconds"]),
            status=data["status"],
        )


def format_number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value == 0:
        text = "0"
    elif abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 0.01:
        text = f"{value:.2f}"
    else:
        text = f"{value:.2g}"
    return f"{text} {unit}".strip()


def verdict(row: Row) -> str:
    if row.met is None:
        return "-"
    return "met" if row.met else "MISSED"


def print_figure(result: FigureResult, console: Any | None = None) -> None:
    """Print one figure as a table with its notes (rich is a dependency of the local extra)."""
    from rich.console import Console
    from rich.table import Table

    out = console or Console(width=None if sys.stdout.isatty() else 160)
    table = Table(
        title=f"Figure {result.key}: {result.title} [{result.mode}]", title_justify="left"
    )
    for column in ("figure", "measured", "baseline", "ratio", "target", "met"):
        table.add_column(column, overflow="fold")
    for row in result.rows:
        ratio = row.ratio
        table.add_row(
            row.name,
            format_number(row.measured, row.unit),
            f"{format_number(row.baseline, row.unit)}  ({row.baseline_name})"
            if row.baseline_name
            else format_number(row.baseline, row.unit),
            "-" if ratio is None else f"{ratio:.2f}x",
            row.target or "-",
            verdict(row),
        )
    out.print(table)
    if result.status != "ok":
        out.print(f"[bold]status: {result.status}[/bold]")
    for note in result.notes:
        out.print(f"  - {note}", highlight=False)
    out.print(f"  ({result.seconds:.1f} s)")


def parse_mode(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", dest="mode", action="store_const", const="quick")
    group.add_argument("--full", dest="mode", action="store_const", const="full")
    group.add_argument("--tiny", dest="mode", action="store_const", const="tiny")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.set_defaults(mode="quick")
    return parser.parse_args(argv)


def run_main(
    run: Callable[[Mode], FigureResult], description: str, argv: Sequence[str] | None = None
) -> int:
    """Run one benchmark from the command line: print its table, write JSON if asked."""
    arguments = parse_mode(description, argv)
    started = time.perf_counter()
    result = run(arguments.mode)
    result.seconds = time.perf_counter() - started
    print_figure(result)
    if arguments.json:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.status != "error" else 1


# Statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# Environment and DynamoDB Local -----------------------------------------------------


def use_fake_aws_environment() -> None:
    """Point boto3 at fake credentials so that nothing here can reach a real account."""
    os.environ.update(FAKE_AWS_ENVIRONMENT)
    os.environ.pop("AWS_PROFILE", None)


@dataclass
class LocalTables:
    endpoint_url: str
    client: DynamoDBClient
    names: dict[str, str]
    """Template logical id -> table name."""

    @property
    def events(self) -> str:
        return self.names["EventsTable"]

    def create_more(self, prefix: str | None = None) -> dict[str, str]:
        """Create another set of the template's tables under a new prefix."""
        template = Template.load(name_prefix=prefix or f"b{uuid.uuid4().hex[:8]}-")
        return create_tables(self.client, template)


@contextlib.contextmanager
def dynamodb_with_tables() -> Iterator[LocalTables]:
    """Start a DynamoDB Local of this benchmark's own, create the template's tables, stop it."""
    use_fake_aws_environment()
    server = dynamodb_local.start()
    previous = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB")
    os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint_url
    try:
        client: DynamoDBClient = boto3.client("dynamodb", endpoint_url=server.endpoint_url)
        template = Template.load(name_prefix=f"b{uuid.uuid4().hex[:8]}-")
        yield LocalTables(server.endpoint_url, client, create_tables(client, template))
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
        else:
            os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = previous
        server.stop()


def read_side_environment(table_names: Mapping[str, str]) -> dict[str, str]:
    """Return this process's environment plus the variables that point the
    application at the template's tables, given their local names by logical id."""
    return {
        **os.environ,
        **store_environment(
            table_names["EventsTable"],
            ORDER_SUMMARIES_TABLE=table_names["OrderSummariesTable"],
            CUSTOMER_STATS_TABLE=table_names["CustomerStatsTable"],
            INVENTORY_LEVELS_TABLE=table_names["InventoryLevelsTable"],
            PROJECTION_CONTROL_TABLE=table_names["ProjectionControlTable"],
        ),
    }


def store_environment(events_table: str, **more: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
        "EVENTS_TABLE": events_table,
        **more,
    }


# Counting calls -----------------------------------------------------------------------


class CallCounter:
    """Counts the DynamoDB operations a boto3 client calls, through botocore's ``before-call``.

    ``before-call`` fires once per API call, so botocore's own HTTP retries of one call
    are not counted.
    """

    def __init__(self, client: BaseClient) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.enabled = True
        self._unique_id = f"bench-calls-{uuid.uuid4()}"
        client.meta.events.register("before-call.dynamodb", self._record, unique_id=self._unique_id)

    def _record(self, model: Any, **_: Any) -> None:
        if self.enabled:
            self.calls[model.name] += 1

    @property
    def reads(self) -> int:
        return sum(count for name, count in self.calls.items() if name in READ_OPERATIONS)

    @property
    def writes(self) -> int:
        return sum(count for name, count in self.calls.items() if name in WRITE_OPERATIONS)

    def reset(self) -> None:
        self.calls.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def close(self) -> None:
        self.client.meta.events.unregister("before-call.dynamodb", unique_id=self._unique_id)


# Capacity -------------------------------------------------------------------------------

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
_CAPACITY_OPERATIONS = frozenset(
    {"GetItem", "Query", "Scan", "PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems"}
)


@dataclass
class CapacityTotals:
    reported: float = 0.0
    """Sum of ``ConsumedCapacity.CapacityUnits`` that DynamoDB Local returned."""
    write_units: int = 0
    """Write request units by AWS's rules, computed from item sizes."""
    read_units: int = 0
    """Read request units by AWS's rules, computed from item sizes."""
    written_items: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    write_units_by_kind: Counter[str] = field(default_factory=Counter)
    """Computed write units per item ``kind`` (event, tip, command), multiplier included."""
    bytes_by_kind: Counter[str] = field(default_factory=Counter)
    items_by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def reads(self) -> int:
        return sum(count for name, count in self.calls.items() if name in READ_OPERATIONS)

    @property
    def writes(self) -> int:
        return sum(count for name, count in self.calls.items() if name in WRITE_OPERATIONS)


def _item_key(item: Mapping[str, Any]) -> tuple[str, str]:
    return (str(item["stream_id"].get("S")), str(item["position"].get("N")))


class CapacityMeter:
    """Captures ``ConsumedCapacity`` and computes request units from item sizes.

    Every call gets ``ReturnConsumedCapacity=TOTAL``. The computed units follow the
    DynamoDB Developer Guide ("Read consistency", "Capacity unit consumption"):

    - a write costs one unit per 1 KB of the item, rounded up per item; a ``Put``
      counts the larger of the old and the new item; a write in a transaction costs
      twice that;
    - a strongly consistent read costs one unit per 4 KB, rounded up per ``GetItem``
      and per ``Query`` page over the sum of the sizes of every item read (not only the
      projected attributes); a read that finds nothing still costs one unit.

    Sizes of items read through a projection come from the sizes this meter saw them
    written with; every item of a benchmark is written through a metered client.
    """

    def __init__(self) -> None:
        self.totals = CapacityTotals()
        self.enabled = True
        self.sizes: dict[tuple[str, str], int] = {}
        self._requests: dict[int, tuple[str, dict[str, Any]]] = {}
        self._clients: list[tuple[BaseClient, str]] = []

    def attach(self, client: BaseClient) -> None:
        # botocore keeps unique ids per emitter, not per event: one id per handler.
        unique_id = f"bench-capacity-{uuid.uuid4()}"
        events = client.meta.events
        events.register(
            "provide-client-params.dynamodb", self._ask_for_capacity, unique_id=f"{unique_id}-ask"
        )
        events.register("after-call.dynamodb", self._account, unique_id=f"{unique_id}-account")
        self._clients.append((client, unique_id))

    def close(self) -> None:
        for client, unique_id in self._clients:
            events = client.meta.events
            events.unregister("provide-client-params.dynamodb", unique_id=f"{unique_id}-ask")
            events.unregister("after-call.dynamodb", unique_id=f"{unique_id}-account")
        self._clients.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    def _ask_for_capacity(
        self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        if model.name in _CAPACITY_OPERATIONS:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")
        context["bench_request"] = (model.name, params)

    def _account(self, parsed: dict[str, Any], model: Any, context: Any, **_: Any) -> None:
        name, body = context.get("bench_request", (model.name, {}))
        if "Error" in parsed:
            # NOTE: a cancelled transaction or a failed condition consumes capacity on
            # AWS; the lifecycles measured here have none, so this is not counted.
            return
        if not self.enabled:
            self._track_sizes(name, body)
            return
        self.totals.calls[name] += 1
        consumed = parsed.get("ConsumedCapacity")
        for entry in consumed if isinstance(consumed, list) else [consumed] if consumed else []:
            self.totals.reported += float(entry.get("CapacityUnits", 0.0))
        self.totals.write_units += self._write_units(name, body)
        self.totals.read_units += self._read_units(name, body, parsed)

    def _track_sizes(self, name: str, body: Mapping[str, Any]) -> None:
        for item in self._written_items(name, body):
            self.sizes[_item_key(item)] = item_size(item)

    @staticmethod
    def _written_items(name: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        if name == "PutItem":
            return [body["Item"]]
        if name == "TransactWriteItems":
            return [action["Put"]["Item"] for action in body["TransactItems"] if "Put" in action]
        if name == "BatchWriteItem":
            return [
                request["PutRequest"]["Item"]
                for requests in body["RequestItems"].values()
                for request in requests
                if "PutRequest" in request
            ]
        return []

    def _write_units(self, name: str, body: Mapping[str, Any]) -> int:
        if name not in ("PutItem", "TransactWriteItems", "BatchWriteItem"):
            if name in ("UpdateItem", "DeleteItem"):
                raise NotImplementedError(f"computing units of {name} is not implemented")
            return 0
        multiplier = 2 if name == "TransactWriteItems" else 1
        units = 0
        for item in self._written_items(name, body):
            key = _item_key(item)
            size = item_size(item)
            charged = max(size, self.sizes.get(key, 0))
            self.sizes[key] = size
            item_units = multiplier * max(1, math.ceil(charged / WRITE_UNIT_BYTES))
            units += item_units
            kind = str(item.get("kind", {}).get("S", "other"))
            self.totals.written_items += 1
            self.totals.write_units_by_kind[kind] += item_units
            self.totals.bytes_by_kind[kind] += size
            self.totals.items_by_kind[kind] += 1
        return units

    def _read_units(self, name: str, body: Mapping[str, Any], parsed: Mapping[str, Any]) -> int:
        if name == "GetItem":
            item = parsed.get("Item")
            size = self._full_size(item) if item else 0
            return self._consistency_factor(body) * max(1, math.ceil(size / READ_UNIT_BYTES))
        if name == "Query":
            size = sum(self._full_size(item) for item in parsed.get("Items", []))
            return self._consistency_factor(body) * max(1, math.ceil(size / READ_UNIT_BYTES))
        if name in ("Scan", "BatchGetItem", "TransactGetItems"):
            raise NotImplementedError(f"computing units of {name} is not implemented")
        return 0

    @staticmethod
    def _consistency_factor(body: Mapping[str, Any]) -> int:
        # An eventually consistent read costs half a unit; every read here is
        # strongly consistent, so a half-unit read is reported rather than guessed.
        if not body.get("ConsistentRead"):
            raise NotImplementedError("eventually consistent reads are not metered")
        return 1

    def _full_size(self, item: Mapping[str, Any]) -> int:
        if "stream_id" in item and "position" in item:
            known = self.sizes.get(_item_key(item))
            if known is not None:
                return known
        return item_size(dict(item))


# Profiling ---------------------------------------------------------------------------


def profile_calls(action: Callable[[], Any], repeat: int) -> pstats.Stats:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeat):
        action()
    profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


_PACKAGE_GROUPS = (
    ("botocore", "botocore (request signing, serialisation, parsing)"),
    ("urllib3", "urllib3/http.client (HTTP round trip)"),
    ("http/client", "urllib3/http.client (HTTP round trip)"),
    ("socket", "urllib3/http.client (HTTP round trip)"),
    ("ssl", "urllib3/http.client (HTTP round trip)"),
    ("boto3", "boto3"),
    ("aws_lambda_powertools", "Powertools (resolver, validation, logging)"),
    ("pydantic", "pydantic"),
    ("eventsourcing", "eventsourcing (mapper, transcoder, aggregate)"),
    ("logging", "logging"),
    ("json", "json"),
    ("copy", "copy.deepcopy (cache copy-out)"),
    ("/adapters/", "project: adapters"),
    ("/application/", "project: application"),
    ("/domain/", "project: domain"),
    ("/lambdas/", "project: lambdas"),
)


def _group_of(filename: str) -> str:
    for marker, group in _PACKAGE_GROUPS:
        if marker in filename:
            return group
    if filename.startswith("~") or filename == "":
        return "builtins"
    return "other"


def self_time_by_group(stats: pstats.Stats) -> dict[str, float]:
    """Return seconds of self time per library group, largest first."""
    totals: Counter[str] = Counter()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, self_time, _cum, callers) in raw.items():
        group = _group_of(filename)
        if group == "builtins":
            # A builtin's time belongs to whichever library called it the most.
            caller_files = sorted(
                callers.items(), key=lambda item: item[1][2] if len(item[1]) > 2 else 0
            )
            if caller_files:
                group = _group_of(caller_files[-1][0][0])
                if group == "builtins":
                    group = f"builtins ({function})"
        totals[group] += self_time
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def top_functions(stats: pstats.Stats, count: int = 12) -> list[dict[str, Any]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    ranked = sorted(raw.items(), key=lambda item: -item[1][2])[:count]
    return [
        {
            "function": f"{Path(filename).name}:{line}({function})",
            "self_seconds": round(self_time, 4),
            "cumulative_seconds": round(cumulative, 4),
            "calls": calls,
        }
        for (filename, line, function), (_cc, calls, self_time, cumulative, _) in ranked
    ]


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
