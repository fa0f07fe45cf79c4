"""The local SQS event source mapping on moto's queues, with an in-process function."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from infra.local import moto_server
from infra.local.runner import InvocationResult
from infra.local.sqs_poller import SqsMapping, SqsPoller, parse_sqs_mapping
from infra.local.template import TemplateError
from tests.integration.local_stack_support import wait_for

Handler = Callable[[list[dict[str, Any]]], tuple[Any, bool]]


class InProcessFunction:
    """An Invoker that runs ``handler(records) -> (payload, failed)`` and keeps every call."""

    def __init__(self, handler: Handler, delay: float = 0.0) -> None:
        self.handler = handler
        self.delay = delay
        self.batches: list[list[dict[str, Any]]] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def invoke(self, event: Any) -> InvocationResult:
        with self._lock:
            self.batches.append(event["Records"])
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            time.sleep(self.delay)
            payload, failed = self.handler(event["Records"])
        finally:
            with self._lock:
                self.concurrent -= 1
        return InvocationResult(
            payload=payload,
            function_error="Unhandled" if failed else None,
            request_id=str(uuid.uuid4()),
            duration=self.delay,
        )

    def bodies(self) -> list[str]:
        with self._lock:
            return [record["body"] for batch in self.batches for record in batch]


def succeed(records: list[dict[str, Any]]) -> tuple[Any, bool]:
    return {"batchItemFailures": []}, False


def fail_bodies_with(word: str) -> Handler:
    def handler(records: list[dict[str, Any]]) -> tuple[Any, bool]:
        failures = [{"itemIdentifier": r["messageId"]} for r in records if word in r["body"]]
        return {"batchItemFailures": failures}, False

    return handler


def raise_error(records: list[dict[str, Any]]) -> tuple[Any, bool]:
    return {"errorType": "RuntimeError", "errorMessage": "boom"}, True


@pytest.fixture(scope="module")
def moto() -> Iterator[moto_server.MotoServer]:
    with moto_server.start() as server:
        yield server


@pytest.fixture
def sqs(moto: moto_server.MotoServer) -> Any:
    return moto_server.client("sqs", moto.endpoint_url)


@pytest.fixture
def queues(sqs: Any) -> dict[str, str]:
    """A queue whose messages go to a dead-letter queue after two receives."""
    name = f"q{uuid.uuid4().hex[:8]}"
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = arn_of(sqs, dlq_url)
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": redrive})["QueueUrl"]
    return {"url": url, "arn": arn_of(sqs, url), "dlq": dlq_url}


def arn_of(sqs: Any, url: str) -> str:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


def message_count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


@pytest.fixture
def start_poller(sqs: Any, queues: dict[str, str]) -> Iterator[Callable[..., SqsPoller]]:
    started: list[SqsPoller] = []

    def start(function: InProcessFunction, **options: Any) -> SqsPoller:
        mapping = SqsMapping(
            mapping_id="F/Messages",
            function_id="F",
            queue_arn=queues["arn"],
            batch_size=options.pop("batch_size", 10),
            report_item_failures=options.pop("report_item_failures", True),
            filters=options.pop("filters", ()),
        )
        poller = SqsPoller(
            mapping,
            invoker=function,
            sqs_client=sqs,
            queue_url=queues["url"],
            retry_visibility=1,
            **options,
        )
        started.append(poller.start())
        return poller

    yield start
    for poller in started:
        poller.stop()


def send(sqs: Any, queues: dict[str, str], *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=queues["url"], MessageBody=body)


def test_records_have_lambda_s_sqs_shape(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(succeed)
    start_poller(function)
    sqs.send_message(
        QueueUrl=queues["url"],
        MessageBody='{"order_id": "o-1"}',
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "retry"}},
    )

    wait_for(lambda: function.batches)

    record = function.batches[0][0]
    assert set(record) >= {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert (record["eventSource"], record["eventSourceARN"], record["awsRegion"]) == (
        "aws:sqs",
        queues["arn"],
        "us-east-1",
    )
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["kind"]["stringValue"] == "retry"


def test_handled_messages_are_deleted(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(succeed)
    start_poller(function)
    send(sqs, queues, "a", "b", "c")

    wait_for(lambda: len(function.bodies()) == 3)

    assert wait_for(lambda: message_count(sqs, queues["url"]) == 0)


def test_reported_failure_alone_is_delivered_again(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(fail_bodies_with("bad"))
    start_poller(function, pollers=1)
    send(sqs, queues, "good", "bad")

    wait_for(lambda: function.bodies().count("bad") == 2, timeout=10)

    assert function.bodies().count("good") == 1


def test_function_error_leaves_the_batch_on_the_queue(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(raise_error)
    start_poller(function, pollers=1)
    send(sqs, queues, "first")

    wait_for(lambda: len(function.bodies()) == 2, timeout=10)

    assert function.batches[1][0]["attributes"]["ApproximateReceiveCount"] == "2"


def test_poison_message_reaches_dead_letter_queue(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(raise_error)
    start_poller(function, pollers=1)
    send(sqs, queues, "poison")

    wait_for(lambda: message_count(sqs, queues["dlq"]) == 1, timeout=15)

    assert function.bodies() == ["poison", "poison"]


def test_unknown_item_identifier_fails_the_whole_batch(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    def name_a_stranger(records: list[dict[str, Any]]) -> tuple[Any, bool]:
        return {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, False

    function = InProcessFunction(name_a_stranger)
    start_poller(function, pollers=1)
    send(sqs, queues, "only")

    wait_for(lambda: len(function.bodies()) == 2, timeout=10)


def test_response_ignored_without_partial_failures(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(fail_bodies_with("bad"))
    start_poller(function, report_item_failures=False)
    send(sqs, queues, "bad")

    wait_for(lambda: function.bodies())

    assert wait_for(lambda: message_count(sqs, queues["url"]) == 0)


def test_several_batches_run_at_once(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    function = InProcessFunction(succeed, delay=0.5)
    start_poller(function, pollers=3, batch_size=1)
    send(sqs, queues, *[f"m{index}" for index in range(6)])

    wait_for(lambda: len(function.bodies()) == 6, timeout=10)

    assert function.max_concurrent >= 2


def test_filtered_out_messages_are_deleted_unseen(
    sqs: Any, queues: dict[str, str], start_poller: Callable[..., SqsPoller]
) -> None:
    mapping = parse_sqs_mapping(
        "F",
        "E",
        {
            "Queue": queues["arn"],
            "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"kind": ["keep"]}}'}]},
        },
    )
    function = InProcessFunction(succeed)
    start_poller(function, filters=mapping.filters)
    send(sqs, queues, '{"kind": "drop"}', '{"kind": "keep"}')

    wait_for(lambda: function.bodies())

    assert wait_for(lambda: message_count(sqs, queues["url"]) == 0)
    assert function.bodies() == ['{"kind": "keep"}']


def test_batch_size_over_ten_needs_a_batching_window() -> None:
    with pytest.raises(TemplateError, match="MaximumBatchingWindowInSeconds"):
        parse_sqs_mapping("F", "E", {"Queue": "arn:aws:sqs:us-east-1:1:q", "BatchSize": 50})
