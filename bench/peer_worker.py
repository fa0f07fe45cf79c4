"""One store's run of the peer workload, as a script; prints its result as one JSON line.

It runs in the project's environment (stores ``sqlite`` and ``ours``) and in the
separate virtual environment of ``eventsourcing-dynamodb`` (store ``es-dynamodb``),
which pins an older eventsourcing; so it imports nothing from the project at module
level and uses only what both eventsourcing versions offer.

Workload: ``aggregates`` aggregates, each saved in commits of ``per_commit`` events
until it has ``events`` events; then every aggregate is loaded ``loads`` times
through the application's repository. Finally two applications save the same
version of one aggregate, to show whether the store detects the conflict.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event


class Tally(Aggregate):
    @event("Started")
    def __init__(self, name: str) -> None:
        self.name = name
        self.total = 0

    @event("Added")
    def add(self, amount: int) -> None:
        self.total += amount


def make_application(store: str, arguments: argparse.Namespace) -> Application[Any]:
    if store == "sqlite":
        environment = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": arguments.sqlite_path,
        }
        return Application(env=environment)
    if store == "es-dynamodb":
        environment = {
            "PERSISTENCE_MODULE": "eventsourcing_dynamodb",
            "DYNAMO_TABLE": arguments.table,
            "DYNAMO_ENDPOINT_URL": arguments.endpoint_url,
        }
        return Application(env=environment)
    if store == "ours":
        from application.eventsourced import TipApplication

        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = arguments.endpoint_url
        environment = {
            "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
            "EVENTS_TABLE": arguments.table,
        }
        return TipApplication(env=environment)
    raise SystemExit(f"unknown store {store!r}")


def create_peer_table(endpoint_url: str, table: str) -> None:
    """Create the table layout eventsourcing-dynamodb 0.1.0 expects (it creates none)."""
    import boto3

    client = boto3.client("dynamodb", endpoint_url=endpoint_url)
    client.create_table(
        TableName=table,
        AttributeDefinitions=[
            {"AttributeName": "originator_id", "AttributeType": "S"},
            {"AttributeName": "originator_version", "AttributeType": "N"},
        ],
        KeySchema=[
            {"AttributeName": "originator_id", "KeyType": "HASH"},
            {"AttributeName": "originator_version", "KeyType": "RANGE"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def run_workload(app: Application[Any], arguments: argparse.Namespace) -> dict[str, Any]:
    ids = []
    started = time.perf_counter()
    commits = 0
    for index in range(arguments.aggregates):
        tally = Tally(name=f"tally-{index}")
        for amount in range(1, arguments.events):
            tally.add(amount)
            if len(tally.pending_events) == arguments.per_commit:
                app.save(tally)
                commits += 1
        if tally.pending_events:
            app.save(tally)
            commits += 1
        ids.append(tally.id)
    append_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(arguments.loads):
        for aggregate_id in ids:
            loaded: Tally = app.repository.get(aggregate_id)
            if loaded.version != arguments.events:
                raise AssertionError(f"loaded version {loaded.version}, not {arguments.events}")
    load_seconds = time.perf_counter() - started
    events = arguments.aggregates * arguments.events
    loads = arguments.aggregates * arguments.loads
    return {
        "events": events,
        "commits": commits,
        "append_seconds": append_seconds,
        "append_events_per_second": events / append_seconds,
        "loads": loads,
        "load_seconds": load_seconds,
        "loads_per_second": loads / load_seconds,
        "loaded_events_per_second": loads * arguments.events / load_seconds,
    }


def conflicting_saves(store: str, arguments: argparse.Namespace) -> dict[str, Any]:
    """Let two applications append at the same version; report what the store did."""
    first = make_application(store, arguments)
    second = make_application(store, arguments)
    tally = Tally(name="contended")
    first.save(tally)
    mine: Tally = first.repository.get(tally.id)
    theirs: Tally = second.repository.get(tally.id)
    mine.add(1)
    theirs.add(1000)
    first.save(mine)
    try:
        second.save(theirs)
    except Exception as error:  # the store's own conflict type; any error means detected
        outcome = {"detected": True, "error": type(error).__name__}
    else:
        outcome = {"detected": False, "error": None}
    # Keep a reference: an Application closes its connections when it is collected.
    reader = make_application(store, arguments)
    outcome["final_total"] = reader.repository.get(tally.id).total
    outcome["lost_update"] = not outcome["detected"] and outcome["final_total"] != 1001
    return outcome


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True, choices=("sqlite", "ours", "es-dynamodb"))
    parser.add_argument("--aggregates", type=int, default=10)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--per-commit", type=int, default=10)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--sqlite-path", default="")
    parser.add_argument("--endpoint-url", default="")
    parser.add_argument("--table", default="")
    parser.add_argument("--create-table", action="store_true")
    arguments = parser.parse_args(argv)
    if arguments.create_table:
        arguments.table = arguments.table or f"peer-{uuid.uuid4().hex[:8]}"
        create_peer_table(arguments.endpoint_url, arguments.table)
    app = make_application(arguments.store, arguments)
    result = run_workload(app, arguments)
    result["conflict"] = conflicting_saves(arguments.store, arguments)
    from importlib.metadata import version

    result["eventsourcing_version"] = version("eventsourcing")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
