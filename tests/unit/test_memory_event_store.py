"""The event-store contract on the in-memory store that unit tests run on."""

from __future__ import annotations

import pytest

from adapters.eventstore.memory import MemoryTipRecorder
from tests.eventstore_contract import EventStore, EventStoreContract


class TestMemoryEventStore(EventStoreContract):
    @pytest.fixture
    def recorder(self) -> EventStore:
        return MemoryTipRecorder()

    @pytest.fixture
    def another_recorder(self, recorder: EventStore) -> EventStore:
        # Writers in one process share one in-memory store, so the second writer is the same object.
        return recorder
