"""The ``orders`` command: run the local stack and its maintenance tasks."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infra.local import dev_state, dynamodb_local, projections_cli

SAGA_QUEUE = "SagaQueue"
_AWS_QUEUE_URL = re.compile(
    r"^https://sqs[.-]([a-z0-9-]+)\.amazonaws\.com(\.cn)?/\d{12}/[\w.-]{1,80}$"
)


class CommandError(RuntimeError):
    """Error raised when a command cannot run as requested; its message names the fix."""


def _fetch_dynamodb_local(_: argparse.Namespace) -> int:
    home = dynamodb_local.ensure_installed()
    print(f"DynamoDB Local is in {home}")
    return 0


def _dev(arguments: argparse.Namespace) -> int:
    from infra.local.stack import run_dev

    return run_dev(arguments)


def retry_message(order_id: str) -> str:
    return json.dumps({"action": "retry", "order_id": order_id})


def _saga_retry(arguments: argparse.Namespace) -> int:
    try:
        queue_url, client = _saga_queue(arguments)
        order_id = _order_id(arguments.order_id)
        response = client.send_message(QueueUrl=queue_url, MessageBody=retry_message(order_id))
    except (CommandError, dev_state.DevStateError) as error:
        print(f"orders saga retry: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # botocore's errors have no common base worth naming
        print(
            f"orders saga retry: sending to {arguments.queue_url or 'the dev stack'} failed: "
            f"{error}",
            file=sys.stderr,
        )
        return 1
    print(
        f"sent a retry request for order {order_id} to {queue_url} "
        f"(message {response['MessageId']})"
    )
    return 0


def _order_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise CommandError(
            f"{raw!r} is not an order id; order ids are UUIDs such as "
            "'0b6f3a52-8d4e-4f0e-9d55-5a3f2c9e6b41' (see GET /orders/{id})"
        ) from None


def _saga_queue(arguments: argparse.Namespace) -> tuple[str, Any]:
    """The saga queue's URL and an SQS client for it: in AWS, or the running dev stack's."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3})
    if arguments.queue_url:
        match = _AWS_QUEUE_URL.match(arguments.queue_url)
        if match is None:
            raise CommandError(
                f"--queue-url {arguments.queue_url!r} is not an SQS queue URL such as "
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders-SagaQueue-abc"
            )
        # The default credential chain and the standard endpoint settings apply.
        client = boto3.client("sqs", region_name=match.group(1), config=config)
        return arguments.queue_url, client
    data_dir = Path(arguments.data_dir or dev_state.DEFAULT_DATA_DIR)
    state_path = data_dir / dev_state.STATE_FILE_NAME
    state = dev_state.read_running(state_path)
    queue_url = state.queue_urls.get(SAGA_QUEUE)
    if queue_url is None:
        raise CommandError(
            f"the dev stack in {state_path} has no {SAGA_QUEUE}; its queues are "
            f"{sorted(state.queue_urls)}"
        )
    from infra.local.moto_server import FAKE_CREDENTIALS

    client = boto3.client(  # type: ignore[call-overload]
        "sqs",
        endpoint_url=state.moto_endpoint_url,
        region_name=state.region,
        config=config,
        **FAKE_CREDENTIALS,
    )
    return queue_url, client


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orders", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser(
        "fetch-dynamodb-local", help="download DynamoDB Local into .cache/ unless it is there"
    )
    fetch.set_defaults(run=_fetch_dynamodb_local)

    dev = commands.add_parser("dev", help="run the whole system on this machine")
    dev.add_argument("--port", type=int, default=None, help="API port (default: $PORT or 3000)")
    dev.add_argument(
        "--in-memory",
        action="store_true",
        help="keep DynamoDB data and stream positions in memory instead of under .orders-data/ "
        "(the stack's state file, dev-stack.json, is still written there)",
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where DynamoDB data, stream positions and dev-stack.json are kept (default: "
        ".orders-data/ in the project)",
    )
    dev.add_argument(
        "--no-iam-check",
        action="store_true",
        help="let functions make DynamoDB, SQS and EventBridge calls that their template "
        "Policies do not grant (by default they fail with AccessDenied, as in AWS)",
    )
    dev.set_defaults(run=_dev)

    saga = commands.add_parser("saga", help="operate the order saga")
    saga_commands = saga.add_subparsers(dest="saga_command", required=True)
    retry = saga_commands.add_parser(
        "retry",
        help="retry an order's stuck saga step (a refund or e-mail that failed for good)",
        description='Send {"action": "retry", "order_id": ...} to the saga queue: of '
        "the running `orders dev` stack, found through dev-stack.json in its data folder, "
        "or of a deployed stack with --queue-url.",
    )
    retry.add_argument("order_id", help="the order's id, as GET /orders/{id} shows it")
    retry.add_argument(
        "--queue-url",
        default=None,
        help="the saga queue of a deployed stack (its SagaQueue); uses your AWS credentials",
    )
    retry.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data folder of the running `orders dev` (default: .orders-data/ in the project)",
    )
    retry.set_defaults(run=_saga_retry)

    projections_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    result: int = arguments.run(arguments)
    return result


if __name__ == "__main__":
    sys.exit(main())
