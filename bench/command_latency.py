"""Figure 2: command latency through the API handler against bare boto3 on the same calls.

``lambdas.api.handler`` is called in-process with API Gateway proxy events, with
the environment the template gives the API function (cache included, log level
INFO with the log lines written to /dev/null). Three commands per iteration:

- place-order (with an ``Idempotency-Key``): one TransactWriteItems;
- cancel in a warm container, which still holds the order: one TransactWriteItems;
- cancel in a cold container (the order evicted from the cache): GetItem + TransactWriteItems.

The floor repeats the very requests the handler made (captured from its client),
with new stream ids, on a bare boto3 client with the same configuration against
the same DynamoDB Local. Handler and floor alternate which goes first.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import boto3

from adapters.eventstore.dynamodb import default_client_config
from bench.common import (
    FigureResult,
    LocalTables,
    Mode,
    Row,
    dynamodb_with_tables,
    percentile,
    profile_calls,
    run_main,
    self_time_by_group,
    stderr,
    top_functions,
)
from infra.local.template import Template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ITERATIONS = {"tiny": 10, "quick": 300, "full": 2000}
WARMUP = {"tiny": 2, "quick": 30, "full": 100}
PROFILE_ITERATIONS = {"tiny": 5, "quick": 100, "full": 300}
TARGET_RATIO = 1.3
ORDER_BODY = {
    "customer_id": "c-bench",
    "currency": "USD",
    "payment_method": "pm_card_visa",
    "lines": [
        {"sku": "MUG-RED", "quantity": 2, "unit_price": 1250},
        {"sku": "TEA-GREEN", "quantity": 1, "unit_price": 499},
    ],
}


@dataclass
class LambdaContext:
    function_name: str = "orders-api"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:orders-api"
    aws_request_id: str = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def api_event(method: str, path: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    all_headers = {"Content-Type": "application/json", **headers}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": all_headers,
        "multiValueHeaders": {key: [value] for key, value in all_headers.items()},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "body": json.dumps(body),
        "isBase64Encoded": False,
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "stage": "v1",
            "resourcePath": path,
            "httpMethod": method,
            "path": path,
            "identity": {"sourceIp": "127.0.0.1"},
        },
    }


def import_api_handler(local: LocalTables, log_sink: Any) -> ModuleType:
    """Import ``lambdas.api`` with the API function's environment from the template."""
    prefix = local.events.removesuffix("EventsTable")
    api_function = Template.load(name_prefix=prefix).functions()["ApiFunction"]
    os.environ.update(api_function.environment)
    # Powertools' Logger binds sys.stdout when it is built, at import.
    with contextlib.redirect_stdout(log_sink):
        return importlib.import_module("lambdas.api")


class Recorded:
    """The requests a client made, as botocore's ``provide-client-params`` saw them."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._id = f"bench-recorded-{uuid.uuid4()}"
        client.meta.events.register(
            "provide-client-params.dynamodb", self._record, unique_id=self._id
        )

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.requests.append((model.name, copy.deepcopy(params)))

    def close(self) -> None:
        self.client.meta.events.unregister("provide-client-params.dynamodb", unique_id=self._id)


def with_new_ids(request: dict[str, Any], stream_id: str) -> dict[str, Any]:
    """Return a copy of a TransactWriteItems request on ``stream_id`` and a new command id."""
    fresh = copy.deepcopy(request)
    fresh["ClientRequestToken"] = str(uuid.uuid4())
    for action in fresh["TransactItems"]:
        item = action["Put"]["Item"]
        if item["stream_id"]["S"].startswith("command#"):
            item["stream_id"]["S"] = f"command#bench-{uuid.uuid4()}"
        else:
            item["stream_id"]["S"] = stream_id
    return fresh


@dataclass
class Shapes:
    place: dict[str, Any]
    cancel: dict[str, Any]
    get_tip: dict[str, Any]


class Floor:
    """The same requests on a bare boto3 client: the cost of the DynamoDB calls alone."""

    def __init__(self, endpoint_url: str, shapes: Shapes) -> None:
        self.client: DynamoDBClient = boto3.client(
            "dynamodb", endpoint_url=endpoint_url, config=default_client_config()
        )
        self.shapes = shapes
        self.stream_id = ""

    def place(self) -> None:
        self.stream_id = str(uuid.uuid4())
        self.client.transact_write_items(**with_new_ids(self.shapes.place, self.stream_id))

    def cancel_warm(self) -> None:
        self.client.transact_write_items(**with_new_ids(self.shapes.cancel, self.stream_id))

    def cancel_cold(self) -> None:
        key = {"stream_id": {"S": self.stream_id}, "position": {"N": "0"}}
        get_tip = {**self.shapes.get_tip, "Key": key}
        self.client.get_item(**get_tip)
        self.client.transact_write_items(**with_new_ids(self.shapes.cancel, self.stream_id))


class Handler:
    def __init__(self, module: ModuleType, log_sink: Any) -> None:
        self.module = module
        self.log_sink = log_sink
        self.context = LambdaContext()
        self.order_id = ""

    def _call(self, event: dict[str, Any], expected: int) -> dict[str, Any]:
        response: dict[str, Any] = self.module.handler(event, self.context)
        if response["statusCode"] != expected:
            raise AssertionError(f"expected {expected}, got {response}")
        return response

    def place(self) -> None:
        key = f"bench-{uuid.uuid4()}"
        event = api_event("POST", "/orders", ORDER_BODY, {"Idempotency-Key": key})
        self.order_id = json.loads(self._call(event, 202)["body"])["order_id"]

    def cancel_warm(self) -> None:
        path = f"/orders/{self.order_id}/cancel"
        self._call(api_event("POST", path, {"reason": "bench"}, {}), 202)

    def cancel_cold(self) -> None:
        cache = self.module.services.orders.repository.cache
        with contextlib.suppress(KeyError):
            cache.get(UUID(self.order_id), evict=True)
        self.cancel_warm()


def capture_shapes(handler: Handler) -> Shapes:
    client = handler.module.services.orders.recorder.client
    recorded = Recorded(client)
    try:
        handler.place()
        handler.cancel_cold()
    finally:
        recorded.close()
    names = [name for name, _ in recorded.requests]
    if names != ["TransactWriteItems", "GetItem", "TransactWriteItems"]:
        raise AssertionError(f"unexpected calls for place + cold cancel: {names}")
    get_tip = dict(recorded.requests[1][1])
    get_tip.pop("Key")
    return Shapes(place=recorded.requests[0][1], cancel=recorded.requests[2][1], get_tip=get_tip)


def _timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


CASES = ("place-order", "cancel, warm container", "cancel, cold container")


def measure(handler: Handler, floor: Floor, iterations: int, warmup: int) -> dict[str, Any]:
    samples: dict[str, dict[str, list[float]]] = {
        case: {"handler": [], "floor": []} for case in CASES
    }
    for index in range(warmup + iterations):
        order = (handler, floor) if index % 2 == 0 else (floor, handler)
        timings: dict[str, dict[str, float]] = {case: {} for case in CASES}
        for case, method in zip(CASES[:2], ("place", "cancel_warm"), strict=True):
            for target in order:
                name = "handler" if target is handler else "floor"
                timings[case][name] = _timed(getattr(target, method))
        for target in order:
            name = "handler" if target is handler else "floor"
            target.place()
            timings[CASES[2]][name] = _timed(target.cancel_cold)
        if index >= warmup:
            for case in CASES:
                for name in ("handler", "floor"):
                    samples[case][name].append(timings[case][name])
    return samples


@contextlib.contextmanager
def log_sink() -> Iterator[Any]:
    with open(os.devnull, "w") as sink:
        yield sink


def profile_overhead(handler: Handler, floor: Floor, repeat: int) -> dict[str, Any]:
    """Profile place + warm cancel in the handler and in the floor; compare self time per group."""

    def handler_pair() -> None:
        handler.place()
        handler.cancel_warm()

    def floor_pair() -> None:
        floor.place()
        floor.cancel_warm()

    handler_groups = self_time_by_group(profile_calls(handler_pair, repeat))
    handler_stats = profile_calls(handler_pair, repeat)
    floor_groups = self_time_by_group(profile_calls(floor_pair, repeat))
    groups = sorted(set(handler_groups) | set(floor_groups))
    overhead = {
        group: round(
            (handler_groups.get(group, 0.0) - floor_groups.get(group, 0.0)) / repeat * 1000, 3
        )
        for group in groups
    }
    ranked = dict(sorted(overhead.items(), key=lambda item: -item[1]))
    return {
        "milliseconds_per_place_and_cancel_over_floor_by_group": ranked,
        "handler_top_functions": top_functions(handler_stats),
    }


def run(mode: Mode) -> FigureResult:
    result = FigureResult("2", "Command latency: API handler vs bare boto3 floor", mode)
    with dynamodb_with_tables() as local, log_sink() as sink:
        module = import_api_handler(local, sink)
        handler = Handler(module, sink)
        with contextlib.redirect_stdout(sink):
            shapes = capture_shapes(handler)
            floor = Floor(local.endpoint_url, shapes)
            stderr(f"figure 2: {ITERATIONS[mode]} iterations")
            samples = measure(handler, floor, ITERATIONS[mode], WARMUP[mode])
            stderr("figure 2: profiling")
            profile = profile_overhead(handler, floor, PROFILE_ITERATIONS[mode])

    summary: dict[str, Any] = {}
    missed: list[str] = []
    for case in CASES:
        for q in (50, 99):
            ours = percentile(samples[case]["handler"], q)
            base = percentile(samples[case]["floor"], q)
            summary[f"{case} p{q}"] = {"handler_ms": ours, "floor_ms": base}
            met = ours <= TARGET_RATIO * base
            if not met:
                missed.append(f"{case} p{q}")
            result.rows.append(
                Row(
                    f"{case} p{q}",
                    ours,
                    "ms",
                    base,
                    "bare boto3, same calls",
                    target=f"<= {TARGET_RATIO}x floor",
                    met=met,
                )
            )
    groups = profile["milliseconds_per_place_and_cancel_over_floor_by_group"]
    top = [f"{group} {value:.2f} ms" for group, value in list(groups.items())[:4]]
    result.notes = [
        f"{ITERATIONS[mode]} iterations after {WARMUP[mode]} warm-up ones; handler and floor "
        "alternate which goes first. Place-order carries an Idempotency-Key, so its "
        "transaction has 3 actions (command record, tip, event); a cancel has 2 (tip, event).",
        "Where the handler's extra time goes (cProfile self time, handler minus floor, per "
        f"place + warm cancel): {', '.join(top)}.",
    ]
    if missed:
        result.notes.append(f"Missed: {', '.join(missed)}.")
    result.details = {"percentiles": summary, "profile": profile}
    return result


def main(argv: list[str] | None = None) -> int:
    return run_main(run, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
