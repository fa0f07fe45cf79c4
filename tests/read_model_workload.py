"""Random workloads for the read-model property tests: orders, saga outcomes, stock moves.

A workload is plain data that hypothesis draws. ``run_workload`` plays it on an
``OrdersApplication`` one commit at a time, the way the saga and the item workers
would, and returns every commit's tip in commit order. ``delivery_schedule`` turns
those tips into what a stream consumer might receive: each commit at least once
unless a later commit of the stream follows it, duplicates anywhere after the
first delivery, streams interleaved in any order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from application.orders import OrdersApplication
from application.ports import Tip
from domain.inventory import InventoryItem, inventory_id
from domain.order import Order, OrderLine

SKUS = ("MUG", "TEA", "PEN", "CUP")
CUSTOMERS = ("c-1", "c-2", "c-3")
OUTCOMES = (
    "placed",
    "reserved",
    "unavailable",
    "paid",
    "fulfilled",
    "cancelled_placed",
    "cancelled_paid",
    "failed_paid",
)


@dataclass(frozen=True)
class PlannedOrder:
    customer: str
    currency: str
    lines: tuple[tuple[str, int, int], ...]
    outcome: str
    attention: str  # "none", "flagged", "resolved"


@dataclass(frozen=True)
class Workload:
    stock: tuple[int, ...]
    orders: tuple[PlannedOrder, ...]


@st.composite
def planned_orders(draw: st.DrawFn) -> PlannedOrder:
    skus = draw(st.lists(st.sampled_from(SKUS), min_size=1, max_size=3, unique=True))
    lines = tuple((sku, draw(st.integers(1, 3)), draw(st.integers(0, 2000))) for sku in skus)
    return PlannedOrder(
        customer=draw(st.sampled_from(CUSTOMERS)),
        currency=draw(st.sampled_from(("USD", "EUR"))),
        lines=lines,
        outcome=draw(st.sampled_from(OUTCOMES)),
        attention=draw(st.sampled_from(("none", "none", "flagged", "resolved"))),
    )


workloads = st.builds(
    Workload,
    stock=st.tuples(*(st.integers(0, 6) for _ in SKUS)),
    orders=st.lists(planned_orders(), min_size=1, max_size=8).map(tuple),
)


@dataclass
class Recorded:
    """Every commit's tip, per stream, in commit order."""

    tips: dict[str, list[Tip]] = field(default_factory=dict)

    def add(self, app: OrdersApplication, stream_id: Any) -> None:
        tip = app.recorder.select_tip(stream_id)
        assert tip is not None
        self.tips.setdefault(str(stream_id), []).append(tip)

    @property
    def commits(self) -> int:
        return sum(len(tips) for tips in self.tips.values())


class WorkloadRunner:
    """Plays a workload step by step; ``steps()`` yields one commit per call."""

    def __init__(self, app: OrdersApplication, workload: Workload) -> None:
        self.app = app
        self.workload = workload
        self.recorded = Recorded()

    def _save(self, aggregate: Any) -> None:
        self.app.save(aggregate)
        self.recorded.add(self.app, aggregate.id)

    def _inventory(self, sku: str) -> InventoryItem:
        item: InventoryItem = self.app.repository.get(inventory_id(sku))
        return item

    def _order(self, order_id: Any) -> Order:
        order: Order = self.app.repository.get(order_id)
        return order

    def steps(self) -> list[Callable[[], None]]:
        """Return the workload as a list of commits to run in order."""
        steps: list[Callable[[], None]] = []
        for sku, quantity in zip(SKUS, self.workload.stock, strict=True):
            steps.append(self._register_step(sku, quantity))
        for planned in self.workload.orders:
            steps.extend(self._order_steps(planned))
        return steps

    def _register_step(self, sku: str, quantity: int) -> Callable[[], None]:
        def step() -> None:
            item = InventoryItem.register(sku)
            if quantity:
                item.add_stock(quantity)
            self._save(item)

        return step

    def _order_steps(self, planned: PlannedOrder) -> list[Callable[[], None]]:
        state: dict[str, Any] = {}
        steps: list[Callable[[], None]] = []

        def place() -> None:
            order = Order.place(
                customer_id=planned.customer,
                currency=planned.currency,
                payment_method="pm_card_visa",
                lines=[OrderLine(sku, quantity, price) for sku, quantity, price in planned.lines],
            )
            state["id"] = order.id
            self._save(order)

        steps.append(place)
        if planned.outcome in ("placed", "cancelled_placed"):
            if planned.outcome == "cancelled_placed":
                steps.append(lambda: self._change(state, lambda o: o.cancel("customer")))
            steps.extend(self._attention_steps(planned, state))
            return steps

        for index, (sku, quantity, _) in enumerate(planned.lines):
            short = planned.outcome == "unavailable" and index == len(planned.lines) - 1
            steps.append(self._reserve_step(state, sku, quantity, short))
        if planned.outcome == "unavailable":
            steps.append(lambda: self._change(state, lambda o: o.fail("out of stock")))
            steps.extend(self._release_steps(state, planned, skip_last=True))
        elif planned.outcome != "reserved":
            steps.append(lambda: self._change(state, lambda o: o.record_payment("pi_1")))
            if planned.outcome == "fulfilled":
                steps.append(lambda: self._change(state, lambda o: o.mark_fulfilled("sh_1")))
                steps.extend(self._ship_steps(state, planned))
            elif planned.outcome == "cancelled_paid":
                steps.append(lambda: self._change(state, lambda o: o.cancel("customer")))
                steps.extend(self._release_steps(state, planned, skip_last=False))
            elif planned.outcome == "failed_paid":
                steps.append(lambda: self._change(state, lambda o: o.fail("carrier refused")))
                steps.extend(self._release_steps(state, planned, skip_last=False))
        steps.extend(self._attention_steps(planned, state))
        return steps

    def _change(self, state: dict[str, Any], change: Callable[[Order], Any]) -> None:
        order = self._order(state["id"])
        change(order)
        self._save(order)

    def _reserve_step(
        self, state: dict[str, Any], sku: str, quantity: int, short: bool
    ) -> Callable[[], None]:
        def step() -> None:
            reserved = False
            if not short:
                item = self._inventory(sku)
                item.add_stock(quantity)  # keep the planned outcome independent of earlier orders
                reserved = item.reserve(str(state["id"]), quantity)
                self._save(item)
            self._change(state, lambda o: o.record_line_result(sku, reserved=reserved, available=0))

        return step

    def _release_steps(
        self, state: dict[str, Any], planned: PlannedOrder, *, skip_last: bool
    ) -> list[Callable[[], None]]:
        lines = planned.lines[:-1] if skip_last else planned.lines
        return [self._stock_step(state, sku, "release") for sku, _, _ in lines]

    def _ship_steps(self, state: dict[str, Any], planned: PlannedOrder) -> list[Callable[[], None]]:
        return [self._stock_step(state, sku, "ship") for sku, _, _ in planned.lines]

    def _stock_step(self, state: dict[str, Any], sku: str, action: str) -> Callable[[], None]:
        def step() -> None:
            item = self._inventory(sku)
            getattr(item, action)(str(state["id"]))
            self._save(item)

        return step

    def _attention_steps(
        self, planned: PlannedOrder, state: dict[str, Any]
    ) -> list[Callable[[], None]]:
        if planned.attention == "none":
            return []
        steps = [lambda: self._change(state, lambda o: o.require_attention("refund stuck"))]
        if planned.attention == "resolved":
            steps.append(lambda: self._change(state, lambda o: o.resolve_attention()))
        return steps


def run_workload(app: OrdersApplication, workload: Workload) -> Recorded:
    runner = WorkloadRunner(app, workload)
    for step in runner.steps():
        step()
    return runner.recorded


@dataclass(frozen=True)
class Delivery:
    stream_id: str
    commit: int


def delivery_schedule(recorded: Recorded, rng: random.Random) -> list[Delivery]:
    """Return what a consumer might receive. Per stream the first deliveries keep commit
    order. A commit may be dropped if a later one of its stream follows, and may be
    delivered again at any later point. Streams interleave freely."""
    per_stream: dict[str, list[Delivery]] = {}
    for stream_id, tips in recorded.tips.items():
        deliveries: list[Delivery] = []
        last = len(tips) - 1
        for commit in range(len(tips)):
            roll = rng.random()
            if roll < 0.15 and commit != last:
                continue  # dropped: the next commit's delivery finds a gap
            deliveries.append(Delivery(stream_id, commit))
            if roll > 0.75:
                deliveries.append(Delivery(stream_id, commit))  # redelivered
        # Move each second copy to a random later point of the stream's sequence.
        for index in range(len(deliveries) - 1, 0, -1):
            if deliveries[index] == deliveries[index - 1]:
                duplicate = deliveries.pop(index)
                deliveries.insert(rng.randint(index, len(deliveries)), duplicate)
        per_stream[stream_id] = deliveries
    merged: list[Delivery] = []
    queues = {stream_id: list(items) for stream_id, items in per_stream.items() if items}
    while queues:
        stream_id = rng.choice(sorted(queues))
        merged.append(queues[stream_id].pop(0))
        if not queues[stream_id]:
            del queues[stream_id]
    return merged


def tip_for(recorded: Recorded, delivery: Delivery) -> Tip:
    return recorded.tips[delivery.stream_id][delivery.commit]


def streams_of(app: OrdersApplication, stream_ids: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """(stream id, every domain event) for the replay oracle."""
    return [(stream_id, list(app.events.get(stream_id))) for stream_id in stream_ids]
