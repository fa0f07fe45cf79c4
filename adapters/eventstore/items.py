"""How commits become DynamoDB items, and the limits they must fit.

Shared by the DynamoDB recorder and the in-memory one, so that a commit the
in-memory store accepts in a unit test is one that DynamoDB accepts too.

Table layout: partition key ``stream_id`` (S), sort key ``position`` (N).
Events sit at their version (1, 2, ...). Position 0 holds the stream's tip:
its version, the last commit's events and a snapshot of the state after it.
Command records sit in their own partition, ``command#<id>``, at position 0.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import StoredEvent

from application.errors import CommitTooLargeError
from application.ports import COMMAND_STREAM_PREFIX, CommandRecord, Tip

# DynamoDB limits (Amazon DynamoDB Developer Guide, "Service, account, and table quotas").
MAX_ITEM_BYTES = 400 * 1024
MAX_TRANSACTION_ACTIONS = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024

TIP_POSITION = 0
KIND_EVENT = "event"
KIND_TIP = "tip"
KIND_COMMAND = "command"

AttributeValue = dict[str, Any]
Item = dict[str, AttributeValue]
# What boto3 returns for an item; read-only, so typed loosely.
StoredItem = Mapping[str, Any]


def utc_now_iso() -> str:
    """Return the current UTC time as ISO 8601 with microseconds and a ``Z`` suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stream_type_of(topic: str) -> str:
    """Return the aggregate topic for an event topic: ``mod:Order.OrderPlaced`` -> ``mod:Order``."""
    return topic.rsplit(".", 1)[0] if "." in topic.split(":", 1)[-1] else topic


@dataclass(frozen=True)
class StreamCommit:
    """The new events of one stream in a commit, and the snapshot after them."""

    stream_id: str
    events: tuple[StoredEvent, ...]
    snapshot: StoredEvent | None

    @property
    def expected_version(self) -> int:
        return self.events[0].originator_version - 1

    @property
    def new_version(self) -> int:
        return self.events[-1].originator_version


def plan_commit(
    stored_events: Sequence[StoredEvent], snapshots: Mapping[str, StoredEvent] | None = None
) -> list[StreamCommit]:
    """Group a commit's events by stream and check each stream's versions are contiguous."""
    by_stream: dict[str, list[StoredEvent]] = {}
    for stored in stored_events:
        by_stream.setdefault(str(stored.originator_id), []).append(stored)

    commits = []
    for stream_id, events in by_stream.items():
        versions = [event.originator_version for event in events]
        expected = list(range(versions[0], versions[0] + len(versions)))
        if versions != expected or versions[0] < 1:
            raise ValueError(
                f"stream {stream_id}: a commit needs contiguous versions from 1 up, got {versions}"
            )
        if stream_id.startswith(COMMAND_STREAM_PREFIX):
            raise ValueError(f"stream id {stream_id!r} uses the reserved command prefix")
        snapshot = (snapshots or {}).get(stream_id)
        if snapshot is not None and snapshot.originator_version != versions[-1]:
            raise ValueError(
                f"stream {stream_id}: the snapshot is at version {snapshot.originator_version}, "
                f"the commit ends at {versions[-1]}"
            )
        commits.append(StreamCommit(stream_id, tuple(events), snapshot))
    return commits


# Building items -------------------------------------------------------------------


def event_item(stored: StoredEvent, recorded_at: str) -> Item:
    return {
        "stream_id": {"S": str(stored.originator_id)},
        "position": {"N": str(stored.originator_version)},
        "kind": {"S": KIND_EVENT},
        "topic": {"S": stored.topic},
        "state": {"B": stored.state},
        "recorded_at": {"S": recorded_at},
    }


def tip_item(commit: StreamCommit, recorded_at: str, command_id: str | None) -> Item:
    item: Item = {
        "stream_id": {"S": commit.stream_id},
        "position": {"N": str(TIP_POSITION)},
        "kind": {"S": KIND_TIP},
        "stream_type": {"S": stream_type_of(commit.events[0].topic)},
        "version": {"N": str(commit.new_version)},
        "events": {
            "L": [
                {
                    "M": {
                        "version": {"N": str(event.originator_version)},
                        "topic": {"S": event.topic},
                        "state": {"B": event.state},
                    }
                }
                for event in commit.events
            ]
        },
        "recorded_at": {"S": recorded_at},
    }
    if commit.snapshot is not None:
        item["snapshot"] = {
            "M": {"topic": {"S": commit.snapshot.topic}, "state": {"B": commit.snapshot.state}}
        }
    if command_id is not None:
        item["command_id"] = {"S": command_id}
    return item


def command_item(command: CommandRecord, recorded_at: str, expires_at: int) -> Item:
    return {
        "stream_id": {"S": COMMAND_STREAM_PREFIX + command.command_id},
        "position": {"N": str(TIP_POSITION)},
        "kind": {"S": KIND_COMMAND},
        "request_hash": {"S": command.request_hash},
        "result": {"M": {key: {"S": value} for key, value in command.result.items()}},
        "recorded_at": {"S": recorded_at},
        "expires_at": {"N": str(expires_at)},
    }


def command_key(command_id: str) -> Item:
    return {
        "stream_id": {"S": COMMAND_STREAM_PREFIX + command_id},
        "position": {"N": str(TIP_POSITION)},
    }


def tip_key(stream_id: str) -> Item:
    return {"stream_id": {"S": stream_id}, "position": {"N": str(TIP_POSITION)}}


# Reading items --------------------------------------------------------------------


def _binary(value: Mapping[str, Any]) -> bytes:
    raw = value["B"]
    if isinstance(raw, bytes | bytearray):
        return bytes(raw)
    if isinstance(raw, str):
        # Lambda delivers stream records as JSON, where binary values are base64 text.
        return base64.b64decode(raw, validate=True)
    # boto3's TypeDeserializer hands over a Binary wrapper instead of bytes.
    wrapped: bytes = raw.value
    return wrapped


def stored_event_from_item(item: StoredItem) -> StoredEvent:
    return StoredEvent(
        originator_id=item["stream_id"]["S"],
        originator_version=int(item["position"]["N"]),
        topic=item["topic"]["S"],
        state=_binary(item["state"]),
    )


def tip_from_item(item: StoredItem) -> Tip:
    stream_id = item["stream_id"]["S"]
    events = tuple(
        StoredEvent(
            originator_id=stream_id,
            originator_version=int(entry["M"]["version"]["N"]),
            topic=entry["M"]["topic"]["S"],
            state=_binary(entry["M"]["state"]),
        )
        for entry in item["events"]["L"]
    )
    version = int(item["version"]["N"])
    snapshot = None
    if "snapshot" in item:
        snapshot = StoredEvent(
            originator_id=stream_id,
            originator_version=version,
            topic=item["snapshot"]["M"]["topic"]["S"],
            state=_binary(item["snapshot"]["M"]["state"]),
        )
    return Tip(
        stream_id=stream_id,
        version=version,
        stream_type=item["stream_type"]["S"],
        events=events,
        snapshot=snapshot,
        recorded_at=item["recorded_at"]["S"],
    )


def command_from_item(item: StoredItem) -> CommandRecord:
    return CommandRecord(
        command_id=item["stream_id"]["S"].removeprefix(COMMAND_STREAM_PREFIX),
        request_hash=item["request_hash"]["S"],
        result={key: value["S"] for key, value in item["result"]["M"].items()},
        recorded_at=item["recorded_at"]["S"],
    )


# Sizes ----------------------------------------------------------------------------


def _number_size(text: str) -> int:
    """Size of a DynamoDB number: about one byte per two significant digits, plus one."""
    digits = Decimal(text).normalize().as_tuple().digits
    return math.ceil(len(digits) / 2) + 1


def attribute_value_size(value: AttributeValue) -> int:
    """Size of one attribute value by DynamoDB's rules for computing item sizes."""
    ((kind, content),) = value.items()
    if kind == "S":
        return len(content.encode("utf-8"))
    if kind == "N":
        return _number_size(content)
    if kind == "B":
        return len(_binary(value))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(text.encode("utf-8")) for text in content)
    if kind == "NS":
        return sum(_number_size(text) for text in content)
    if kind == "BS":
        return sum(len(blob) for blob in content)
    if kind == "L":
        return 3 + sum(attribute_value_size(element) + 1 for element in content)
    if kind == "M":
        return 3 + sum(
            len(name.encode("utf-8")) + attribute_value_size(element) + 1
            for name, element in content.items()
        )
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_size(item: Item) -> int:
    return sum(
        len(name.encode("utf-8")) + attribute_value_size(value) for name, value in item.items()
    )


def check_transaction_limits(items: Sequence[Item]) -> None:
    """Raise :class:`CommitTooLargeError` if the items cannot go in one transaction."""
    if len(items) > MAX_TRANSACTION_ACTIONS:
        raise CommitTooLargeError(
            f"the commit needs {len(items)} writes (events, tips and the command record); "
            f"a DynamoDB transaction allows {MAX_TRANSACTION_ACTIONS}: split the command"
        )
    total = 0
    for item in items:
        size = item_size(item)
        if size > MAX_ITEM_BYTES:
            raise CommitTooLargeError(
                f"item {item['stream_id']['S']}@{item['position']['N']} is {size} bytes; "
                f"DynamoDB allows {MAX_ITEM_BYTES}: make the events or the aggregate smaller"
            )
        total += size
    if total > MAX_TRANSACTION_BYTES:
        raise CommitTooLargeError(
            f"the commit is {total} bytes; a DynamoDB transaction allows "
            f"{MAX_TRANSACTION_BYTES}: split the command"
        )


def commit_items(
    commits: Sequence[StreamCommit],
    command: CommandRecord | None,
    recorded_at: str,
    command_expires_at: int,
) -> tuple[list[Item], list[Item], Item | None]:
    """Build and check every item of a commit: (event items, tip items, command item)."""
    command_id = command.command_id if command else None
    events = [event_item(event, recorded_at) for commit in commits for event in commit.events]
    tips = [tip_item(commit, recorded_at, command_id) for commit in commits]
    command_record = (
        command_item(command, recorded_at, command_expires_at) if command is not None else None
    )
    check_transaction_limits(events + tips + ([command_record] if command_record else []))
    return events, tips, command_record
