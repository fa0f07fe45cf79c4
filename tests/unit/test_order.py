"""Unit tests of the Order aggregate: validation, the total, status transitions, snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.eventstore.memory import MemoryTipRecorder
from application.eventsourced import TipApplication
from domain.errors import InvalidOrderError, InvalidTransitionError
from domain.order import (
    LINE_RESERVED,
    LINE_UNAVAILABLE,
    MAX_LINES,
    MAX_QUANTITY,
    MAX_UNIT_PRICE,
    Order,
    OrderLine,
    OrderStatus,
)

SKUS = ("MUG-RED", "TEA-GREEN")


def place(lines: list[OrderLine] | None = None, currency: str = "USD") -> Order:
    if lines is None:
        lines = [OrderLine(SKUS[0], 2, 1250), OrderLine(SKUS[1], 1, 800)]
    return Order.place(
        customer_id="c-1", currency=currency, payment_method="pm_card_visa", lines=lines
    )


def numbered_lines(count: int) -> list[OrderLine]:
    return [OrderLine(f"SKU-{number}", 1, 100) for number in range(count)]


def reserve_every_line(order: Order) -> None:
    for line in order.lines:
        order.record_line_result(line.sku, reserved=True, available=line.quantity)


def pay(order: Order) -> None:
    order.record_payment("pi_123")


def fulfil(order: Order) -> None:
    order.mark_fulfilled("shp_123")


def cancel(order: Order) -> None:
    order.cancel("the customer changed their mind")


def fail(order: Order) -> None:
    order.fail("payment declined")


# The commands that move an order between statuses, and the statuses each accepts.
COMMANDS: dict[str, Callable[[Order], None]] = {
    "reserve": reserve_every_line,
    "pay": pay,
    "fulfil": fulfil,
    "cancel": cancel,
    "fail": fail,
}
ACCEPTED_IN = {
    "reserve": {OrderStatus.PLACED},
    "pay": {OrderStatus.RESERVED},
    "fulfil": {OrderStatus.PAID},
    "cancel": {OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID},
    "fail": {OrderStatus.PLACED, OrderStatus.RESERVED, OrderStatus.PAID},
}
STATUS_AFTER = {
    "reserve": OrderStatus.RESERVED,
    "pay": OrderStatus.PAID,
    "fulfil": OrderStatus.FULFILLED,
    "cancel": OrderStatus.CANCELLED,
    "fail": OrderStatus.FAILED,
}
# The commands that bring a new order to each status.
PATH_TO = {
    OrderStatus.PLACED: [],
    OrderStatus.RESERVED: ["reserve"],
    OrderStatus.PAID: ["reserve", "pay"],
    OrderStatus.FULFILLED: ["reserve", "pay", "fulfil"],
    OrderStatus.CANCELLED: ["cancel"],
    OrderStatus.FAILED: ["fail"],
}
ACCEPTED = [
    pytest.param(status, name, id=f"{name}-in-{status.value}")
    for name, statuses in ACCEPTED_IN.items()
    for status in sorted(statuses)
]


def lines_have_results(status: OrderStatus) -> bool:
    return "reserve" in PATH_TO[status]


# A repeated result for a line is ignored rather than rejected, because queues
# redeliver messages. So "reserve" is rejected only where no line has a result yet.
REJECTED = [
    pytest.param(status, name, id=f"{name}-in-{status.value}")
    for name in COMMANDS
    for status in OrderStatus
    if status not in ACCEPTED_IN[name] and not (name == "reserve" and lines_have_results(status))
]


def order_in(status: OrderStatus) -> Order:
    order = place()
    for name in PATH_TO[status]:
        COMMANDS[name](order)
    return order


# Placing an order --------------------------------------------------------------------

line_strategy = st.builds(
    OrderLine,
    sku=st.from_regex(r"[A-Z0-9][A-Z0-9._-]{0,15}", fullmatch=True),
    quantity=st.integers(min_value=1, max_value=MAX_QUANTITY),
    unit_price=st.integers(min_value=0, max_value=MAX_UNIT_PRICE),
)


# No deadline: a slow example on a busy machine is not a failure of the total.
@settings(deadline=None)
@given(lines=st.lists(line_strategy, min_size=1, max_size=20, unique_by=lambda line: line.sku))
def test_total_is_sum_of_line_totals(lines: list[OrderLine]) -> None:
    order = place(lines)

    assert order.total == sum(line.quantity * line.unit_price for line in lines)


def test_placing_records_the_lines() -> None:
    lines = [OrderLine(SKUS[0], 3, 499), OrderLine(SKUS[1], 1, 0)]

    assert place(lines).lines == tuple(lines)


def test_new_order_is_placed() -> None:
    assert place().status == OrderStatus.PLACED


@pytest.mark.parametrize("count", [1, MAX_LINES])
def test_order_accepts_1_to_100_lines(count: int) -> None:
    assert len(place(numbered_lines(count)).lines) == count


@pytest.mark.parametrize("count", [0, MAX_LINES + 1])
def test_line_count_outside_1_to_100_is_rejected(count: int) -> None:
    with pytest.raises(InvalidOrderError) as raised:
        place(numbered_lines(count))

    assert raised.value.field == "lines"


@pytest.mark.parametrize("quantity", [0, -1, MAX_QUANTITY + 1, True])
def test_quantity_out_of_range_is_rejected(quantity: int) -> None:
    with pytest.raises(InvalidOrderError) as raised:
        place([OrderLine(SKUS[0], 1, 100), OrderLine(SKUS[1], quantity, 100)])

    assert raised.value.field == "lines.1.quantity"


@pytest.mark.parametrize("unit_price", [-1, MAX_UNIT_PRICE + 1])
def test_unit_price_out_of_range_is_rejected(unit_price: int) -> None:
    with pytest.raises(InvalidOrderError) as raised:
        place([OrderLine(SKUS[0], 1, unit_price)])

    assert raised.value.field == "lines.0.unit_price"


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", ""])
def test_unknown_currency_is_rejected(currency: str) -> None:
    with pytest.raises(InvalidOrderError) as raised:
        place(currency=currency)

    assert raised.value.field == "currency"


def test_duplicate_sku_is_rejected() -> None:
    with pytest.raises(InvalidOrderError) as raised:
        place([OrderLine(SKUS[0], 1, 100), OrderLine(SKUS[0], 2, 100)])

    assert raised.value.field == "lines.1.sku"


# Status transitions ------------------------------------------------------------------


@pytest.mark.parametrize(("status", "command"), ACCEPTED)
def test_accepted_command_changes_status(status: OrderStatus, command: str) -> None:
    order = order_in(status)

    COMMANDS[command](order)

    assert order.status == STATUS_AFTER[command]


@pytest.mark.parametrize(("status", "command"), REJECTED)
def test_command_in_wrong_status_is_rejected(status: OrderStatus, command: str) -> None:
    order = order_in(status)

    with pytest.raises(InvalidTransitionError):
        COMMANDS[command](order)


@pytest.mark.parametrize(("status", "command"), REJECTED)
def test_rejected_command_records_no_event(status: OrderStatus, command: str) -> None:
    order = order_in(status)
    version = order.version

    with pytest.raises(InvalidTransitionError):
        COMMANDS[command](order)

    assert order.version == version


def test_one_reserved_line_keeps_order_placed() -> None:
    order = place()

    order.record_line_result(SKUS[0], reserved=True, available=5)

    assert order.status == OrderStatus.PLACED


def test_unavailable_line_prevents_reservation() -> None:
    order = place()

    order.record_line_result(SKUS[0], reserved=True, available=5)
    order.record_line_result(SKUS[1], reserved=False, available=0)

    assert order.status == OrderStatus.PLACED
    assert order.line_results == {SKUS[0]: LINE_RESERVED, SKUS[1]: LINE_UNAVAILABLE}


def test_repeated_line_result_records_nothing() -> None:
    order = place()
    order.record_line_result(SKUS[0], reserved=True, available=5)
    version = order.version

    order.record_line_result(SKUS[0], reserved=False, available=0)

    assert order.version == version


def test_result_for_unknown_sku_is_rejected() -> None:
    with pytest.raises(InvalidOrderError):
        place().record_line_result("NOT-ORDERED", reserved=True, available=1)


# Snapshots through TipApplication on the in-memory store ------------------------------


@pytest.fixture
def app() -> Iterator[TipApplication]:
    application = TipApplication(env={"PERSISTENCE_MODULE": "adapters.eventstore.memory"})
    yield application
    application.close()


@pytest.fixture
def paid_order(app: TipApplication) -> Order:
    order = order_in(OrderStatus.PAID)
    app.save(order)
    return order


def test_saving_puts_a_snapshot_in_the_tip(app: TipApplication, paid_order: Order) -> None:
    assert isinstance(app.recorder, MemoryTipRecorder)
    tip = app.recorder.select_tip(paid_order.id)

    assert tip is not None
    assert tip.snapshot is not None


@pytest.mark.parametrize(
    "attribute",
    [
        "lines",
        "status",
        "total",
        "currency",
        "customer_id",
        "payment_id",
        "line_results",
        "version",
    ],
)
def test_snapshot_round_trip_keeps_order(
    app: TipApplication, paid_order: Order, attribute: str
) -> None:
    loaded: Any = app.repository.get(paid_order.id)

    assert getattr(loaded, attribute) == getattr(paid_order, attribute)
