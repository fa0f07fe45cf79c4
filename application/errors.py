"""Errors the application layer raises or translates; adapters raise the store ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventsourcing.persistence import IntegrityError, OperationalError

if TYPE_CHECKING:
    from application.ports import CommandRecord, Tip


class VersionConflictError(IntegrityError):
    """Another writer appended to the stream first (optimistic concurrency)."""

    def __init__(
        self, stream_id: str, expected_version: int, actual_version: int | None, tip: Tip | None
    ) -> None:
        actual = "absent" if actual_version is None else f"at version {actual_version}"
        super().__init__(
            f"stream {stream_id} is {actual}, the command expected version {expected_version}; "
            "reload and retry"
        )
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        self.tip = tip


class DuplicateCommandError(IntegrityError):
    """The command id was already recorded: the command ran before, return its result."""

    def __init__(self, recorded: CommandRecord) -> None:
        super().__init__(f"command {recorded.command_id} was already applied")
        self.recorded = recorded


class CommitTooLargeError(ValueError):
    """A commit would break a DynamoDB limit; nothing was written."""


class TransientStoreError(OperationalError):
    """The store stayed busy (throttling or transaction conflicts) after the retries."""


class IdempotencyKeyReusedError(ValueError):
    """An idempotency key came back with a different request than the first time."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request body; "
            "send a new key for a new request"
        )
        self.key = key


class OrderNotFoundError(LookupError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id
