"""Customer stats read model: order count, total spent per currency, last order date.

Rows, all in one table keyed by ``pk``:

- ``order#<order_id>``: one per order, the guard row. It stores the order's version,
  customer, currency, total and placed-at time. ``counted`` is the amount this
  order currently adds to the customer's spending.
- ``customer#<customer_id>``: the customer's sums, ``order_count`` and one
  ``spent_<CURRENCY>`` per currency. Only ever changed by adding numbers, in the same
  transaction as the order row that holds the guard, so orders apply in any order.

The last order date is the newest ``placed_at`` among the customer's order rows, read
through the ``by_customer`` index (customer id, placed-at), not stored in the sums row:
a maximum kept there would need a read-compare-write on every order.

Spending counts an order's total once its payment is captured, and stops counting it
when the order is cancelled or fails afterwards, since the saga then refunds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from application.orders import format_timestamp
from application.ports import Contribution, RowKey
from domain.order import Order
from projections.order_summary import ORDER_STREAM_TYPE
from projections.projection import ProjectionError, Row, expect_next_version

NAME = "customer_stats"
ORDER_PREFIX = "order#"
CUSTOMER_PREFIX = "customer#"
SPENT_PREFIX = "spent_"
LAST_ORDER_INDEX = "by_customer"
LAST_ORDER_ATTRIBUTE = "placed_at"


def order_key(order_id: str) -> RowKey:
    return {"pk": f"{ORDER_PREFIX}{order_id}"}


def stats_key(customer_id: str) -> RowKey:
    return {"pk": f"{CUSTOMER_PREFIX}{customer_id}"}


def apply_event(row: Row | None, event: Any) -> Row:
    version = expect_next_version(row, event, "order")
    if isinstance(event, Order.OrderPlaced):
        order_id = str(event.originator_id)
        return {
            **order_key(order_id),
            "order_id": order_id,
            "customer_id": event.customer_id,
            "currency": event.currency,
            "total": event.total,
            "placed_at": format_timestamp(event.timestamp),
            "counted": 0,
            "version": version,
        }
    if row is None:
        raise ProjectionError(f"order {event.originator_id}: {type(event).__name__} before placed")
    updated = {**row, "version": version}
    if isinstance(event, Order.PaymentCaptured):
        updated["counted"] = row["total"]
    elif isinstance(event, Order.OrderCancelled | Order.OrderFailed):
        updated["counted"] = 0
    return updated


def contributions(before: Row | None, after: Row) -> Sequence[Contribution]:
    """Return what the customer's sums gain when the order row goes from ``before`` to
    ``after``.

    A new order always adds its currency, even with nothing spent yet. So the sums
    row lists every currency the customer ordered in, whichever way it was built.
    """
    spent = f"{SPENT_PREFIX}{after['currency']}"
    add: dict[str, int] = {}
    if before is None:
        add["order_count"] = 1
        add[spent] = int(after["counted"])
    else:
        delta = int(after["counted"]) - int(before["counted"])
        if delta:
            add[spent] = delta
    if not add:
        return ()
    customer_id = str(after["customer_id"])
    return (Contribution(stats_key(customer_id), add, {"customer_id": customer_id}),)


@dataclass(frozen=True)
class CustomerStatsProjection:
    name: str = NAME
    stream_types: frozenset[str] = frozenset({ORDER_STREAM_TYPE})
    key_attributes: tuple[str, ...] = ("pk",)
    has_summing_rows = True
    contribution_attributes: tuple[str, ...] = ("customer_id", "currency", "counted")

    def row_key(self, stream_id: str) -> RowKey:
        return order_key(stream_id)

    def fold(self, row: Row | None, events: Iterable[Any]) -> Row:
        for event in events:
            row = apply_event(row, event)
        if row is None:
            raise ProjectionError("an order row needs at least one event")
        return row

    def contributions(self, before: Row | None, after: Row) -> Sequence[Contribution]:
        return contributions(before, after)


PROJECTION = CustomerStatsProjection()


def stats_view(sums: Mapping[str, Any], last_order_at: str | None) -> dict[str, Any]:
    """What ``GET /customers/{id}/stats`` returns."""
    total_spent = {
        name.removeprefix(SPENT_PREFIX): int(value)
        for name, value in sorted(sums.items())
        if name.startswith(SPENT_PREFIX)
    }
    return {
        "customer_id": sums["customer_id"],
        "order_count": int(sums.get("order_count", 0)),
        "total_spent": total_spent,
        "last_order_at": last_order_at,
    }
