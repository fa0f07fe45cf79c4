"""Inventory levels read model: stock of each sku, folded from its InventoryItem stream.

One row per sku, keyed by the stream id (``inventory_id(sku)``), because later
events of the stream do not repeat the sku and a tip carries only the stream id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eventsourcing.utils import get_topic

from application.orders import format_timestamp
from application.ports import RowKey
from domain.inventory import InventoryItem, inventory_id
from projections.projection import PerStreamOnly, ProjectionError, Row, expect_next_version

NAME = "inventory_levels"
INVENTORY_STREAM_TYPE = get_topic(InventoryItem)
STOCK_FIELDS = ("sku", "on_hand", "reserved", "available", "version")


def item_key(sku: str) -> RowKey:
    return {"item_id": str(inventory_id(sku))}


def apply_event(row: Row | None, event: Any) -> Row:
    version = expect_next_version(row, event, "inventory item")
    at = format_timestamp(event.timestamp)
    if isinstance(event, InventoryItem.Registered):
        return {
            "item_id": str(event.originator_id),
            "sku": event.sku,
            "on_hand": 0,
            "reserved": 0,
            "available": 0,
            "version": version,
            "updated_at": at,
        }
    if row is None:
        raise ProjectionError(
            f"inventory item {event.originator_id}: {type(event).__name__} before registered"
        )
    on_hand = int(row["on_hand"])
    reserved = int(row["reserved"])
    if isinstance(event, InventoryItem.StockAdded):
        on_hand += event.quantity
    elif isinstance(event, InventoryItem.StockCounted):
        on_hand = event.on_hand
    elif isinstance(event, InventoryItem.StockReserved):
        reserved += event.quantity
    elif isinstance(event, InventoryItem.ReservationReleased):
        reserved -= event.quantity
    elif isinstance(event, InventoryItem.ReservationShipped):
        reserved -= event.quantity
        on_hand -= event.quantity
    return {
        **row,
        "on_hand": on_hand,
        "reserved": reserved,
        "available": on_hand - reserved,
        "version": version,
        "updated_at": at,
    }


@dataclass(frozen=True)
class InventoryLevelsProjection(PerStreamOnly):
    name: str = NAME
    stream_types: frozenset[str] = frozenset({INVENTORY_STREAM_TYPE})
    key_attributes: tuple[str, ...] = ("item_id",)

    def row_key(self, stream_id: str) -> RowKey:
        return {"item_id": stream_id}

    def fold(self, row: Row | None, events: Iterable[Any]) -> Row:
        for event in events:
            row = apply_event(row, event)
        if row is None:
            raise ProjectionError("an inventory row needs at least one event")
        return row


PROJECTION = InventoryLevelsProjection()


def stock_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /inventory/{sku}`` returns: the same fields as the stock commands."""
    return {name: row[name] for name in STOCK_FIELDS}
