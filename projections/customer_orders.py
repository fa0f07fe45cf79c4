"""Customer orders read model: a customer's orders, newest first, paged with a cursor.

An index over the order summary rows: partition ``customer_id``, sort ``placed_key``
(placed-at time, then order id, so two orders placed in the same microsecond still
have a fixed order).
"""

from __future__ import annotations

from projections.order_summary import NAME as ORDER_SUMMARY
from projections.projection import IndexView

VIEW = IndexView(
    name="customer_orders",
    host=ORDER_SUMMARY,
    index_name="by_customer",
    partition_attribute="customer_id",
    sort_attribute="placed_key",
    newest_first=True,
)
