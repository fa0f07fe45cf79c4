"""Order summary read model: one row per order, folded from the order's events.

The same rows, queried through the ``by_customer`` index (customer id, then
``placed_key`` = placed-at time and order id), form the customer-orders read
model, listed newest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from application.orders import format_timestamp
from domain.order import Order, OrderStatus

Row = dict[str, Any]

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


class ProjectionError(ValueError):
    """An event cannot be applied to the row: the stream is out of order or corrupt."""


def placed_key(placed_at: str, order_id: str) -> str:
    return f"{placed_at}#{order_id}"


def apply_event(row: Row | None, event: Any) -> Row:
    """Return the row after ``event``; ``row`` is the row at the previous version or None."""
    version: int = event.originator_version
    expected = 1 if row is None else row["version"] + 1
    if version != expected:
        raise ProjectionError(
            f"order {event.originator_id}: event version {version}, row expects {expected}"
        )
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
    elif isinstance(event, Order.AttentionResolved):
        updated["needs_attention"] = False
        updated.pop("attention_reason", None)
    # Any other event type only advances the version, so later events still apply.
    return updated


def fold(row: Row | None, events: Iterable[Any]) -> Row | None:
    for event in events:
        row = apply_event(row, event)
    return row


def public_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in PUBLIC_FIELDS if name in row}
