"""What every event store of this project must do, as a test class each backend subclasses.

A backend's test module subclasses :class:`EventStoreContract` and provides the
``recorder`` fixture (and ``another_recorder``, a second writer on the same
storage). The in-memory store and the DynamoDB store then prove the same rules:
conflicts, all-or-nothing commits, tips, idempotent commands and DynamoDB's limits.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any, Protocol
from uuid import UUID

import pytest
from eventsourcing.persistence import StoredEvent

from application.errors import CommitTooLargeError, DuplicateCommandError, VersionConflictError
from application.ports import CommandRecord, TipRecorder

TOPIC = "tests.eventstore_contract:Thing.Happened"
SNAPSHOT_TOPIC = "tests.eventstore_contract:Thing.Snapshot"
KB = 1024

LARGE_HISTORY_EVENTS = 5_000
LARGE_HISTORY_COMMIT = 90
# About 2.7 MB of event items, so a DynamoDB Query needs several 1 MB pages.
LARGE_HISTORY_EVENT_BYTES = 500


class EventStore(TipRecorder, Protocol):
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None: ...

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]: ...


def new_stream() -> str:
    return str(uuid.uuid4())


def make_events(
    stream_id: str, first: int, count: int, *, size: int = 32, writer: str = ""
) -> list[StoredEvent]:
    """Events ``first .. first + count - 1`` whose states differ by stream, version and writer."""
    return [
        StoredEvent(
            originator_id=stream_id,
            originator_version=version,
            topic=TOPIC,
            state=_payload(f"{writer}{stream_id}@{version}", size),
        )
        for version in range(first, first + count)
    ]


def make_snapshot(stream_id: str, version: int) -> StoredEvent:
    return StoredEvent(
        originator_id=stream_id,
        originator_version=version,
        topic=SNAPSHOT_TOPIC,
        state=_payload(f"snapshot {stream_id}@{version}", 64),
    )


def make_command(name: str = "place") -> CommandRecord:
    command_id = f"{name}-{uuid.uuid4()}"
    return CommandRecord(
        command_id=command_id,
        request_hash=f"sha256-of-{command_id}",
        result={"order_id": new_stream(), "status": "PLACED"},
    )


def _payload(label: str, size: int) -> bytes:
    seed = f"{label}|".encode()
    return (seed * (size // len(seed) + 1))[:size]


def versions_of(events: Sequence[StoredEvent]) -> list[int]:
    return [event.originator_version for event in events]


def append_in_commits(
    recorder: EventStore, stream_id: str, total: int, per_commit: int, *, size: int
) -> list[StoredEvent]:
    history: list[StoredEvent] = []
    while len(history) < total:
        commit = make_events(
            stream_id, len(history) + 1, min(per_commit, total - len(history)), size=size
        )
        recorder.insert_events(commit)
        history.extend(commit)
    return history


class EventStoreContract:
    """The tests every event store passes. Subclasses provide the ``recorder`` fixtures."""

    @pytest.fixture
    def recorder(self) -> EventStore:
        raise NotImplementedError("a backend's test class provides the recorder")

    @pytest.fixture
    def another_recorder(self, recorder: EventStore) -> EventStore:
        """A second writer on the same storage, as another process would have."""
        raise NotImplementedError("a backend's test class provides a second recorder")

    def assert_nothing_written(self, recorder: EventStore, stream_id: str) -> None:
        assert recorder.select_tip(stream_id) is None
        assert recorder.select_events(stream_id) == []

    # Appending and loading ------------------------------------------------------------

    def test_appended_events_load_in_version_order(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        first, second = make_events(stream_id, 1, 3), make_events(stream_id, 4, 7)
        recorder.insert_events(first)
        recorder.insert_events(second)

        assert recorder.select_events(stream_id) == first + second

    def test_unknown_stream_has_no_events(self, recorder: EventStore) -> None:
        assert recorder.select_events(new_stream()) == []

    @pytest.mark.parametrize(
        ("query", "expected_versions"),
        [
            ({"gt": 3}, [4, 5, 6, 7, 8, 9, 10]),
            ({"lte": 4}, [1, 2, 3, 4]),
            ({"gt": 3, "lte": 7}, [4, 5, 6, 7]),
            ({"gt": 5, "lte": 5}, []),
            ({"gt": 10}, []),
            ({"desc": True}, [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]),
            ({"desc": True, "lte": 5}, [5, 4, 3, 2, 1]),
            ({"desc": True, "gt": 6}, [10, 9, 8, 7]),
            ({"limit": 3}, [1, 2, 3]),
            ({"gt": 2, "limit": 3}, [3, 4, 5]),
            ({"lte": 6, "limit": 10}, [1, 2, 3, 4, 5, 6]),
            ({"desc": True, "limit": 3}, [10, 9, 8]),
            ({"desc": True, "gt": 2, "lte": 8, "limit": 4}, [8, 7, 6, 5]),
        ],
    )
    def test_select_events_filters_orders_and_limits(
        self, recorder: EventStore, query: dict[str, Any], expected_versions: list[int]
    ) -> None:
        stream_id = new_stream()
        recorder.insert_events(make_events(stream_id, 1, 4))
        recorder.insert_events(make_events(stream_id, 5, 6))

        assert versions_of(recorder.select_events(stream_id, **query)) == expected_versions

    def test_select_events_returns_stored_content(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        history = make_events(stream_id, 1, 10)
        recorder.insert_events(history)

        assert recorder.select_events(stream_id, gt=2, lte=5, desc=True) == history[4:1:-1]

    def test_large_history_loads_whole_and_in_order(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        history = append_in_commits(
            recorder,
            stream_id,
            LARGE_HISTORY_EVENTS,
            LARGE_HISTORY_COMMIT,
            size=LARGE_HISTORY_EVENT_BYTES,
        )

        assert recorder.select_events(stream_id) == history

    # The tip ----------------------------------------------------------------------------

    def test_new_stream_has_no_tip(self, recorder: EventStore) -> None:
        assert recorder.select_tip(new_stream()) is None

    def test_tip_contains_last_commit_version(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        recorder.insert_events(make_events(stream_id, 1, 3))
        recorder.insert_events(make_events(stream_id, 4, 2))

        tip = recorder.select_tip(stream_id)

        assert tip is not None
        assert tip.version == 5

    def test_tip_contains_only_last_commit_events(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        recorder.insert_events(make_events(stream_id, 1, 3))
        last_commit = make_events(stream_id, 4, 2)
        recorder.insert_events(last_commit)

        tip = recorder.select_tip(stream_id)

        assert tip is not None
        assert list(tip.events) == last_commit

    def test_tip_contains_last_commit_snapshot(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        recorder.insert_events(
            make_events(stream_id, 1, 2), snapshots={stream_id: make_snapshot(stream_id, 2)}
        )
        snapshot = make_snapshot(stream_id, 3)
        recorder.insert_events(make_events(stream_id, 3, 1), snapshots={stream_id: snapshot})

        tip = recorder.select_tip(stream_id)

        assert tip is not None
        assert tip.snapshot == snapshot

    def test_commit_without_snapshot_clears_snapshot(self, recorder: EventStore) -> None:
        # A snapshot left from an earlier commit would describe an older state.
        stream_id = new_stream()
        recorder.insert_events(
            make_events(stream_id, 1, 2), snapshots={stream_id: make_snapshot(stream_id, 2)}
        )
        recorder.insert_events(make_events(stream_id, 3, 1))

        tip = recorder.select_tip(stream_id)

        assert tip is not None
        assert tip.snapshot is None

    def test_tip_contains_aggregate_type(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        recorder.insert_events(make_events(stream_id, 1, 1))

        tip = recorder.select_tip(stream_id)

        assert tip is not None
        assert tip.stream_type == "tests.eventstore_contract:Thing"

    # Commits across streams ----------------------------------------------------------

    def test_commit_writes_every_stream(self, recorder: EventStore) -> None:
        left, right = new_stream(), new_stream()
        recorder.insert_events(make_events(left, 1, 2) + make_events(right, 1, 3))

        assert [recorder.select_events(left), recorder.select_events(right)] == [
            make_events(left, 1, 2),
            make_events(right, 1, 3),
        ]

    def test_conflict_writes_nothing_to_other_stream(self, recorder: EventStore) -> None:
        busy, fresh = new_stream(), new_stream()
        recorder.insert_events(make_events(busy, 1, 2))

        with pytest.raises(VersionConflictError):
            recorder.insert_events(make_events(fresh, 1, 2) + make_events(busy, 2, 1, writer="b"))

        self.assert_nothing_written(recorder, fresh)

    def test_conflict_leaves_conflicting_stream_unchanged(self, recorder: EventStore) -> None:
        busy, fresh = new_stream(), new_stream()
        history = make_events(busy, 1, 2)
        recorder.insert_events(history)

        with pytest.raises(VersionConflictError):
            recorder.insert_events(make_events(fresh, 1, 2) + make_events(busy, 2, 1, writer="b"))

        assert recorder.select_events(busy) == history

    def test_multi_stream_conflict_names_stream(self, recorder: EventStore) -> None:
        busy, fresh = new_stream(), new_stream()
        recorder.insert_events(make_events(busy, 1, 2))

        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(fresh, 1, 2) + make_events(busy, 2, 1, writer="b"))

        assert raised.value.stream_id == busy

    # Optimistic concurrency ----------------------------------------------------------

    @pytest.fixture
    def stream_at_version_3(self, recorder: EventStore) -> str:
        stream_id = new_stream()
        recorder.insert_events(make_events(stream_id, 1, 2))
        recorder.insert_events(make_events(stream_id, 3, 1))
        return stream_id

    def test_stale_append_reports_versions(
        self, recorder: EventStore, stream_at_version_3: str
    ) -> None:
        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(stream_at_version_3, 3, 1, writer="late"))

        assert raised.value.expected_version == 2
        assert raised.value.actual_version == 3

    def test_stale_append_reports_current_tip(
        self, recorder: EventStore, stream_at_version_3: str
    ) -> None:
        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(stream_at_version_3, 3, 1, writer="late"))

        assert raised.value.tip == recorder.select_tip(stream_at_version_3)

    def test_stale_append_writes_nothing(
        self, recorder: EventStore, stream_at_version_3: str
    ) -> None:
        before = recorder.select_events(stream_at_version_3)

        with pytest.raises(VersionConflictError):
            recorder.insert_events(make_events(stream_at_version_3, 3, 2, writer="late"))

        assert recorder.select_events(stream_at_version_3) == before

    def test_version_1_on_existing_stream_conflicts(
        self, recorder: EventStore, stream_at_version_3: str
    ) -> None:
        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(stream_at_version_3, 1, 1, writer="again"))

        assert raised.value.actual_version == 3

    def test_append_beyond_tip_conflicts(
        self, recorder: EventStore, stream_at_version_3: str
    ) -> None:
        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(stream_at_version_3, 5, 1))

        assert raised.value.actual_version == 3

    def test_append_to_absent_stream_conflicts(self, recorder: EventStore) -> None:
        stream_id = new_stream()

        with pytest.raises(VersionConflictError) as raised:
            recorder.insert_events(make_events(stream_id, 2, 1))

        assert raised.value.actual_version is None
        assert raised.value.tip is None

    def test_identical_events_appended_twice_conflict(self, recorder: EventStore) -> None:
        # Two writers can produce byte-identical events, and the second must still lose.
        stream_id = new_stream()
        commit = make_events(stream_id, 1, 2)
        recorder.insert_events(commit)

        with pytest.raises(VersionConflictError):
            recorder.insert_events(commit)

    def test_concurrent_writers_one_wins_each_round(
        self, recorder: EventStore, another_recorder: EventStore
    ) -> None:
        rounds = 20
        stream_id = new_stream()
        barrier = threading.Barrier(2, timeout=30)
        outcomes: dict[str, list[str]] = {"a": [], "b": []}

        def write(name: str, store: EventStore) -> None:
            for version in range(1, rounds + 1):
                barrier.wait()
                try:
                    store.insert_events(make_events(stream_id, version, 1, writer=name))
                except VersionConflictError:
                    outcomes[name].append("conflict")
                except Exception as error:  # reported by the assertion below
                    outcomes[name].append(repr(error))
                else:
                    outcomes[name].append("won")

        threads = [
            threading.Thread(target=write, args=("a", recorder)),
            threading.Thread(target=write, args=("b", another_recorder)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        per_round = [sorted(pair) for pair in zip(outcomes["a"], outcomes["b"], strict=True)]
        assert per_round == [["conflict", "won"]] * rounds
        winners = ["a" if outcome == "won" else "b" for outcome in outcomes["a"]]
        assert recorder.select_events(stream_id) == [
            make_events(stream_id, version, 1, writer=winner)[0]
            for version, winner in enumerate(winners, start=1)
        ]

    # Idempotent commands -------------------------------------------------------------

    def test_recorded_command_is_readable(self, recorder: EventStore) -> None:
        command = make_command()
        recorder.insert_events(make_events(new_stream(), 1, 1), command=command)

        recorded = recorder.select_command(command.command_id)

        assert recorded is not None
        assert recorded.request_hash == command.request_hash
        assert dict(recorded.result) == dict(command.result)

    def test_unknown_command_is_absent(self, recorder: EventStore) -> None:
        assert recorder.select_command(f"never-{uuid.uuid4()}") is None

    def test_repeated_command_returns_first_result(self, recorder: EventStore) -> None:
        first = make_command()
        recorder.insert_events(make_events(new_stream(), 1, 1), command=first)
        retry = CommandRecord(first.command_id, "another-hash", {"order_id": "other"})

        with pytest.raises(DuplicateCommandError) as raised:
            recorder.insert_events(make_events(new_stream(), 1, 1), command=retry)

        assert dict(raised.value.recorded.result) == dict(first.result)

    def test_repeated_command_returns_first_request_hash(self, recorder: EventStore) -> None:
        first = make_command()
        recorder.insert_events(make_events(new_stream(), 1, 1), command=first)
        retry = CommandRecord(first.command_id, "another-hash", {"order_id": "other"})

        with pytest.raises(DuplicateCommandError) as raised:
            recorder.insert_events(make_events(new_stream(), 1, 1), command=retry)

        assert raised.value.recorded.request_hash == first.request_hash

    def test_repeated_command_writes_nothing(self, recorder: EventStore) -> None:
        first = make_command()
        recorder.insert_events(make_events(new_stream(), 1, 1), command=first)
        other_stream = new_stream()

        with pytest.raises(DuplicateCommandError):
            recorder.insert_events(make_events(other_stream, 1, 1), command=first)

        self.assert_nothing_written(recorder, other_stream)

    def test_retried_command_at_same_version_is_duplicate(self, recorder: EventStore) -> None:
        # A retried request gets the first result back, so the duplicate is reported before
        # the version conflict.
        stream_id = new_stream()
        command = make_command()
        recorder.insert_events(make_events(stream_id, 1, 1), command=command)

        with pytest.raises(DuplicateCommandError):
            recorder.insert_events(make_events(stream_id, 1, 1, writer="retry"), command=command)

    # DynamoDB's limits, kept by every store ------------------------------------------

    def test_commit_of_100_actions_is_accepted(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        # 98 events, the tip and the command record.
        recorder.insert_events(make_events(stream_id, 1, 98), command=make_command())

        assert versions_of(recorder.select_events(stream_id)) == list(range(1, 99))

    def test_commit_of_101_actions_is_rejected(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        command = make_command()

        with pytest.raises(CommitTooLargeError):
            recorder.insert_events(make_events(stream_id, 1, 99), command=command)

        self.assert_nothing_written(recorder, stream_id)
        assert recorder.select_command(command.command_id) is None

    def test_event_of_390_kb_is_accepted(self, recorder: EventStore) -> None:
        stream_id = new_stream()
        large = make_events(stream_id, 1, 1, size=390 * KB)
        recorder.insert_events(large)

        assert recorder.select_events(stream_id) == large

    def test_event_over_400_kb_is_rejected(self, recorder: EventStore) -> None:
        stream_id = new_stream()

        with pytest.raises(CommitTooLargeError):
            recorder.insert_events(make_events(stream_id, 1, 1, size=400 * KB))

        self.assert_nothing_written(recorder, stream_id)

    def test_commit_under_4_mb_is_accepted(self, recorder: EventStore) -> None:
        # Each stream writes its event twice (event item and tip): 10 items of 350 KB.
        streams = [new_stream() for _ in range(5)]
        recorder.insert_events([make_events(s, 1, 1, size=350 * KB)[0] for s in streams])

        assert [len(recorder.select_events(s)) for s in streams] == [1] * len(streams)

    def test_commit_over_4_mb_is_rejected(self, recorder: EventStore) -> None:
        # 12 items of 350 KB: each fits an item, together they exceed 4 MB.
        streams = [new_stream() for _ in range(6)]

        with pytest.raises(CommitTooLargeError):
            recorder.insert_events([make_events(s, 1, 1, size=350 * KB)[0] for s in streams])

        assert [recorder.select_tip(s) for s in streams] == [None] * len(streams)
        assert [recorder.select_events(s) for s in streams] == [[]] * len(streams)

    # Malformed commits ---------------------------------------------------------------

    @pytest.mark.parametrize("versions", [[1, 2, 4], [0, 1], [2, 1], [1, 1]])
    def test_non_contiguous_versions_are_rejected(
        self, recorder: EventStore, versions: list[int]
    ) -> None:
        stream_id = new_stream()
        commit = [make_events(stream_id, version, 1)[0] for version in versions]

        with pytest.raises(ValueError, match="contiguous"):
            recorder.insert_events(commit)

        self.assert_nothing_written(recorder, stream_id)

    def test_snapshot_at_other_version_is_rejected(self, recorder: EventStore) -> None:
        stream_id = new_stream()

        with pytest.raises(ValueError, match="snapshot"):
            recorder.insert_events(
                make_events(stream_id, 1, 3), snapshots={stream_id: make_snapshot(stream_id, 2)}
            )

        self.assert_nothing_written(recorder, stream_id)

    def test_command_prefix_is_reserved(self, recorder: EventStore) -> None:
        with pytest.raises(ValueError, match="reserved"):
            recorder.insert_events(make_events(f"command#{uuid.uuid4()}", 1, 1))
