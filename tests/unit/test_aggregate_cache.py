"""The aggregate cache: warm commands read nothing; a conflict resyncs without a read."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot

from application.errors import VersionConflictError
from application.orders import OrdersApplication
from domain.inventory import InventoryItem, inventory_id


class CountingApp:
    """Two applications on one in-memory store: a warm container and another writer."""

    def __init__(self) -> None:
        self.warm = OrdersApplication(
            env={
                "PERSISTENCE_MODULE": "adapters.eventstore.memory",
                "AGGREGATE_CACHE_MAXSIZE": "100",
            }
        )
        self.tip_reads = 0
        recorder = self.warm.recorder
        original = recorder.select_tip  # type: ignore[attr-defined]

        def counting_select_tip(originator_id: UUID | str) -> object:
            self.tip_reads += 1
            return original(originator_id)

        recorder.select_tip = counting_select_tip  # type: ignore[attr-defined]

    def other_writer_adds(self, sku: str, quantity: int) -> None:
        """Change the stream behind the warm container's back, without its cache."""
        item: InventoryItem = self.warm.repository.get(inventory_id(sku), fresh=True)
        item.add_stock(quantity)
        snapshot = self.warm.mapper.to_stored_event(Snapshot.take(item))
        self.warm.events.put(item.collect_events(), snapshots={str(item.id): snapshot})


@pytest.fixture
def apps() -> Iterator[CountingApp]:
    counting = CountingApp()
    yield counting
    counting.warm.close()


def test_warm_command_reads_nothing(apps: CountingApp) -> None:
    item = InventoryItem.register("MUG")
    item.add_stock(5)
    apps.warm.save(item)
    reads_before = apps.tip_reads

    loaded: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))
    loaded.add_stock(1)
    apps.warm.save(loaded)

    assert apps.tip_reads == reads_before
    assert apps.warm.repository.get(inventory_id("MUG"), fresh=True).on_hand == 6


def test_fresh_get_reads_the_tip(apps: CountingApp) -> None:
    apps.warm.save(InventoryItem.register("MUG"))
    reads_before = apps.tip_reads

    apps.warm.repository.get(inventory_id("MUG"), fresh=True)

    assert apps.tip_reads == reads_before + 1


def test_conflict_resyncs_cache_without_read(apps: CountingApp) -> None:
    item = InventoryItem.register("MUG")
    item.add_stock(5)
    apps.warm.save(item)
    apps.other_writer_adds("MUG", 10)
    reads_before = apps.tip_reads

    stale: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))
    stale.add_stock(1)
    with pytest.raises(VersionConflictError):
        apps.warm.save(stale)
    retried: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))

    assert apps.tip_reads == reads_before
    assert retried.on_hand == 15
    assert retried.version == 3


def test_cached_copy_is_not_shared(apps: CountingApp) -> None:
    item = InventoryItem.register("MUG")
    apps.warm.save(item)

    first: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))
    first.add_stock(3)  # not saved
    second: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))

    assert second.on_hand == 0


def test_conflict_without_snapshot_evicts(apps: CountingApp) -> None:
    item = InventoryItem.register("MUG")
    apps.warm.save(item)
    other: InventoryItem = apps.warm.repository.get(inventory_id("MUG"), fresh=True)
    other.add_stock(2)
    apps.warm.events.put(other.collect_events(), snapshots={})  # a tip with no snapshot

    stale: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))
    stale.add_stock(1)
    with pytest.raises(VersionConflictError):
        apps.warm.save(stale)
    reads_before = apps.tip_reads
    retried: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))

    assert apps.tip_reads == reads_before + 1
    assert retried.on_hand == 2


def test_conflict_without_tip_evicts(apps: CountingApp) -> None:
    item = InventoryItem.register("MUG")
    apps.warm.save(item)
    stale: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))
    apps.other_writer_adds("MUG", 4)
    stale.add_stock(1)
    original_insert = apps.warm.recorder.insert_events

    def conflict_without_tip(stored_events: object, **kwargs: object) -> object:
        try:
            return original_insert(stored_events, **kwargs)  # type: ignore[arg-type]
        except VersionConflictError as conflict:
            raise VersionConflictError(
                conflict.stream_id, conflict.expected_version, None, None
            ) from None

    apps.warm.recorder.insert_events = conflict_without_tip  # type: ignore[method-assign]
    with pytest.raises(VersionConflictError):
        apps.warm.save(stale)
    reads_before = apps.tip_reads
    retried: InventoryItem = apps.warm.repository.get(inventory_id("MUG"))

    assert apps.tip_reads == reads_before + 1
    assert retried.on_hand == 4
