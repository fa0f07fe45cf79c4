"""An eventsourcing Application that loads aggregates from tips and snapshots every commit.

Each save passes a snapshot of every saved aggregate down to the recorder, which
writes it into the stream's tip in the same transaction as the events. Loading
the current version is then one read of the tip, whatever the history length.
"""

from __future__ import annotations

import contextlib
from copy import deepcopy
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    ProjectorFunction,
    Repository,
    project_aggregate,
)
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import (
    InfrastructureFactory,
    JSONTranscoder,
    Recording,
    Transcoding,
)
from eventsourcing.utils import Environment

from application.errors import VersionConflictError
from application.ports import Tip, TipRecorder
from domain.order import OrderLine

PERSISTENCE_MODULE = "PERSISTENCE_MODULE"


class PersistenceNotConfiguredError(RuntimeError):
    pass


class OrderLineAsDict(Transcoding):
    type = OrderLine
    name = "order_line"

    def encode(self, obj: OrderLine) -> dict[str, Any]:
        return obj.as_dict()

    def decode(self, data: dict[str, Any]) -> OrderLine:
        return OrderLine.from_dict(data)


class TipRepository(Repository[UUID]):
    """Reconstructs the current version of an aggregate from its tip's snapshot.

    With a cache (``AGGREGATE_CACHE_MAXSIZE``), an aggregate saved or loaded in
    this process is served from memory without any read. It may be stale, which
    the conditional write catches: the conflict carries the current tip, and
    :meth:`TipApplication._record` puts that state in the cache, so the retry
    needs no read either. Pass ``fresh=True`` where a stale answer would mislead
    (queries, decisions with external effects).
    """

    def __init__(self, recorder: TipRecorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder

    def get(
        self,
        aggregate_id: UUID,
        *,
        version: int | None = None,
        projector_func: ProjectorFunction[Any, Any] = project_aggregate,
        fastforward_skipping: bool = False,
        deepcopy_from_cache: bool = True,
        fresh: bool = False,
    ) -> Any:
        if version is not None:
            return super().get(aggregate_id, version=version, projector_func=projector_func)

        copy_out = deepcopy_from_cache and self.deepcopy_from_cache
        if self.cache is not None and not fresh:
            try:
                cached = self.cache.get(aggregate_id)
            except KeyError:
                pass
            else:
                return deepcopy(cached) if copy_out else cached

        aggregate = self._load_from_tip(aggregate_id, projector_func)
        if self.cache is not None:
            self.cache.put(aggregate_id, aggregate)
            return deepcopy(aggregate) if copy_out else aggregate
        return aggregate

    def resync(self, tip: Tip) -> None:
        """Replace the cached aggregate with the state in ``tip``, as a conflict returned it."""
        if self.cache is None:
            return
        if tip.snapshot is None:
            # No state to take over, so the next load reads the tip instead.
            self.evict(tip.stream_id)
            return
        aggregate_id = UUID(tip.stream_id)
        snapshot = cast("Snapshot", self.event_store.mapper.to_domain_event(tip.snapshot))
        self.cache.put(aggregate_id, snapshot.mutate(None))

    def evict(self, stream_id: str) -> None:
        if self.cache is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.cache.get(UUID(stream_id), evict=True)

    def _load_from_tip(
        self, aggregate_id: UUID, projector_func: ProjectorFunction[Any, Any]
    ) -> Any:
        tip = self.recorder.select_tip(aggregate_id)
        if tip is None:
            raise AggregateNotFoundError(aggregate_id)
        if tip.snapshot is None:
            # A tip written without a snapshot: replay the history instead.
            return self._reconstruct_aggregate(aggregate_id, None, projector_func)
        snapshot = cast("Snapshot", self.event_store.mapper.to_domain_event(tip.snapshot))
        return snapshot.mutate(None)


class TipApplication(Application[UUID]):
    """Base class of this project's event-sourced applications."""

    def construct_factory(self, env: Environment) -> InfrastructureFactory:
        # The library falls back to in-memory storage when PERSISTENCE_MODULE is
        # unset; a deployed function must fail at start instead of losing writes.
        if not env.get(PERSISTENCE_MODULE):
            raise PersistenceNotConfiguredError(
                f"{PERSISTENCE_MODULE} is not set: use adapters.eventstore.dynamodb, "
                "or adapters.eventstore.memory in tests"
            )
        return super().construct_factory(env)

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(OrderLineAsDict())

    @property
    def repository(self) -> TipRepository:
        repository = self._repository
        assert isinstance(repository, TipRepository)
        return repository

    def construct_repository(self) -> Repository[UUID]:
        if not isinstance(self.recorder, TipRecorder):
            raise PersistenceNotConfiguredError(
                f"{type(self.recorder).__name__} keeps no tips; use a persistence module "
                "from adapters.eventstore"
            )
        maxsize = self.env.get(self.AGGREGATE_CACHE_MAXSIZE)
        return TipRepository(
            recorder=self.recorder,
            event_store=self.events,
            cache_maxsize=int(maxsize) if maxsize else None,
            # The cache is never fast-forwarded: the conditional write detects staleness.
            fastforward=False,
        )

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        snapshots = {
            str(aggregate_id): self.mapper.to_stored_event(Snapshot.take(aggregate))
            for aggregate_id, aggregate in processing_event.aggregates.items()
        }
        processing_event.saved_kwargs["snapshots"] = snapshots
        try:
            return super()._record(processing_event)
        except VersionConflictError as conflict:
            if conflict.tip is not None:
                self.repository.resync(conflict.tip)
            else:
                # No current state came back, so drop the stale copy: the retry reads.
                self.repository.evict(conflict.stream_id)
            raise
