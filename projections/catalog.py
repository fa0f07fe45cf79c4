"""Every read model by name: the projections the projector and the rebuild run, and the
index views that live on their rows."""

from __future__ import annotations

from collections.abc import Iterable

from projections import (
    customer_orders,
    customer_stats,
    inventory_levels,
    needs_attention,
    order_summary,
    orders_by_status,
)
from projections.projection import IndexView, Projection

PROJECTIONS: dict[str, Projection] = {
    projection.name: projection
    for projection in (
        order_summary.PROJECTION,
        customer_stats.PROJECTION,
        inventory_levels.PROJECTION,
    )
}

VIEWS: dict[str, IndexView] = {
    view.name: view for view in (customer_orders.VIEW, orders_by_status.VIEW, needs_attention.VIEW)
}

READ_MODEL_NAMES = (*PROJECTIONS, *VIEWS)


class UnknownReadModelError(ValueError):
    pass


def projections_named(names: Iterable[str]) -> list[Projection]:
    """Return the projections to rebuild for ``names``; a view stands for its host.

    No names means every projection.
    """
    wanted = list(names) or list(PROJECTIONS)
    selected: dict[str, Projection] = {}
    for name in wanted:
        if name in VIEWS:
            name = VIEWS[name].host
        if name not in PROJECTIONS:
            raise UnknownReadModelError(
                f"no read model is called {name!r}; the read models are "
                f"{', '.join(READ_MODEL_NAMES)}"
            )
        selected[name] = PROJECTIONS[name]
    return list(selected.values())


def projections_for(stream_type: str) -> list[Projection]:
    return [p for p in PROJECTIONS.values() if stream_type in p.stream_types]
