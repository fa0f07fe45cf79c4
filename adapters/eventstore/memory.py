"""In-memory event store: the eventsourcing POPO recorder plus tips and command records.

Select it with ``PERSISTENCE_MODULE=adapters.eventstore.memory``. It enforces the
same commit limits as the DynamoDB store, so unit tests reject what DynamoDB would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing import popo
from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder

from adapters.eventstore.items import (
    commit_items,
    plan_commit,
    stream_type_of,
    utc_now_iso,
)
from application.errors import DuplicateCommandError, VersionConflictError
from application.ports import CommandRecord, Tip


class MemoryTipRecorder(POPOApplicationRecorder):
    def __init__(self) -> None:
        super().__init__()
        self._tips: dict[str, Tip] = {}
        self._commands: dict[str, CommandRecord] = {}

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        commits = plan_commit(stored_events, kwargs.get("snapshots"))
        command: CommandRecord | None = kwargs.get("command")
        recorded_at = utc_now_iso()
        commit_items(commits, command, recorded_at, command_expires_at=0)

        with self._database_lock:
            if command is not None and command.command_id in self._commands:
                raise DuplicateCommandError(self._commands[command.command_id])
            for commit in commits:
                tip = self._tips.get(commit.stream_id)
                actual = tip.version if tip else 0
                if actual != commit.expected_version:
                    raise VersionConflictError(
                        commit.stream_id, commit.expected_version, tip.version if tip else None, tip
                    )

            notification_ids = self._insert_events(stored_events, **kwargs)

            for commit in commits:
                self._tips[commit.stream_id] = Tip(
                    stream_id=commit.stream_id,
                    version=commit.new_version,
                    stream_type=stream_type_of(commit.events[0].topic),
                    events=commit.events,
                    snapshot=commit.snapshot,
                    recorded_at=recorded_at,
                )
            if command is not None:
                self._commands[command.command_id] = CommandRecord(
                    command_id=command.command_id,
                    request_hash=command.request_hash,
                    result=dict(command.result),
                    recorded_at=recorded_at,
                )
        self._notify_listeners()
        return notification_ids

    def select_tip(self, originator_id: UUID | str) -> Tip | None:
        with self._database_lock:
            return self._tips.get(str(originator_id))

    def select_command(self, command_id: str) -> CommandRecord | None:
        with self._database_lock:
            return self._commands.get(command_id)


class MemoryFactory(popo.POPOFactory):
    def application_recorder(self) -> ApplicationRecorder:
        return MemoryTipRecorder()


Factory = MemoryFactory
