"""Per-shard positions of the stream pollers, so a restarted stack resumes instead of replaying.

Lambda keeps this position inside the event source mapping. Locally it is a JSON file in
the data folder, written atomically after every batch::

    {"ProjectorFunction/EventsStream": {
        "stream_arn": "arn:aws:dynamodb:ddblocal:000000000000:table/EventsTable/stream/...",
        "shards": {"shardId-...": {"sequence_number": "000000000000000000042",
                                   "finished": false}}}}

A checkpoint for another stream ARN (the table was recreated) is ignored. With no file
(``--in-memory``) positions live only as long as the process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("orders.local.checkpoints")

CHECKPOINT_FILE_NAME = "stream-checkpoints.json"


@dataclass(frozen=True)
class ShardPosition:
    sequence_number: str | None
    """The last record handled (delivered, filtered out or sent to the DLQ)."""
    finished: bool = False
    """The shard is closed and every record in it is handled."""


class CheckpointStore:
    """Thread-safe store of the shard positions of every mapping, in a file when given a path."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = self._read() if path else {}

    def _read(self) -> dict[str, dict[str, Any]]:
        assert self.path is not None
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            logger.warning(
                "ignoring the stream checkpoints in %s (%s); the pollers start from their "
                "StartingPosition",
                self.path,
                error,
            )
            return {}
        return data if isinstance(data, dict) else {}

    def positions(self, mapping_id: str, stream_arn: str) -> dict[str, ShardPosition]:
        with self._lock:
            entry = self._data.get(mapping_id)
            if not entry or entry.get("stream_arn") != stream_arn:
                return {}
            return {
                shard_id: ShardPosition(
                    sequence_number=position.get("sequence_number"),
                    finished=bool(position.get("finished")),
                )
                for shard_id, position in entry.get("shards", {}).items()
            }

    def save(
        self, mapping_id: str, stream_arn: str, shard_id: str, position: ShardPosition
    ) -> None:
        with self._lock:
            entry = self._data.get(mapping_id)
            if not entry or entry.get("stream_arn") != stream_arn:
                entry = {"stream_arn": stream_arn, "shards": {}}
                self._data[mapping_id] = entry
            entry["shards"][shard_id] = {
                "sequence_number": position.sequence_number,
                "finished": position.finished,
            }
            self._write()

    def forget_shards(self, mapping_id: str, keep: set[str]) -> None:
        """Drop positions of shards the stream no longer lists (trimmed after 24 h)."""
        with self._lock:
            shards = self._data.get(mapping_id, {}).get("shards", {})
            stale = set(shards) - keep
            for shard_id in stale:
                del shards[shard_id]
            if stale:
                self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(json.dumps(self._data, indent=1, sort_keys=True))
        os.replace(scratch, self.path)
