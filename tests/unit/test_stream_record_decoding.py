"""Tips decode the same from boto3 items and from Lambda's JSON stream records."""

from __future__ import annotations

import base64
from typing import Any

from eventsourcing.persistence import StoredEvent

from adapters.eventstore.items import StreamCommit, tip_from_item, tip_item


def as_lambda_json(value: Any) -> Any:
    """Encode binary values as base64 text, the way Lambda serializes stream records."""
    if isinstance(value, dict):
        return {
            key: base64.b64encode(item).decode() if key == "B" else as_lambda_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [as_lambda_json(item) for item in value]
    return value


def make_commit() -> StreamCommit:
    events = tuple(
        StoredEvent("s-1", version, "domain.order:Order.Event", f'{{"n": {version}}}'.encode())
        for version in (3, 4)
    )
    snapshot = StoredEvent("s-1", 4, "eventsourcing.domain:Snapshot", b'{"state": 1}')
    return StreamCommit("s-1", events, snapshot)


def test_tip_decodes_base64_binary() -> None:
    item = tip_item(make_commit(), "2026-12-04T00:00:00.000000Z", None)

    tip = tip_from_item(as_lambda_json(item))

    assert [event.state for event in tip.events] == [b'{"n": 3}', b'{"n": 4}']
    assert tip.snapshot is not None
    assert tip.snapshot.state == b'{"state": 1}'


def test_tip_decodes_raw_bytes() -> None:
    tip = tip_from_item(tip_item(make_commit(), "2026-12-04T00:00:00.000000Z", None))
    assert (tip.version, tip.first_version) == (4, 3)
