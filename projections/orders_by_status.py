"""Orders by status, for operators: ``GET /orders?status=FAILED``, newest first.

An index over the order summary rows: partition ``status``, sort ``placed_key``.
A status change moves the row from one partition of the index to another.

NOTE: every order with the same status shares one index partition, and a DynamoDB
partition takes about 1,000 writes per second. Past that rate, shard the
partition key (``FAILED#0`` .. ``FAILED#n``) and merge the shards when querying.
"""

from __future__ import annotations

from projections.order_summary import NAME as ORDER_SUMMARY
from projections.projection import IndexView

VIEW = IndexView(
    name="orders_by_status",
    host=ORDER_SUMMARY,
    index_name="by_status",
    partition_attribute="status",
    sort_attribute="placed_key",
    newest_first=True,
)
