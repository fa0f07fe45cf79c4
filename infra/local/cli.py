"""The ``orders`` command: run the local stack and its maintenance tasks."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from infra.local import dynamodb_local


def _fetch_dynamodb_local(_: argparse.Namespace) -> int:
    home = dynamodb_local.ensure_installed()
    print(f"DynamoDB Local is in {home}")
    return 0


def _dev(arguments: argparse.Namespace) -> int:
    from infra.local.stack import run_dev

    return run_dev(arguments)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orders", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser(
        "fetch-dynamodb-local", help="download DynamoDB Local into .cache/ unless it is there"
    )
    fetch.set_defaults(run=_fetch_dynamodb_local)

    dev = commands.add_parser("dev", help="run the whole system on this machine")
    dev.add_argument(
        "--port", type=int, default=None, help="API port (default: $PORT or 3000)"
    )
    dev.add_argument(
        "--in-memory",
        action="store_true",
        help="keep DynamoDB data and stream positions in memory instead of under .orders-data/",
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where DynamoDB data and stream positions are kept (default: .orders-data/ "
        "in the project)",
    )
    dev.set_defaults(run=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    result: int = arguments.run(arguments)
    return result


if __name__ == "__main__":
    sys.exit(main())
