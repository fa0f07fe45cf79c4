"""Load orders onto DynamoDB Local through the application, with their saga outcomes.

Each order goes through the same aggregates and commits as in production. It is
placed; as the item workers would, each line reserves stock on the sku's
InventoryItem and records the result on the order, one commit each. Then come
payment, shipment and the stock shipment, or a cancellation or failure that
releases the stock. The saga's decisions are drawn
at random instead of being made by the saga itself, because the saga waits on
EventBridge, SQS, Stripe and the carrier: through the whole local stack 20,000
orders take hours, directly they take minutes. The commits, and so the stream
and the event log, are the ones the saga would produce; the saga's own streams
are not written, and no read model folds them.

The mix (fixed seed): 70 % fulfilled, 6 % failed for a missing sku, 5 % failed
for a declined card, 6 % cancelled after payment, 4 % cancelled before
reservation, 5 % paid and 4 % placed (still in progress); 3 % of orders are
flagged for an operator, a third of them resolved. 4,000 customers, 200 skus,
1 to 3 lines, 80 % USD and 20 % EUR.

Usage, onto the tables of a running ``orders dev`` or any DynamoDB Local::

    .venv/bin/python -m bench.load_orders --orders 20000
    .venv/bin/python -m bench.load_orders --endpoint-url http://127.0.0.1:8000 --orders 1000
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from application.errors import VersionConflictError
from application.orders import OrdersApplication
from domain.inventory import InventoryItem, inventory_id
from domain.order import Order, OrderLine

DEFAULT_ORDERS = 20_000
DEFAULT_THREADS = 8
CUSTOMERS = 4_000
SKUS = tuple(f"SKU-{index:04d}" for index in range(200))
INITIAL_STOCK = 1_000_000
MAX_CONFLICT_RETRIES = 20
OUTCOMES = (
    ("fulfilled", 0.70),
    ("out_of_stock", 0.06),
    ("declined", 0.05),
    ("cancelled_paid", 0.06),
    ("cancelled_placed", 0.04),
    ("paid", 0.05),
    ("placed", 0.04),
)


@dataclass(frozen=True)
class PlannedOrder:
    customer_id: str
    currency: str
    lines: tuple[OrderLine, ...]
    outcome: str
    attention: str  # "none", "flagged" or "resolved"


def plan_orders(count: int, seed: int) -> list[PlannedOrder]:
    rng = random.Random(seed)
    names = [name for name, _ in OUTCOMES]
    weights = [weight for _, weight in OUTCOMES]
    planned = []
    for _ in range(count):
        skus = rng.sample(SKUS, rng.randint(1, 3))
        roll = rng.random()
        attention = "none"
        if roll < 0.01:
            attention = "resolved"
        elif roll < 0.03:
            attention = "flagged"
        planned.append(
            PlannedOrder(
                customer_id=f"c-{rng.randrange(CUSTOMERS):05d}",
                currency="USD" if rng.random() < 0.8 else "EUR",
                lines=tuple(
                    OrderLine(sku, rng.randint(1, 3), rng.randint(100, 20_000)) for sku in skus
                ),
                outcome=rng.choices(names, weights)[0],
                attention=attention,
            )
        )
    return planned


def reserve_for(order_id: str, quantity: int) -> Callable[[InventoryItem], Any]:
    return lambda item: item.reserve(order_id, quantity)


def record_result(line: OrderLine, *, reserved: bool) -> Callable[[Order], Any]:
    available = line.quantity if reserved else 0
    return lambda order: order.record_line_result(line.sku, reserved=reserved, available=available)


class Loader:
    """Drives planned orders through one application (one per thread)."""

    def __init__(self, app: OrdersApplication) -> None:
        self.app = app
        self.commits = 0

    def save(self, aggregate: Any) -> None:
        self.app.save(aggregate)
        self.commits += 1

    def change_order(self, order_id: Any, change: Callable[[Order], Any]) -> None:
        order: Order = self.app.repository.get(order_id)
        change(order)
        self.save(order)

    def change_stock(self, sku: str, change: Callable[[InventoryItem], Any]) -> None:
        """Apply a stock change, reloading on a conflict with another thread."""
        for _ in range(MAX_CONFLICT_RETRIES):
            item: InventoryItem = self.app.repository.get(inventory_id(sku))
            change(item)
            try:
                self.save(item)
            except VersionConflictError:
                continue
            return
        raise RuntimeError(f"sku {sku}: {MAX_CONFLICT_RETRIES} version conflicts in a row")

    def register_stock(self, sku: str) -> None:
        item = InventoryItem.register(sku)
        item.add_stock(INITIAL_STOCK)
        self.save(item)

    def run(self, planned: PlannedOrder) -> None:
        order = Order.place(
            customer_id=planned.customer_id,
            currency=planned.currency,
            payment_method="pm_card_visa",
            lines=planned.lines,
        )
        self.save(order)
        order_id = order.id
        if planned.outcome == "cancelled_placed":
            self.change_order(order_id, lambda o: o.cancel("the customer changed their mind"))
        elif planned.outcome != "placed":
            self._reserve(order_id, planned)
            self._finish(order_id, planned)
        if planned.attention != "none":
            self.change_order(order_id, lambda o: o.require_attention("refund stuck at Stripe"))
            if planned.attention == "resolved":
                self.change_order(order_id, lambda o: o.resolve_attention())

    def _reserve(self, order_id: Any, planned: PlannedOrder) -> None:
        for index, line in enumerate(planned.lines):
            missing = planned.outcome == "out_of_stock" and index == len(planned.lines) - 1
            if not missing:
                self.change_stock(line.sku, reserve_for(str(order_id), line.quantity))
            self.change_order(order_id, record_result(line, reserved=not missing))

    def _finish(self, order_id: Any, planned: PlannedOrder) -> None:
        outcome = planned.outcome
        reserved = planned.lines[:-1] if outcome == "out_of_stock" else planned.lines
        if outcome == "out_of_stock":
            self.change_order(
                order_id, lambda o: o.fail(f"{planned.lines[-1].sku} is out of stock")
            )
        elif outcome == "declined":
            self.change_order(order_id, lambda o: o.fail("payment declined: card_declined"))
        else:
            self.change_order(order_id, lambda o: o.record_payment(f"pi_{order_id.hex[:24]}"))
            if outcome == "fulfilled":
                self.change_order(order_id, lambda o: o.mark_fulfilled(f"sh_{order_id.hex[:16]}"))
                for line in planned.lines:
                    self.change_stock(line.sku, lambda item: item.ship(str(order_id)))
                return
            if outcome == "cancelled_paid":
                self.change_order(order_id, lambda o: o.cancel("the customer changed their mind"))
            else:
                return  # still paid, waiting for shipment
        for line in reserved:
            self.change_stock(line.sku, lambda item: item.release(str(order_id)))


@dataclass(frozen=True)
class LoadResult:
    orders: int
    commits: int
    seconds: float

    @property
    def commits_per_second(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0


def load(
    environment: Mapping[str, str],
    orders: int,
    *,
    threads: int = DEFAULT_THREADS,
    seed: int = 1,
    report: Callable[[int, int], None] | None = None,
) -> LoadResult:
    """Place ``orders`` planned orders with ``threads`` threads; return counts and time."""
    planned = plan_orders(orders, seed)
    local = threading.local()
    loaders: list[Loader] = []
    lock = threading.Lock()
    done = [0]

    def loader() -> Loader:
        if not hasattr(local, "loader"):
            local.loader = Loader(OrdersApplication(env=dict(environment)))
            with lock:
                loaders.append(local.loader)
        result: Loader = local.loader
        return result

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda sku: loader().register_stock(sku), SKUS))

        def run(order: PlannedOrder) -> None:
            loader().run(order)
            with lock:
                done[0] += 1
                count = done[0]
            if report is not None and count % 500 == 0:
                report(count, sum(each.commits for each in loaders))

        list(pool.map(run, planned))
    seconds = time.monotonic() - started
    for each in loaders:
        each.app.close()
    return LoadResult(orders, sum(each.commits for each in loaders), seconds)


def main(argv: list[str] | None = None) -> int:
    from infra.local import projections_cli

    parser = argparse.ArgumentParser(prog="python -m bench.load_orders", description=__doc__)
    parser.add_argument("--orders", type=int, default=DEFAULT_ORDERS)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--table-prefix", default="")
    parser.add_argument("--data-dir", type=Path, default=None)
    arguments = parser.parse_args(argv)
    try:
        environment = projections_cli.resolve_environment(arguments)
    except projections_cli.CommandError as error:
        print(f"load_orders: {error}", file=sys.stderr)
        return 2

    def report(count: int, commits: int) -> None:
        print(f"{count:,} orders, {commits:,} commits", flush=True)

    result = load(
        environment,
        arguments.orders,
        threads=arguments.threads,
        seed=arguments.seed,
        report=report,
    )
    print(
        f"loaded {result.orders:,} orders in {result.commits:,} commits in "
        f"{result.seconds:.1f} s ({result.commits_per_second:,.0f} commits/s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
