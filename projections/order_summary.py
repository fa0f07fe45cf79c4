"""Order summary read model: one row per order, folded from the order's events.

Three more read models are indexes over these rows, each defined in its own
module: customer orders (:mod:`projections.customer_orders`), orders by status
(:mod:`projections.orders_by_status`) and orders needing attention
(:mod:`projections.needs_attention`). The fold writes their key attributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from application.orders import format_timestamp
from application.ports import RowKey
from domain.order import Order, OrderStatus
from projections.projection import (
    PerStreamOnly,
    ProjectionError,
    Row,
    expect_next_version,
)

NAME = "order_summary"
ORDER_STREAM_TYPE = get_topic(Order)
# Key attributes of the sparse needs-attention index: present only while flagged.
ATTENTION_FLAG = "attention_flag"
ATTENTION_KEY = "attention_key"
FLAGGED = "FLAGGED"

# Fields of a row that the API returns; the rest (placed_key) serve the index.
PUBLIC_FIELDS = (
    "order_id",
    "customer_id",
    "status",
    "needs_attention",
    "lines",
    "currency",
    "total",
    "version",
    "placed_at",
    "updated_at",
    "payment_id",
    "shipment_id",
    "failure_reason",
    "attention_reason",
)


def placed_key(placed_at: str, order_id: str) -> str:
    return f"{placed_at}#{order_id}"


def apply_event(row: Row | None, event: Any) -> Row:
    """Return the row after ``event``; ``row`` is the row at the previous version or None."""
    version = expect_next_version(row, event, "order")
    at = format_timestamp(event.timestamp)

    if isinstance(event, Order.OrderPlaced):
        order_id = str(event.originator_id)
        return {
            "order_id": order_id,
            "customer_id": event.customer_id,
            "status": OrderStatus.PLACED.value,
            "needs_attention": False,
            "lines": [dict(line) for line in event.lines],
            "currency": event.currency,
            "total": event.total,
            "version": version,
            "placed_at": at,
            "updated_at": at,
            "placed_key": placed_key(at, order_id),
        }
    if row is None:
        raise ProjectionError(f"order {event.originator_id}: {type(event).__name__} before placed")

    updated = {**row, "version": version, "updated_at": at}
    if isinstance(event, Order.ItemsReserved):
        updated["status"] = OrderStatus.RESERVED.value
    elif isinstance(event, Order.PaymentCaptured):
        updated["status"] = OrderStatus.PAID.value
        updated["payment_id"] = event.payment_id
    elif isinstance(event, Order.OrderFulfilled):
        updated["status"] = OrderStatus.FULFILLED.value
        updated["shipment_id"] = event.shipment_id
    elif isinstance(event, Order.OrderCancelled):
        updated["status"] = OrderStatus.CANCELLED.value
        updated["failure_reason"] = event.reason
    elif isinstance(event, Order.OrderFailed):
        updated["status"] = OrderStatus.FAILED.value
        updated["failure_reason"] = event.reason
    elif isinstance(event, Order.AttentionRequired):
        updated["needs_attention"] = True
        updated["attention_reason"] = event.reason
        # Flagged again with another reason: it keeps its place in the queue.
        updated[ATTENTION_FLAG] = FLAGGED
        updated.setdefault(ATTENTION_KEY, f"{at}#{row['order_id']}")
    elif isinstance(event, Order.AttentionResolved):
        updated["needs_attention"] = False
        for name in ("attention_reason", ATTENTION_FLAG, ATTENTION_KEY):
            updated.pop(name, None)
    # Any other event type only advances the version, so later events still apply.
    return updated


def fold(row: Row | None, events: Iterable[Any]) -> Row | None:
    for event in events:
        row = apply_event(row, event)
    return row


def public_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in PUBLIC_FIELDS if name in row}


@dataclass(frozen=True)
class OrderSummaryProjection(PerStreamOnly):
    name: str = NAME
    stream_types: frozenset[str] = frozenset({ORDER_STREAM_TYPE})
    key_attributes: tuple[str, ...] = ("order_id",)

    def row_key(self, stream_id: str) -> RowKey:
        return {"order_id": stream_id}

    def fold(self, row: Row | None, events: Iterable[Any]) -> Row:
        folded = fold(row, events)
        if folded is None:
            raise ProjectionError("an order summary needs at least one event")
        return folded


PROJECTION = OrderSummaryProjection()
