"""Fold whole streams into the rows a read model should hold: the reference that live
projection and rebuild are both checked against."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from application.ports import Contribution
from projections.projection import Projection, Row

RowsByKey = dict[tuple[str, ...], Row]


def add_contribution(row: Row | None, contribution: Contribution) -> Row:
    """Return the summing row after one contribution, as DynamoDB's ``ADD`` would leave it."""
    updated: Row = dict(row) if row is not None else dict(contribution.key)
    for name, value in contribution.set_once.items():
        updated.setdefault(name, value)
    for name, amount in contribution.add.items():
        updated[name] = int(updated.get(name, 0)) + amount
    return updated


def key_of(key: Mapping[str, str], projection: Projection) -> tuple[str, ...]:
    return tuple(str(key[name]) for name in projection.key_attributes)


def replay(projection: Projection, streams: Iterable[tuple[str, Sequence[Any]]]) -> RowsByKey:
    """Return every row of the read model after the given streams' events.

    ``streams`` yields (stream id, all of the stream's domain events in order).
    """
    rows: RowsByKey = {}
    for stream_id, events in streams:
        if not events:
            continue
        row = projection.fold(None, events)
        rows[key_of(projection.row_key(stream_id), projection)] = row
        for contribution in projection.contributions(None, row):
            key = key_of(contribution.key, projection)
            rows[key] = add_contribution(rows.get(key), contribution)
    return rows
