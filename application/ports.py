"""Ports: what the application needs from infrastructure, declared as Protocols."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent

COMMAND_STREAM_PREFIX = "command#"


@dataclass(frozen=True)
class Tip:
    """The head of one stream: its version, the last commit's events and a snapshot."""

    stream_id: str
    version: int
    stream_type: str
    events: tuple[StoredEvent, ...]
    snapshot: StoredEvent | None
    recorded_at: str

    @property
    def first_version(self) -> int:
        """Version of the first event of the last commit."""
        return self.events[0].originator_version if self.events else self.version


@dataclass(frozen=True)
class CommandRecord:
    """Proof that a command ran, stored atomically with the events it produced."""

    command_id: str
    request_hash: str
    result: Mapping[str, str] = field(default_factory=dict)
    recorded_at: str = ""


@runtime_checkable
class TipRecorder(Protocol):
    """A recorder that keeps a tip per stream and records command ids."""

    def select_tip(self, originator_id: UUID | str) -> Tip | None: ...

    def select_command(self, command_id: str) -> CommandRecord | None: ...


@dataclass(frozen=True)
class Page:
    items: Sequence[Mapping[str, Any]]
    next_cursor: str | None


class InvalidCursorError(ValueError):
    """A pagination cursor was not issued by this API for this query."""


class OrderQueries(Protocol):
    """The read models the API queries."""

    def get_order(self, order_id: str) -> Mapping[str, Any] | None: ...

    def list_customer_orders(self, customer_id: str, limit: int, cursor: str | None) -> Page: ...


class StaleRowError(Exception):
    """A read-model row changed between reading it and writing it back."""


class SummaryStore(Protocol):
    """Rows of the order summary read model, written under a version guard."""

    def get(self, order_id: str) -> Mapping[str, Any] | None: ...

    def put(self, row: Mapping[str, Any], *, expected_version: int) -> None:
        """Write ``row`` if the stored row is at ``expected_version`` (0: no row yet).

        Raises :class:`StaleRowError` otherwise, and writes nothing.
        """
        ...


@dataclass(frozen=True)
class ReservationRequest:
    order_id: str
    sku: str
    quantity: int


class ReservationQueue(Protocol):
    """Fan-out of an order's lines: one message per line to the item workers."""

    def send(self, requests: Sequence[ReservationRequest]) -> None: ...


class AttentionQueue(Protocol):
    """Dead-letter queue for saga steps that failed after their retries."""

    def report(self, *, order_id: str, step: str, reason: str) -> None: ...
