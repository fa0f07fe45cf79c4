"""What a read model gives the projector and the rebuild.

A read model keeps one row per source stream, keyed by the stream id, and that row
carries ``version``: the last event of the stream it reflects. The row is a pure
fold of the stream's events. A read model that sums many streams (customer stats)
also returns, for each change of a per-stream row, what it adds to the summing
rows. Those additions are numbers, so they commute, and the order in which streams
are applied does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from application.ports import Contribution, RowKey

Row = dict[str, Any]
VERSION = "version"


class ProjectionError(ValueError):
    """An event cannot be applied to the row: the stream is out of order or corrupt."""


class Projection(Protocol):
    @property
    def name(self) -> str:
        """The read model's name, as the CLI and the pointers spell it."""
        ...

    @property
    def stream_types(self) -> frozenset[str]:
        """Topics of the aggregates whose events this read model folds."""
        ...

    @property
    def key_attributes(self) -> tuple[str, ...]:
        """The table's key attributes, partition key first."""
        ...

    @property
    def has_summing_rows(self) -> bool:
        """Whether ``contributions`` ever returns anything."""
        ...

    @property
    def contribution_attributes(self) -> tuple[str, ...]:
        """Attributes of a per-stream row that ``contributions`` reads, besides the key
        and ``version``; a rebuild reads only these back when it writes the sums."""
        ...

    def row_key(self, stream_id: str) -> RowKey: ...

    def fold(self, row: Row | None, events: Iterable[Any]) -> Row:
        """Return the row after ``events``, which continue ``row`` without a gap."""
        ...

    def contributions(self, before: Row | None, after: Row) -> Sequence[Contribution]:
        """Return what moving a per-stream row from ``before`` to ``after`` adds to the
        summing rows."""
        ...


@dataclass(frozen=True)
class PerStreamOnly:
    """Mixin for read models without summing rows."""

    has_summing_rows = False
    contribution_attributes: tuple[str, ...] = ()

    def contributions(self, before: Row | None, after: Row) -> Sequence[Contribution]:
        return ()


def expect_next_version(row: Row | None, event: Any, stream: str) -> int:
    """Return the event's version, or raise if it does not follow the row's."""
    version: int = event.originator_version
    expected = 1 if row is None else int(row[VERSION]) + 1
    if version != expected:
        raise ProjectionError(
            f"{stream} {event.originator_id}: event version {version}, row expects {expected}"
        )
    return version


def stream_type_of(topic: str) -> str:
    """Return the aggregate's topic for an event's: ``m:Order.OrderPlaced`` -> ``m:Order``."""
    return topic.rsplit(".", 1)[0] if "." in topic.split(":", 1)[-1] else topic


def row_key_tuple(projection: Projection, row: Mapping[str, Any]) -> tuple[str, ...]:
    """Return the key of a row as a tuple, for comparing tables row for row."""
    return tuple(str(row[name]) for name in projection.key_attributes)


@dataclass(frozen=True)
class IndexView:
    """A read model that is an index over another read model's rows.

    It adds no fold of its own: the host's fold writes the index's key attributes,
    and a row leaves the index when the fold removes them (a sparse index). It is
    rebuilt with its host.
    """

    name: str
    host: str
    index_name: str
    partition_attribute: str
    sort_attribute: str
    newest_first: bool
