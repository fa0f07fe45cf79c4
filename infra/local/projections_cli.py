"""``orders projections``: rebuild read models from the event log, verify them, show pointers.

Where the tables are:

- If ``EVENTS_TABLE`` is set, every table comes from the environment, as in a
  function (``ORDER_SUMMARIES_TABLE``, ``CUSTOMER_STATS_TABLE``,
  ``INVENTORY_LEVELS_TABLE``, ``PROJECTION_CONTROL_TABLE``), and boto3's usual
  settings pick the account and endpoint: this is how to run it against AWS.
- Otherwise the local stack's: the template's names under ``--table-prefix`` on
  ``--endpoint-url``, or, without those, the running ``orders dev`` found through
  its state file in ``--data-dir``.

``rebuild`` runs one thread per segment in this process and shows a progress bar.
Ctrl-C stops every segment at its next flush and checkpoint; a killed process
loses at most the pages since its last checkpoint. Running the same command again
resumes. With ``--distributed`` it only prepares the run and sends one message per
segment to the rebuild queue, where the rebuild function does the work.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from infra.local import dev_state

DEFAULT_SEGMENTS = 4
CLAIM_RETRY_SECONDS = 2.0
CLAIM_WAIT_MARGIN_SECONDS = 10.0
MAX_SHOWN_DIFFERENCES = 20
TABLE_VARIABLES = {
    "EVENTS_TABLE": "EventsTable",
    "ORDER_SUMMARIES_TABLE": "OrderSummariesTable",
    "CUSTOMER_STATS_TABLE": "CustomerStatsTable",
    "INVENTORY_LEVELS_TABLE": "InventoryLevelsTable",
    "PROJECTION_CONTROL_TABLE": "ProjectionControlTable",
}


class CommandError(RuntimeError):
    """The command cannot run with these arguments; the message tells what to do."""


def add_parser(commands: Any) -> None:
    projections = commands.add_parser(
        "projections", help="rebuild read models from the event log, or verify them"
    )
    subcommands = projections.add_subparsers(dest="projections_command", required=True)

    rebuild = subcommands.add_parser(
        "rebuild",
        help="replay the event log into new tables and switch the read models to them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _names(rebuild)
    _segments(rebuild)
    rebuild.add_argument(
        "--restart",
        action="store_true",
        help="drop an unfinished rebuild of these read models and start afresh",
    )
    rebuild.add_argument(
        "--flush-events",
        type=_positive,
        default=None,
        help="events buffered per segment between writes and checkpoints (default 20000)",
    )
    rebuild.add_argument(
        "--distributed",
        action="store_true",
        help="send one message per segment to the rebuild queue instead of working here",
    )
    rebuild.add_argument(
        "--queue-url", default=None, help="the rebuild queue (default: $REBUILD_QUEUE_URL)"
    )
    rebuild.add_argument("--no-progress", action="store_true", help="print no progress bar")
    _target(rebuild)
    rebuild.set_defaults(run=_rebuild)

    verify = subcommands.add_parser(
        "verify", help="compare the live read models with a replay of the event log"
    )
    _names(verify)
    _segments(verify)
    verify.add_argument(
        "--max-shown",
        type=_positive,
        default=MAX_SHOWN_DIFFERENCES,
        help=f"differences printed per read model (default {MAX_SHOWN_DIFFERENCES})",
    )
    _target(verify)
    verify.set_defaults(run=_verify)

    status = subcommands.add_parser(
        "status", help="show each read model's live table and any unfinished rebuild"
    )
    _target(status)
    status.set_defaults(run=_status)


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive number")
    return value


def _names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="read models (default: all): order_summary, customer_stats, inventory_levels, "
        "or an index view, which stands for its table",
    )


def _segments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--segments",
        type=_positive,
        default=DEFAULT_SEGMENTS,
        help=f"parallel Scan segments, one thread each (default {DEFAULT_SEGMENTS})",
    )


def _target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint-url", default=None, help="DynamoDB endpoint of a local stack")
    parser.add_argument(
        "--table-prefix", default="", help="prefix of the local stack's table names"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data folder of the running `orders dev` (default: .orders-data/)",
    )


# Where the tables are -------------------------------------------------------------------


def resolve_environment(arguments: argparse.Namespace) -> dict[str, str]:
    """Return the variables the services are built from; point boto3 at a local stack."""
    if os.environ.get("EVENTS_TABLE"):
        missing = [name for name in TABLE_VARIABLES if not os.environ.get(name)]
        if missing:
            raise CommandError(f"EVENTS_TABLE is set but {', '.join(missing)} are not")
        return {"PERSISTENCE_MODULE": "adapters.eventstore.dynamodb", **os.environ}

    from infra.local.moto_server import FAKE_CREDENTIALS
    from infra.local.template import LOCAL_REGION, Template

    endpoint = arguments.endpoint_url
    names = Template.load(name_prefix=arguments.table_prefix).table_names()
    if endpoint is None:
        data_dir = Path(arguments.data_dir or dev_state.DEFAULT_DATA_DIR)
        try:
            state = dev_state.read_running(data_dir / dev_state.STATE_FILE_NAME)
        except dev_state.DevStateError as error:
            raise CommandError(f"{error}; or pass --endpoint-url") from None
        if not state.dynamodb_endpoint_url:
            raise CommandError(
                "the running dev stack does not say where its DynamoDB is; restart it or pass "
                "--endpoint-url"
            )
        endpoint = state.dynamodb_endpoint_url
        names = {**names, **state.table_names}
    local = {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": FAKE_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": FAKE_CREDENTIALS["aws_secret_access_key"],
    }
    # boto3 reads the endpoint and credentials from the process environment.
    os.environ.update(local)
    os.environ.pop("AWS_PROFILE", None)
    tables = {variable: names[logical_id] for variable, logical_id in TABLE_VARIABLES.items()}
    return {
        **os.environ,
        "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
        "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        **tables,
    }


def _services(arguments: argparse.Namespace) -> Any:
    environment = resolve_environment(arguments)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from adapters.composition import build_rebuild_services

    return build_rebuild_services(environment)


# rebuild -------------------------------------------------------------------------------


def _rebuild(arguments: argparse.Namespace) -> int:
    from application.ports import RebuildConflictError
    from projections.catalog import UnknownReadModelError, projections_named

    try:
        projections = projections_named(arguments.names)
        services = _services(arguments)
        coordinator = services.coordinator()
        run, resumed = coordinator.start(projections, arguments.segments, restart=arguments.restart)
    except (CommandError, UnknownReadModelError, RebuildConflictError, ValueError) as error:
        print(f"orders projections rebuild: {error}", file=sys.stderr)
        return 2
    tables = ", ".join(f"{name} -> {table}" for name, table in sorted(run.tables.items()))
    print(
        f"rebuild {run.rebuild_id} ({'resumed' if resumed else 'started'}): {tables}; "
        f"{run.total_segments} segments",
        flush=True,
    )
    if arguments.distributed:
        return _send_segments(arguments, services, run)
    return rebuild_here(services, coordinator, run, arguments)


def _send_segments(arguments: argparse.Namespace, services: Any, run: Any) -> int:
    import boto3

    from projections.rebuild import segment_message_body

    queue_url = arguments.queue_url or os.environ.get("REBUILD_QUEUE_URL")
    if not queue_url:
        print(
            "orders projections rebuild: pass --queue-url or set REBUILD_QUEUE_URL",
            file=sys.stderr,
        )
        return 2
    sqs = boto3.client("sqs")
    done = {
        checkpoint.segment for checkpoint in services.coordinator().progress(run) if checkpoint.done
    }
    for segment in range(run.total_segments):
        if segment not in done:
            sqs.send_message(
                QueueUrl=queue_url, MessageBody=segment_message_body(run.rebuild_id, segment)
            )
    print(f"sent {run.total_segments - len(done)} segment messages to {queue_url}")
    return 0


def rebuild_here(services: Any, coordinator: Any, run: Any, arguments: argparse.Namespace) -> int:
    """Run every unfinished segment of ``run`` on threads; switch when all are done."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from application.ports import SegmentClaimedError
    from projections.rebuild import (
        DEFAULT_FLUSH_EVENTS,
        SEGMENT_CLAIM_SECONDS,
        FinishState,
        PageProgress,
    )

    delay = run.scan_not_before - time.time()
    if delay > 0:
        print(f"waiting {delay:.1f} s until every projector knows the new tables", flush=True)
    coordinator.wait_until_scan_may_start(run)

    rebuilder = services.segment_rebuilder(
        run, flush_events=arguments.flush_events or DEFAULT_FLUSH_EVENTS
    )
    before = coordinator.progress(run)
    pending = [checkpoint.segment for checkpoint in before if not checkpoint.done]
    # NOTE: DescribeTable's ItemCount lags (AWS refreshes it about every six hours) and
    # counts tips and command records too, so the bar's total and ETA are estimates.
    total_items = max(services.scanner.approximate_item_count(), 1)
    already = sum(checkpoint.scanned for checkpoint in before)
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"scanned": already, "events": sum(c.events for c in before), "new_events": 0}
    errors: list[BaseException] = []
    waiting: set[int] = set()
    started = time.monotonic()

    progress = Progress(
        TextColumn("[bold]rebuild[/bold]"),
        BarColumn(),
        TextColumn("{task.fields[events]:>10,} events"),
        TextColumn("{task.fields[rate]:>8,.0f} events/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=arguments.no_progress,
        transient=False,
    )
    task = progress.add_task(
        "rebuild",
        total=max(total_items, already),
        completed=already,
        events=counts["events"],
        rate=0.0,
    )

    def on_page(page: PageProgress) -> None:
        with lock:
            counts["scanned"] += page.scanned
            counts["events"] += page.events
            counts["new_events"] += page.events
            rate = counts["new_events"] / max(time.monotonic() - started, 1e-6)
            progress.update(
                task,
                completed=min(counts["scanned"], total_items),
                events=counts["events"],
                rate=rate,
            )

    def work(segment: int) -> None:
        # A killed earlier run keeps its claims until they run out: wait for them.
        deadline = time.monotonic() + SEGMENT_CLAIM_SECONDS + CLAIM_WAIT_MARGIN_SECONDS
        while not stop.is_set():
            try:
                rebuilder.run(segment, should_stop=stop.is_set, on_page=on_page)
                return
            except SegmentClaimedError as error:
                if time.monotonic() > deadline:
                    errors.append(error)
                    stop.set()
                    return
                if segment not in waiting:
                    waiting.add(segment)
                    progress.console.print(
                        f"segment {segment} is claimed by another worker; waiting up to "
                        f"{SEGMENT_CLAIM_SECONDS:.0f} s for a stopped process's claim to run out"
                    )
                time.sleep(CLAIM_RETRY_SECONDS)
            except BaseException as error:  # reported after every thread has stopped
                errors.append(error)
                stop.set()
                return

    threads = [threading.Thread(target=work, args=(segment,), daemon=True) for segment in pending]
    interrupted = False
    with progress:
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
            print("stopping: every segment writes what it has read and checkpoints", flush=True)
            for thread in threads:
                thread.join()
    elapsed = time.monotonic() - started
    rate = counts["new_events"] / elapsed if elapsed > 0 else 0.0
    summary = f"{counts['new_events']:,} events in {elapsed:.1f} s ({rate:,.0f} events/s)"
    if errors:
        print(f"orders projections rebuild: failed after {summary}: {errors[0]!r}", file=sys.stderr)
        print("run the same command again to resume from the checkpoints", file=sys.stderr)
        return 1
    if interrupted:
        print(f"interrupted after {summary}; run the same command again to resume", flush=True)
        return 130
    after = coordinator.progress(run)
    rows = sum(checkpoint.rows for checkpoint in after)
    print(f"replayed {summary}; {rows:,} rows written", flush=True)
    try:
        state = finish_with_messages(coordinator, run)
    except KeyboardInterrupt:
        print("interrupted while finishing; run the same command again to resume", flush=True)
        return 130
    total = time.monotonic() - started
    if state == FinishState.SWITCHED:
        print(f"read models switched to the new tables after {total:.1f} s", flush=True)
        return 0
    print(f"orders projections rebuild: not switched: the rebuild is {state}", file=sys.stderr)
    return 1


def finish_with_messages(coordinator: Any, run: Any) -> Any:
    """Take the run to the switch, printing each state the first time it is reached."""
    from projections.rebuild import FINISH_POLL_SECONDS, FinishState

    seen = set()
    while True:
        state = coordinator.finish(run)
        if state not in seen:
            seen.add(state)
            print(f"  {state}", flush=True)
        if state not in (FinishState.WAITING, FinishState.INDEXING):
            return state
        time.sleep(FINISH_POLL_SECONDS)


# verify --------------------------------------------------------------------------------


def _verify(arguments: argparse.Namespace) -> int:
    from projections.catalog import UnknownReadModelError, projections_named
    from projections.verify import verify

    try:
        projections = projections_named(arguments.names)
        services = _services(arguments)
    except (CommandError, UnknownReadModelError) as error:
        print(f"orders projections verify: {error}", file=sys.stderr)
        return 2
    read_side = services.read_side

    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return services.orders.recorder.select_events(stream_id, gt=after, lte=up_to)

    started = time.monotonic()
    reports = verify(
        projections,
        services.scanner,
        services.orders.mapper.to_domain_event,
        read_events,
        lambda projection: read_side.open_table(
            projection, read_side.directory.live_table(projection.name)
        ),
        arguments.segments,
    )
    failed = False
    for report in reports:
        count = len(report.differences)
        print(
            f"{report.projection} ({report.table}): {report.actual_rows:,} rows, replay "
            f"{report.expected_rows:,} rows, "
            + ("no differences" if not count else f"{count:,} differences")
        )
        for difference in report.differences[: arguments.max_shown]:
            print(f"  {difference.describe()}")
        if count > arguments.max_shown:
            print(f"  ... {count - arguments.max_shown:,} more")
        failed = failed or bool(count)
    print(f"verified in {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


# status --------------------------------------------------------------------------------


def _status(arguments: argparse.Namespace) -> int:
    from projections.catalog import PROJECTIONS

    try:
        services = _services(arguments)
    except CommandError as error:
        print(f"orders projections status: {error}", file=sys.stderr)
        return 2
    control = services.read_side.control
    for name in PROJECTIONS:
        pointer = control.pointer(name)
        line = f"{name}: live {pointer.live_table} (generation {pointer.live_generation})"
        if pointer.rebuild_id and pointer.building_table:
            run = control.load_run(pointer.rebuild_id)
            checkpoints = control.checkpoints(pointer.rebuild_id)
            done = sum(1 for checkpoint in checkpoints if checkpoint.done)
            segments = run.total_segments if run else "?"
            events = sum(checkpoint.events for checkpoint in checkpoints)
            line += (
                f"; building {pointer.building_table} (rebuild {pointer.rebuild_id}, "
                f"{done}/{segments} segments done, {events:,} events)"
            )
        print(line)
    return 0
