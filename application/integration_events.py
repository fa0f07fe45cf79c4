"""Turn committed domain events into integration events for EventBridge.

Source names the bounded context (``orders.order``, ``orders.inventory``,
``orders.saga``), detail-type is the event's name, and the detail carries the
stream id, the version and the event's data, with credentials redacted. The
stream's tip is the outbox: every committed event is published from the
table's stream, never written twice by the command that produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from application.orders import history_entry
from domain.inventory import InventoryItem
from domain.order import Order
from domain.saga import OrderSaga

MAX_ENTRY_BYTES = 256 * 1024  # EventBridge's limit for one PutEvents entry

SOURCES: dict[type[Any], str] = {
    Order: "orders.order",
    InventoryItem: "orders.inventory",
    OrderSaga: "orders.saga",
}


@dataclass(frozen=True)
class IntegrationEvent:
    source: str
    detail_type: str
    detail: dict[str, Any]
    time: str

    def detail_json(self) -> str:
        return json.dumps(self.detail, separators=(",", ":"), sort_keys=True)


def source_of(event: Any) -> str | None:
    """Return the source of an event's aggregate, or None if the aggregate is not published."""
    event_class = type(event)
    owner_name = event_class.__qualname__.split(".", 1)[0]
    for aggregate_class, source in SOURCES.items():
        same_module = event_class.__module__ == aggregate_class.__module__
        if same_module and owner_name == aggregate_class.__name__:
            return source
    return None


def to_integration_event(event: Any, aggregate: Any | None = None) -> IntegrationEvent | None:
    """Map a domain event to an integration event, or None for an unpublished aggregate.

    ``aggregate`` is the state after the commit (the tip's snapshot). It supplies
    the order id of saga events and the sku of inventory events.
    """
    source = source_of(event)
    if source is None:
        return None
    entry = history_entry(event)
    stream_id = str(event.originator_id)
    detail: dict[str, Any] = {
        "stream_id": stream_id,
        "version": entry["version"],
        "occurred_at": entry["occurred_at"],
        "data": entry["data"],
    }
    if source == "orders.order":
        detail["order_id"] = stream_id
    elif source == "orders.saga":
        detail["order_id"] = entry["data"].get("order_id") or getattr(aggregate, "order_id", None)
    elif source == "orders.inventory":
        detail["sku"] = entry["data"].get("sku") or getattr(aggregate, "sku", None)
    return IntegrationEvent(
        source=source, detail_type=entry["type"], detail=detail, time=entry["occurred_at"]
    )
