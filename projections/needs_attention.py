"""Orders needing attention: the operators' queue, longest flagged first.

A sparse index over the order summary rows. The fold sets ``attention_flag`` and
``attention_key`` (flagged-at time, then order id) on ``AttentionRequired`` and
removes both on ``AttentionResolved``. So only flagged orders are in the index, and
a query reads no other order.
"""

from __future__ import annotations

from projections.order_summary import ATTENTION_FLAG, ATTENTION_KEY, FLAGGED
from projections.order_summary import NAME as ORDER_SUMMARY
from projections.projection import IndexView

PARTITION_VALUE = FLAGGED

VIEW = IndexView(
    name="orders_needing_attention",
    host=ORDER_SUMMARY,
    index_name="needs_attention",
    partition_attribute=ATTENTION_FLAG,
    sort_attribute=ATTENTION_KEY,
    newest_first=False,
)
