"""A stream handler for the poller tests: it records every delivery and fails on request.

Each invocation appends one JSON line to ``$DELIVERY_LOG_DIR/<function name>.jsonl``
with the ``pk`` and sequence number of every record, in order. A record's
``behaviour`` attribute decides its fate: ``fail`` is reported in batchItemFailures on
every delivery, ``fail-once`` only on its first, and ``raise`` makes the whole
invocation raise. State lives in the module, as in a warm Lambda environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

already_failed: set[str] = set()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    records = event["Records"]
    log = Path(os.environ["DELIVERY_LOG_DIR"]) / f"{context.function_name}.jsonl"
    entry = {
        "request_id": context.aws_request_id,
        "keys": [record["dynamodb"]["Keys"]["pk"]["S"] for record in records],
        "sequence_numbers": [record["dynamodb"]["SequenceNumber"] for record in records],
        "kinds": [_attribute(record, "kind") for record in records],
        "event_source_arns": sorted({record.get("eventSourceARN", "") for record in records}),
    }
    with log.open("a") as file:
        file.write(json.dumps(entry) + "\n")

    failures = []
    for record in records:
        behaviour = _attribute(record, "behaviour")
        sequence_number = record["dynamodb"]["SequenceNumber"]
        if behaviour == "raise":
            raise ValueError(f"record {sequence_number} asked the handler to raise")
        if behaviour == "fail" or (
            behaviour == "fail-once" and sequence_number not in already_failed
        ):
            already_failed.add(sequence_number)
            failures.append({"itemIdentifier": sequence_number})
    return {"batchItemFailures": failures}


def _attribute(record: dict[str, Any], name: str) -> str | None:
    value = record["dynamodb"].get("NewImage", {}).get(name, {})
    return value.get("S") if isinstance(value, dict) else None
