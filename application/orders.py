"""Command handlers and the history query of the order service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import DomainEventProtocol

from application.commands import PlaceOrder
from application.errors import (
    DuplicateCommandError,
    IdempotencyKeyReusedError,
    OrderNotFoundError,
    VersionConflictError,
)
from application.eventsourced import TipApplication
from application.ports import CommandRecord
from domain.order import Order

# Event attributes that the history shows in its own fields, or not at all.
_ENVELOPE_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "originator_topic"}
)
# A payment method token is a credential: the history shows that one was given, not which.
_REDACTED_FIELDS = frozenset({"payment_method"})
REDACTED = "[redacted]"
MAX_CONFLICT_RETRIES = 10


@dataclass(frozen=True)
class PlacedOrder:
    order_id: str
    command_id: str
    replayed: bool


def format_timestamp(moment: Any) -> str:
    """Return a UTC timestamp as ISO 8601 with microseconds and ``Z``."""
    return str(moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def event_type_name(event: DomainEventProtocol[Any]) -> str:
    return type(event).__name__


def history_entry(event: Any) -> dict[str, Any]:
    data = {
        name: (REDACTED if name in _REDACTED_FIELDS else value)
        for name, value in event.__dict__.items()
        if name not in _ENVELOPE_FIELDS
    }
    return {
        "version": event.originator_version,
        "type": event_type_name(event),
        "occurred_at": format_timestamp(event.timestamp),
        "data": data,
    }


class OrdersApplication(TipApplication):
    name = "orders"

    def place_order(self, command: PlaceOrder, *, idempotency_key: str | None) -> PlacedOrder:
        """Record a new order; a repeated idempotency key returns the first order instead."""
        order = Order.place(
            customer_id=command.customer_id,
            currency=command.currency,
            payment_method=command.payment_method,
            lines=[line.to_domain() for line in command.lines],
        )

        if idempotency_key is None:
            command_id = str(uuid.uuid4())
            self.save(order)
            return PlacedOrder(order_id=str(order.id), command_id=command_id, replayed=False)

        command_id = f"place-order:{idempotency_key}"
        request_hash = command.request_hash()
        record = CommandRecord(command_id, request_hash, {"order_id": str(order.id)})
        try:
            self.save(order, command=record)
        except DuplicateCommandError as duplicate:
            if duplicate.recorded.request_hash != request_hash:
                raise IdempotencyKeyReusedError(idempotency_key) from None
            first_order_id = duplicate.recorded.result["order_id"]
            return PlacedOrder(order_id=first_order_id, command_id=command_id, replayed=True)
        return PlacedOrder(order_id=str(order.id), command_id=command_id, replayed=False)

    def cancel_order(self, order_id: UUID, reason: str) -> int:
        """Cancel an order that has not shipped; return the order's new version.

        Raises InvalidTransitionError once the order is fulfilled, failed or
        already cancelled. The saga compensates what it did (refund, stock).
        """
        for _ in range(MAX_CONFLICT_RETRIES):
            try:
                order: Order = self.repository.get(order_id)
            except AggregateNotFoundError:
                raise OrderNotFoundError(str(order_id)) from None
            order.cancel(reason)
            try:
                self.save(order)
            except VersionConflictError:
                continue  # the saga moved the order on; decide again on its new state
            return order.version
        raise VersionConflictError(str(order_id), -1, None, None)

    def order_history(self, order_id: UUID) -> list[dict[str, Any]]:
        """Return every event of an order, oldest first, with payment tokens redacted."""
        entries = [history_entry(event) for event in self.events.get(order_id)]
        if not entries:
            raise OrderNotFoundError(str(order_id))
        return entries
