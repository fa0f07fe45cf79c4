"""Two item workers record results on the same order at once: exactly one save wins.

Each worker runs in its own thread with its own TipApplication (its own boto3
client), as two Lambda instances would, and both load the same version before
either saves.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from uuid import UUID

import pytest

from application.errors import VersionConflictError
from application.eventsourced import TipApplication
from domain.order import LINE_RESERVED, Order, OrderLine, OrderStatus

pytestmark = pytest.mark.dynamodb

SKUS = ("MUG-RED", "TEA-GREEN")


@pytest.fixture
def apps(tables: dict[str, str]) -> Iterator[dict[str, TipApplication]]:
    # Built on the main thread: boto3's default session must not create
    # clients from several threads at once.
    env = {
        "PERSISTENCE_MODULE": "adapters.eventstore.dynamodb",
        "EVENTS_TABLE": tables["EventsTable"],
    }
    built = {name: TipApplication(env=env) for name in ("placer", *SKUS)}
    yield built
    for app in built.values():
        app.close()


@pytest.fixture
def order_id(apps: dict[str, TipApplication]) -> UUID:
    order = Order.place(
        customer_id="c-1",
        currency="USD",
        payment_method="pm_card_visa",
        lines=[OrderLine(SKUS[0], 2, 1250), OrderLine(SKUS[1], 1, 800)],
    )
    apps["placer"].save(order)
    return order.id


def race(apps: dict[str, TipApplication], order_id: UUID) -> dict[str, str]:
    """Reserve each line on its own thread, all from the same loaded version."""
    loaded = threading.Barrier(len(SKUS), timeout=30)
    outcomes: dict[str, str] = {}

    def reserve(sku: str) -> None:
        app = apps[sku]
        try:
            order: Order = app.repository.get(order_id)
            order.record_line_result(sku, reserved=True, available=10)
            loaded.wait()
            app.save(order)
        except VersionConflictError:
            outcomes[sku] = "conflict"
        except Exception as error:  # reported by the test's assertion
            loaded.abort()
            outcomes[sku] = repr(error)
        else:
            outcomes[sku] = "saved"

    threads = [threading.Thread(target=reserve, args=(sku,)) for sku in SKUS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def winner_of(outcomes: dict[str, str]) -> str:
    return next(sku for sku, outcome in outcomes.items() if outcome == "saved")


def test_exactly_one_of_two_concurrent_saves_wins(
    apps: dict[str, TipApplication], order_id: UUID
) -> None:
    outcomes = race(apps, order_id)

    assert sorted(outcomes.values()) == ["conflict", "saved"]


def test_stored_order_contains_only_winning_result(
    apps: dict[str, TipApplication], order_id: UUID
) -> None:
    outcomes = race(apps, order_id)

    stored: Order = apps["placer"].repository.get(order_id)

    assert stored.line_results == {winner_of(outcomes): LINE_RESERVED}


def test_losing_save_writes_no_event(apps: dict[str, TipApplication], order_id: UUID) -> None:
    race(apps, order_id)

    history = apps["placer"].recorder.select_events(order_id)

    assert [event.originator_version for event in history] == [1, 2]


def test_loser_retry_completes_reservation(apps: dict[str, TipApplication], order_id: UUID) -> None:
    outcomes = race(apps, order_id)
    loser = next(sku for sku, outcome in outcomes.items() if outcome == "conflict")
    app = apps[loser]

    order: Order = app.repository.get(order_id)
    order.record_line_result(loser, reserved=True, available=10)
    app.save(order)

    assert apps["placer"].repository.get(order_id).status == OrderStatus.RESERVED
