"""The Order aggregate: what a customer bought, for how much, and how far it has got."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.errors import InvalidOrderError, InvalidTransitionError
from domain.money import require_currency

MAX_LINES = 100
MAX_QUANTITY = 10_000
MAX_UNIT_PRICE = 100_000_000  # one million in a two-digit currency
MAX_ID_LENGTH = 128
MAX_PAYMENT_METHOD_LENGTH = 255
MAX_REASON_LENGTH = 500
SKU_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")


class OrderStatus(StrEnum):
    PLACED = "PLACED"
    RESERVED = "RESERVED"
    PAID = "PAID"
    FULFILLED = "FULFILLED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


LINE_RESERVED = "reserved"
LINE_UNAVAILABLE = "unavailable"

FINAL_STATUSES = frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.FAILED})


@dataclass(frozen=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: int

    @property
    def line_total(self) -> int:
        return self.quantity * self.unit_price

    def as_dict(self) -> dict[str, Any]:
        return {"sku": self.sku, "quantity": self.quantity, "unit_price": self.unit_price}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderLine:
        return cls(sku=data["sku"], quantity=data["quantity"], unit_price=data["unit_price"])


def validate_lines(lines: Iterable[OrderLine]) -> tuple[OrderLine, ...]:
    """Return the lines as a tuple after checking every rule; raise on the first broken one."""
    checked = tuple(lines)
    if not 1 <= len(checked) <= MAX_LINES:
        raise InvalidOrderError(
            f"an order has 1 to {MAX_LINES} lines, not {len(checked)}", field="lines"
        )
    seen: set[str] = set()
    for index, line in enumerate(checked):
        where = f"lines.{index}"
        if not SKU_PATTERN.fullmatch(line.sku):
            raise InvalidOrderError(
                f"sku {line.sku!r} is invalid: use 1 to 64 letters, digits, '.', '_' or '-'",
                field=f"{where}.sku",
            )
        if line.sku in seen:
            raise InvalidOrderError(
                f"sku {line.sku!r} appears on more than one line; combine the quantities",
                field=f"{where}.sku",
            )
        seen.add(line.sku)
        if isinstance(line.quantity, bool) or not 1 <= line.quantity <= MAX_QUANTITY:
            raise InvalidOrderError(
                f"quantity {line.quantity!r} is out of range 1..{MAX_QUANTITY}",
                field=f"{where}.quantity",
            )
        if isinstance(line.unit_price, bool) or not 0 <= line.unit_price <= MAX_UNIT_PRICE:
            raise InvalidOrderError(
                f"unit_price {line.unit_price!r} is out of range 0..{MAX_UNIT_PRICE} minor units",
                field=f"{where}.unit_price",
            )
    return checked


def _require_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidOrderError(
            f"{field} {value!r} is invalid: use 1 to {MAX_ID_LENGTH} letters, digits "
            "or '.', '_', ':', '@', '-'",
            field=field,
        )
    return value


def _require_reason(reason: str) -> str:
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidOrderError(
            f"a reason has 1 to {MAX_REASON_LENGTH} characters, not {len(reason)}",
            field="reason",
        )
    return reason


class Order(Aggregate):
    """A customer's order. Its total is computed from the lines, never taken from input."""

    class OrderPlaced(Aggregate.Created):
        customer_id: str
        currency: str
        payment_method: str
        lines: list[dict[str, Any]]
        total: int

    class LineReserved(Aggregate.Event):
        sku: str
        quantity: int

    class LineUnavailable(Aggregate.Event):
        sku: str
        requested: int
        available: int

    class ItemsReserved(Aggregate.Event):
        pass

    class ReservationFailed(Aggregate.Event):
        unavailable_skus: list[str]

    class PaymentCaptured(Aggregate.Event):
        payment_id: str

    class OrderFulfilled(Aggregate.Event):
        shipment_id: str

    class OrderCancelled(Aggregate.Event):
        reason: str

    class OrderFailed(Aggregate.Event):
        reason: str

    class AttentionRequired(Aggregate.Event):
        reason: str

    class AttentionResolved(Aggregate.Event):
        pass

    @event(OrderPlaced)
    def __init__(
        self,
        customer_id: str,
        currency: str,
        payment_method: str,
        lines: list[dict[str, Any]],
        total: int,
    ) -> None:
        self.customer_id = customer_id
        self.currency = currency
        self.payment_method = payment_method
        self._lines = [OrderLine.from_dict(line) for line in lines]
        self.total = total
        self._status = OrderStatus.PLACED.value
        self.payment_id: str | None = None
        self.shipment_id: str | None = None
        self.failure_reason: str | None = None
        self.line_results: dict[str, str] = {}
        self.needs_attention = False
        self.attention_reason: str | None = None

    @classmethod
    def place(
        cls,
        *,
        customer_id: str,
        currency: str,
        payment_method: str,
        lines: Iterable[OrderLine],
    ) -> Order:
        """Validate a new order and record ``OrderPlaced`` with the computed total."""
        checked_lines = validate_lines(lines)
        _require_id(customer_id, "customer_id")
        require_currency(currency)
        if not 1 <= len(payment_method) <= MAX_PAYMENT_METHOD_LENGTH:
            raise InvalidOrderError(
                f"payment_method has 1 to {MAX_PAYMENT_METHOD_LENGTH} characters",
                field="payment_method",
            )
        total = sum(line.line_total for line in checked_lines)
        return cls(
            customer_id=customer_id,
            currency=currency,
            payment_method=payment_method,
            lines=[line.as_dict() for line in checked_lines],
            total=total,
        )

    # Snapshots store state as JSON, which turns tuples into lists and enums into
    # strings, so the attributes hold those plain types and these properties convert.
    @property
    def lines(self) -> tuple[OrderLine, ...]:
        return tuple(self._lines)

    @property
    def status(self) -> OrderStatus:
        return OrderStatus(self._status)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def _require_status(self, command: str, *allowed: OrderStatus) -> None:
        if self.status not in allowed:
            expected = ", ".join(status.value for status in allowed)
            raise InvalidTransitionError(
                f"order {self.id} is {self.status.value}; {command} needs one of: {expected}"
            )

    @property
    def reserved_skus(self) -> list[str]:
        return [sku for sku, result in self.line_results.items() if result == LINE_RESERVED]

    @property
    def unavailable_skus(self) -> list[str]:
        return [sku for sku, result in self.line_results.items() if result == LINE_UNAVAILABLE]

    @property
    def all_lines_have_results(self) -> bool:
        return len(self.line_results) == len(self._lines)

    def line(self, sku: str) -> OrderLine:
        for line in self._lines:
            if line.sku == sku:
                return line
        raise InvalidOrderError(f"order {self.id} has no line for sku {sku!r}", field="sku")

    def record_line_result(self, sku: str, *, reserved: bool, available: int) -> bool:
        """Record whether stock was reserved for one line; return False if already recorded.

        The last line's result also records the outcome for the whole order:
        ``ItemsReserved`` when every line was reserved, else ``ReservationFailed``.
        """
        line = self.line(sku)
        if sku in self.line_results:
            return False
        self._require_status("record_line_result", OrderStatus.PLACED)
        if reserved:
            self._record_line_reserved(sku=sku, quantity=line.quantity)
        else:
            self._record_line_unavailable(sku=sku, requested=line.quantity, available=available)

        if self.all_lines_have_results:
            if self.unavailable_skus:
                self._record_reservation_failed(unavailable_skus=self.unavailable_skus)
            else:
                self._record_items_reserved()
        return True

    @event(LineReserved)
    def _record_line_reserved(self, sku: str, quantity: int) -> None:
        self.line_results[sku] = LINE_RESERVED

    @event(LineUnavailable)
    def _record_line_unavailable(self, sku: str, requested: int, available: int) -> None:
        self.line_results[sku] = LINE_UNAVAILABLE

    @event(ItemsReserved)
    def _record_items_reserved(self) -> None:
        self._status = OrderStatus.RESERVED.value

    @event(ReservationFailed)
    def _record_reservation_failed(self, unavailable_skus: list[str]) -> None:
        pass

    def record_payment(self, payment_id: str) -> None:
        self._require_status("record_payment", OrderStatus.RESERVED)
        self._record_payment(_require_id(payment_id, "payment_id"))

    @event(PaymentCaptured)
    def _record_payment(self, payment_id: str) -> None:
        self.payment_id = payment_id
        self._status = OrderStatus.PAID.value

    def mark_fulfilled(self, shipment_id: str) -> None:
        self._require_status("mark_fulfilled", OrderStatus.PAID)
        self._record_fulfilled(_require_id(shipment_id, "shipment_id"))

    @event(OrderFulfilled)
    def _record_fulfilled(self, shipment_id: str) -> None:
        self.shipment_id = shipment_id
        self._status = OrderStatus.FULFILLED.value

    def cancel(self, reason: str) -> None:
        """Cancel an order that has not shipped; shipment makes it ``FULFILLED``."""
        self._require_status("cancel", OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID)
        self._record_cancelled(_require_reason(reason))

    @event(OrderCancelled)
    def _record_cancelled(self, reason: str) -> None:
        self.failure_reason = reason
        self._status = OrderStatus.CANCELLED.value

    def fail(self, reason: str) -> None:
        self._require_status("fail", OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID)
        self._record_failed(_require_reason(reason))

    @event(OrderFailed)
    def _record_failed(self, reason: str) -> None:
        self.failure_reason = reason
        self._status = OrderStatus.FAILED.value

    def require_attention(self, reason: str) -> None:
        """Flag the order for an operator: a compensation failed after its retries."""
        if self.needs_attention and self.attention_reason == reason:
            return
        self._record_attention_required(_require_reason(reason))

    @event(AttentionRequired)
    def _record_attention_required(self, reason: str) -> None:
        self.needs_attention = True
        self.attention_reason = reason

    def resolve_attention(self) -> None:
        if self.needs_attention:
            self._record_attention_resolved()

    @event(AttentionResolved)
    def _record_attention_resolved(self) -> None:
        self.needs_attention = False
        self.attention_reason = None
