"""The InventoryItem aggregate: stock on hand for one sku and who has reserved it."""

from __future__ import annotations

import uuid
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.errors import DomainError
from domain.order import SKU_PATTERN

MAX_STOCK = 1_000_000_000
_INVENTORY_NAMESPACE = uuid.UUID("6b1c53f4-51d2-4b8e-9a43-0f3a3c2b7d10")


class InvalidStockError(DomainError):
    """A stock command would make a count negative or out of range."""


def inventory_id(sku: str) -> UUID:
    """Return the stream id of a sku's inventory: the same sku always maps to the same id."""
    return uuid.uuid5(_INVENTORY_NAMESPACE, sku)


def _require_quantity(quantity: int, field: str, minimum: int) -> int:
    if isinstance(quantity, bool) or not minimum <= quantity <= MAX_STOCK:
        raise InvalidStockError(
            f"{field} {quantity!r} is out of range {minimum}..{MAX_STOCK}", field=field
        )
    return quantity


class InventoryItem(Aggregate):
    """Stock of one sku. Reservations are held per order, so each can be released once."""

    class Registered(Aggregate.Created):
        sku: str

    class StockAdded(Aggregate.Event):
        quantity: int

    class StockCounted(Aggregate.Event):
        on_hand: int

    class StockReserved(Aggregate.Event):
        order_id: str
        quantity: int

    class ReservationReleased(Aggregate.Event):
        order_id: str
        quantity: int

    class ReservationShipped(Aggregate.Event):
        order_id: str
        quantity: int

    @staticmethod
    def create_id(sku: str) -> UUID:
        return inventory_id(sku)

    @event(Registered)
    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.on_hand = 0
        self.reservations: dict[str, int] = {}

    @classmethod
    def register(cls, sku: str) -> InventoryItem:
        if not SKU_PATTERN.fullmatch(sku):
            raise InvalidStockError(f"sku {sku!r} is invalid", field="sku")
        return cls(sku=sku)

    @property
    def reserved(self) -> int:
        return sum(self.reservations.values())

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved

    def add_stock(self, quantity: int) -> None:
        _require_quantity(quantity, "quantity", 1)
        if self.on_hand + quantity > MAX_STOCK:
            raise InvalidStockError(
                f"sku {self.sku}: {self.on_hand} on hand plus {quantity} exceeds {MAX_STOCK}",
                field="quantity",
            )
        self._record_stock_added(quantity=quantity)

    @event(StockAdded)
    def _record_stock_added(self, quantity: int) -> None:
        self.on_hand += quantity

    def count_stock(self, on_hand: int) -> None:
        """Set stock on hand after a count; it cannot drop below what is reserved."""
        _require_quantity(on_hand, "on_hand", 0)
        if on_hand < self.reserved:
            raise InvalidStockError(
                f"sku {self.sku}: {self.reserved} units are reserved, so on_hand cannot be "
                f"set to {on_hand}; release reservations first",
                field="on_hand",
            )
        self._record_stock_counted(on_hand=on_hand)

    @event(StockCounted)
    def _record_stock_counted(self, on_hand: int) -> None:
        self.on_hand = on_hand

    def reserve(self, order_id: str, quantity: int) -> bool:
        """Reserve stock for an order; return False if not enough is available.

        Reserving again for the same order is a no-op that returns True.
        """
        _require_quantity(quantity, "quantity", 1)
        if order_id in self.reservations:
            return True
        if quantity > self.available:
            return False
        self._record_reserved(order_id=order_id, quantity=quantity)
        return True

    @event(StockReserved)
    def _record_reserved(self, order_id: str, quantity: int) -> None:
        self.reservations[order_id] = quantity

    def release(self, order_id: str) -> bool:
        """Release an order's reservation; return False if it has none."""
        quantity = self.reservations.get(order_id)
        if quantity is None:
            return False
        self._record_released(order_id=order_id, quantity=quantity)
        return True

    @event(ReservationReleased)
    def _record_released(self, order_id: str, quantity: int) -> None:
        del self.reservations[order_id]

    def ship(self, order_id: str) -> bool:
        """Take an order's reserved units out of stock; return False if it has no reservation."""
        quantity = self.reservations.get(order_id)
        if quantity is None:
            return False
        self._record_shipped(order_id=order_id, quantity=quantity)
        return True

    @event(ReservationShipped)
    def _record_shipped(self, order_id: str, quantity: int) -> None:
        del self.reservations[order_id]
        self.on_hand -= quantity
