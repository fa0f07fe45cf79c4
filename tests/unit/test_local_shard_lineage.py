"""The stream poller's shard handling, on a fake streams API that splits and closes shards.

DynamoDB Local keeps one open shard per table, so parent/child lineage, pagination of
DescribeStream and shards that appear later can only be exercised with a fake.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from infra.local.checkpoints import CheckpointStore
from infra.local.runner import InvocationResult
from infra.local.stream_mapping import StreamMapping
from infra.local.stream_poller import StreamPoller

STREAM_ARN = "arn:aws:dynamodb:ddblocal:000000000000:table/T/stream/2026-01-01T00:00:00.000"


class FakeShard:
    def __init__(self, shard_id: str, parent: str | None, numbers: list[int], closed: bool):
        self.shard_id = shard_id
        self.parent = parent
        self.numbers = numbers
        self.closed = closed


class FakeStreams:
    """DescribeStream (one shard per page), GetShardIterator and GetRecords over fake shards."""

    def __init__(self, shards: list[FakeShard]) -> None:
        self.shards = shards
        self.lock = threading.Lock()

    def describe_stream(self, **request: Any) -> dict[str, Any]:
        with self.lock:
            ids = [shard.shard_id for shard in self.shards]
            start = (
                ids.index(request["ExclusiveStartShardId"]) + 1
                if "ExclusiveStartShardId" in (request)
                else 0
            )
            page = self.shards[start : start + 1]
            description: dict[str, Any] = {
                "Shards": [
                    {
                        "ShardId": shard.shard_id,
                        **({"ParentShardId": shard.parent} if shard.parent else {}),
                        "SequenceNumberRange": {
                            "StartingSequenceNumber": f"{shard.numbers[0]:021d}",
                            **(
                                {"EndingSequenceNumber": f"{shard.numbers[-1]:021d}"}
                                if shard.closed
                                else {}
                            ),
                        },
                    }
                    for shard in page
                ]
            }
            if start + 1 < len(self.shards):
                description["LastEvaluatedShardId"] = page[-1].shard_id
            return {"StreamDescription": description}

    def get_shard_iterator(self, **request: Any) -> dict[str, Any]:
        after = int(request.get("SequenceNumber", 0))
        if request["ShardIteratorType"] == "LATEST":
            after = 10**9
        return {"ShardIterator": f"{request['ShardId']}|{after}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:  # noqa: N803
        shard_id, after_text = ShardIterator.split("|")
        after = int(after_text)
        with self.lock:
            shard = next(shard for shard in self.shards if shard.shard_id == shard_id)
            numbers = [number for number in shard.numbers if number > after][:Limit]
            last = numbers[-1] if numbers else after
            done = shard.closed and last >= shard.numbers[-1]
        records = [
            {
                "eventName": "INSERT",
                "dynamodb": {
                    "Keys": {"pk": {"S": str(number)}},
                    "NewImage": {"pk": {"S": str(number)}},
                    "SequenceNumber": f"{number:021d}",
                },
            }
            for number in numbers
        ]
        response: dict[str, Any] = {"Records": records}
        if not done:
            response["NextShardIterator"] = f"{shard_id}|{last}"
        return response


class FakeTable:
    def describe_table(self, TableName: str) -> dict[str, Any]:  # noqa: N803
        return {
            "Table": {
                "LatestStreamArn": STREAM_ARN,
                "StreamSpecification": {"StreamEnabled": True},
            }
        }


class RecordingInvoker:
    def __init__(self) -> None:
        self.numbers: list[int] = []

    def invoke(self, event: Any) -> InvocationResult:
        self.numbers.extend(
            int(record["dynamodb"]["Keys"]["pk"]["S"]) for record in event["Records"]
        )
        return InvocationResult(payload=None, function_error=None, request_id="r", duration=0.0)


def poller(streams: FakeStreams, invoker: RecordingInvoker) -> StreamPoller:
    mapping = StreamMapping(
        mapping_id="F/E", function_id="F", table_name="T", starting_position="TRIM_HORIZON"
    )
    return StreamPoller(
        mapping,
        invoker=invoker,
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:F",
        dynamodb_client=FakeTable(),
        streams_client=streams,
        checkpoints=CheckpointStore(None),
        poll_interval=0.01,
    )


def wait_for_numbers(invoker: RecordingInvoker, count: int, timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(invoker.numbers) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(invoker.numbers)


def test_parent_shard_is_read_to_its_end_before_its_child() -> None:
    # The child is listed first, so only the lineage rule can put the parent first.
    streams = FakeStreams(
        [
            FakeShard("shard-child", "shard-parent", [30, 31], closed=False),
            FakeShard("shard-parent", None, [10, 11, 12], closed=True),
        ]
    )
    invoker = RecordingInvoker()
    running = poller(streams, invoker).start()
    try:
        numbers = wait_for_numbers(invoker, 5)
    finally:
        running.stop()

    assert numbers == [10, 11, 12, 30, 31]


def test_shard_that_appears_later_is_read_from_its_start() -> None:
    streams = FakeStreams([FakeShard("shard-1", None, [1, 2], closed=True)])
    invoker = RecordingInvoker()
    running = poller(streams, invoker).start()
    try:
        wait_for_numbers(invoker, 2)
        with streams.lock:
            streams.shards.append(FakeShard("shard-2", "shard-1", [5, 6], closed=False))
        numbers = wait_for_numbers(invoker, 4)
    finally:
        running.stop()

    assert numbers == [1, 2, 5, 6]
