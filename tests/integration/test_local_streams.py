"""The local event source mapping: a DynamoDB stream of DynamoDB Local feeding a function."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from infra.local import dynamodb_local
from infra.local.checkpoints import CHECKPOINT_FILE_NAME
from infra.local.stack import LocalStack
from tests.integration.local_stack_support import (
    batches_with,
    deliveries,
    fixture_stack,
    wait_for,
)

pytestmark = pytest.mark.dynamodb


def put(stack: LocalStack, table: str, key: str, **attributes: str) -> None:
    item = {"pk": {"S": key}, **{name: {"S": value} for name, value in attributes.items()}}
    stack.client("dynamodb").put_item(TableName=stack.table_names[table], Item=item)


def put_together(stack: LocalStack, table: str, items: list[dict[str, str]]) -> None:
    """Write items in one transaction, so their records reach the stream together."""
    name = stack.table_names[table]
    stack.client("dynamodb").transact_write_items(
        TransactItems=[
            {"Put": {"TableName": name, "Item": {k: {"S": v} for k, v in item.items()}}}
            for item in items
        ]
    )


def recorder(stack: LocalStack) -> str:
    return stack.template.local_name("RecorderFunction")


def dead_letter(stack: LocalStack, queue: str, sequence_number: str) -> dict[str, Any] | None:
    """The on-failure message whose batch starts at ``sequence_number``, if it is there."""
    response = stack.client("sqs").receive_message(
        QueueUrl=stack.queue_urls[queue],
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        VisibilityTimeout=0,
    )
    for message in response.get("Messages", []):
        body: dict[str, Any] = json.loads(message["Body"])
        if body["DDBStreamBatchInfo"]["startSequenceNumber"] == sequence_number:
            return body
    return None


def sequence_number_of(log_dir: Path, function_name: str, key: str) -> str:
    def find() -> str | None:
        for entry in deliveries(log_dir, function_name):
            for k, number in zip(entry["keys"], entry["sequence_numbers"], strict=True):
                if k == key:
                    return str(number)
        return None

    return wait_for(find)


def flat(batches: list[list[str]]) -> list[str]:
    return [key for batch in batches for key in batch]


def test_record_reaches_function_within_two_seconds(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    key = f"latency-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    put(local_stack, "ItemsTable", key, kind="tip")

    wait_for(lambda: batches_with(delivery_log_dir, recorder(local_stack), key), timeout=2.0)
    print(f"stream-to-invocation latency: {(time.monotonic() - started) * 1000:.0f} ms")


def test_records_of_one_item_arrive_in_write_order(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    key = f"order-{uuid.uuid4().hex[:6]}"
    for version in range(1, 7):
        put(local_stack, "ItemsTable", key, kind="tip", version=str(version))
        put(local_stack, "ItemsTable", f"{key}-other", kind="tip")

    def sequence_numbers() -> list[str] | None:
        numbers = [
            number
            for entry in deliveries(delivery_log_dir, recorder(local_stack))
            for k, number in zip(entry["keys"], entry["sequence_numbers"], strict=True)
            if k == key
        ]
        return numbers if len(numbers) >= 6 else None

    numbers = wait_for(sequence_numbers)

    assert numbers == sorted(numbers, key=int)


def test_records_carry_the_stream_arn_lambda_adds(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    key = f"arn-{uuid.uuid4().hex[:6]}"
    put(local_stack, "ItemsTable", key, kind="tip")
    wait_for(lambda: batches_with(delivery_log_dir, recorder(local_stack), key))
    table = local_stack.client("dynamodb").describe_table(
        TableName=local_stack.table_names["ItemsTable"]
    )["Table"]

    entry = next(
        entry
        for entry in deliveries(delivery_log_dir, recorder(local_stack))
        if key in entry["keys"]
    )
    assert entry["event_source_arns"] == [table["LatestStreamArn"]]


def test_records_the_filter_does_not_match_are_dropped(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"filter-{uuid.uuid4().hex[:6]}"
    put(local_stack, "ItemsTable", f"{prefix}-event-1", kind="event")
    put(local_stack, "ItemsTable", f"{prefix}-untyped")
    put(local_stack, "ItemsTable", f"{prefix}-event-2", kind="event")
    # Written last: once it is delivered, the records before it in the shard were handled.
    put(local_stack, "ItemsTable", f"{prefix}-tip", kind="tip")

    wait_for(lambda: batches_with(delivery_log_dir, recorder(local_stack), f"{prefix}-tip"))

    assert flat(batches_with(delivery_log_dir, recorder(local_stack), prefix)) == [
        f"{prefix}-tip"
    ]


def test_partial_failure_retries_from_the_failed_record_only(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"partial-{uuid.uuid4().hex[:6]}"
    put_together(
        local_stack,
        "ItemsTable",
        [
            {"pk": f"{prefix}-1", "kind": "tip"},
            {"pk": f"{prefix}-2", "kind": "tip", "behaviour": "fail-once"},
            {"pk": f"{prefix}-3", "kind": "tip"},
        ],
    )

    def delivered_twice() -> list[list[str]] | None:
        batches = batches_with(delivery_log_dir, recorder(local_stack), prefix)
        return batches if flat(batches).count(f"{prefix}-2") >= 2 else None

    batches = wait_for(delivered_twice)
    keys = flat(batches)

    assert keys.count(f"{prefix}-1") == 1
    retried = [batch for batch in batches if f"{prefix}-2" in batch][1]
    assert retried[0] == f"{prefix}-2"


def test_poison_record_goes_to_dlq_after_retries(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"poison-{uuid.uuid4().hex[:6]}"
    put(local_stack, "ItemsTable", f"{prefix}-bad", kind="tip", behaviour="fail")
    bad = sequence_number_of(delivery_log_dir, recorder(local_stack), f"{prefix}-bad")

    message = wait_for(lambda: dead_letter(local_stack, "ItemsDeadLetterQueue", bad))
    deliveries_of_bad = flat(batches_with(delivery_log_dir, recorder(local_stack), prefix))

    max_retries = 2  # ItemsMaxRetries in the fixture template
    assert deliveries_of_bad.count(f"{prefix}-bad") == max_retries + 1
    info = message["DDBStreamBatchInfo"]
    table = local_stack.client("dynamodb").describe_table(
        TableName=local_stack.table_names["ItemsTable"]
    )["Table"]
    assert (info["batchSize"], info["endSequenceNumber"], info["streamArn"]) == (
        1,
        bad,
        table["LatestStreamArn"],
    )
    assert (
        message["requestContext"]["condition"],
        message["requestContext"]["approximateInvokeCount"],
    ) == ("RetryAttemptsExhausted", max_retries + 1)


def test_records_after_a_poison_record_still_flow(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"flow-{uuid.uuid4().hex[:6]}"
    put(local_stack, "ItemsTable", f"{prefix}-bad", kind="tip", behaviour="fail")
    put(local_stack, "ItemsTable", f"{prefix}-good", kind="tip")

    bad = sequence_number_of(delivery_log_dir, recorder(local_stack), f"{prefix}-bad")

    wait_for(lambda: dead_letter(local_stack, "ItemsDeadLetterQueue", bad))
    wait_for(lambda: batches_with(delivery_log_dir, recorder(local_stack), f"{prefix}-good"))


def test_function_error_bisects_down_to_bad_record(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"bisect-{uuid.uuid4().hex[:6]}"
    put_together(
        local_stack,
        "BisectTable",
        [
            {"pk": f"{prefix}-a"},
            {"pk": f"{prefix}-b"},
            {"pk": f"{prefix}-c", "behaviour": "raise"},
            {"pk": f"{prefix}-d"},
        ],
    )
    name = local_stack.template.local_name("BisectFunction")

    def until_d_is_delivered_alone() -> list[list[str]] | None:
        batches = batches_with(delivery_log_dir, name, prefix)
        return batches if [f"{prefix}-d"] in batches else None

    batches = wait_for(until_d_is_delivered_alone)

    a, b, c, d = (f"{prefix}-{letter}" for letter in "abcd")
    # MaximumRetryAttempts 1: the lone bad record is tried twice, then discarded.
    assert batches == [[a, b, c, d], [a, b], [c, d], [c], [c], [d]]


def test_bisected_bad_record_goes_alone_to_dlq(
    local_stack: LocalStack, delivery_log_dir: Path
) -> None:
    prefix = f"bisect-dlq-{uuid.uuid4().hex[:6]}"
    put_together(
        local_stack,
        "BisectTable",
        [{"pk": f"{prefix}-a"}, {"pk": f"{prefix}-c", "behaviour": "raise"}],
    )

    name = local_stack.template.local_name("BisectFunction")
    bad = sequence_number_of(delivery_log_dir, name, f"{prefix}-c")

    message = wait_for(lambda: dead_letter(local_stack, "BisectDeadLetterQueue", bad))

    assert (message["DDBStreamBatchInfo"]["batchSize"], message["responseContext"]) == (
        1,
        {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
    )


def test_restarted_stack_resumes_from_checkpoints(
    dynamodb_local_server: dynamodb_local.DynamoDBLocal, tmp_path: Path
) -> None:
    prefix = f"resume{uuid.uuid4().hex[:6]}-"
    data_dir = tmp_path / "data"
    first_log, second_log = tmp_path / "first", tmp_path / "second"
    endpoint = dynamodb_local_server.endpoint_url

    with fixture_stack(endpoint, first_log, name_prefix=prefix, data_dir=data_dir) as stack:
        put(stack, "ItemsTable", "before-1", kind="tip")
        put(stack, "ItemsTable", "before-2", kind="tip")
        wait_for(lambda: batches_with(first_log, recorder(stack), "before-2"))
        stack.wait_for_streams(timeout=5)
    # Written while nothing polls the stream.
    put(stack, "ItemsTable", "while-down", kind="tip")

    with fixture_stack(endpoint, second_log, name_prefix=prefix, data_dir=data_dir) as stack:
        wait_for(lambda: batches_with(second_log, recorder(stack), "while-down"))

        assert flat(batches_with(second_log, recorder(stack), "before")) == []
    assert (data_dir / CHECKPOINT_FILE_NAME).is_file()
