"""Operator commands and queries on stock, one InventoryItem stream per sku."""

from __future__ import annotations

from typing import Any

from eventsourcing.application import AggregateNotFoundError

from application.errors import VersionConflictError
from application.eventsourced import TipApplication
from domain.inventory import InventoryItem, inventory_id

MAX_CONFLICT_RETRIES = 10


class SkuNotFoundError(LookupError):
    def __init__(self, sku: str) -> None:
        super().__init__(
            f"sku {sku!r} has no stock level: restock it, and allow a second after a "
            "restock for the level to appear"
        )
        self.sku = sku


def stock_level(item: InventoryItem) -> dict[str, Any]:
    return {
        "sku": item.sku,
        "on_hand": item.on_hand,
        "reserved": item.reserved,
        "available": item.available,
        "version": item.version,
    }


def _load_or_register(app: TipApplication, sku: str) -> InventoryItem:
    try:
        item: InventoryItem = app.repository.get(inventory_id(sku))
    except AggregateNotFoundError:
        return InventoryItem.register(sku)
    return item


def restock(app: TipApplication, sku: str, quantity: int) -> dict[str, Any]:
    """Add ``quantity`` units; the first restock of a sku creates its inventory."""
    for _ in range(MAX_CONFLICT_RETRIES):
        item = _load_or_register(app, sku)
        item.add_stock(quantity)
        try:
            app.save(item)
        except VersionConflictError:
            continue  # a reservation landed meanwhile; add on top of it
        return stock_level(item)
    raise VersionConflictError(str(inventory_id(sku)), -1, None, None)


def count_stock(app: TipApplication, sku: str, on_hand: int) -> dict[str, Any]:
    """Set the units on hand after a stock count."""
    for _ in range(MAX_CONFLICT_RETRIES):
        item = _load_or_register(app, sku)
        item.count_stock(on_hand)
        try:
            app.save(item)
        except VersionConflictError:
            continue
        return stock_level(item)
    raise VersionConflictError(str(inventory_id(sku)), -1, None, None)


def get_stock(app: TipApplication, sku: str) -> dict[str, Any]:
    try:
        item: InventoryItem = app.repository.get(inventory_id(sku), fresh=True)
    except AggregateNotFoundError:
        raise SkuNotFoundError(sku) from None
    return stock_level(item)
