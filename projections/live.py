"""The live projector: each committed tip, applied to every table its read models name.

Each read model that folds the tip's stream type has a pointer. It names the
tables to keep current under the version guard: the live one, the one a rebuild
builds once its bulk load is over, and for a short while after a switch the
previous one. While a rebuild loads its tables in bulk, the projector does not
write them. It marks the stream as changed instead, and the rebuild brings marked
streams up to date after the load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger

from application.ports import DirtyStreams, ProjectionTable, TableMissingError, Tip
from projections.catalog import projections_for
from projections.projection import Projection
from projections.projector import GuardedProjector, ProjectionOutcome

logger = Logger(service="orders", child=True)


class LiveProjector:
    def __init__(
        self,
        projectors: Mapping[str, GuardedProjector],
        directory: Any,
        open_table: Callable[[Projection, str], ProjectionTable],
        dirty: DirtyStreams,
    ) -> None:
        """``directory`` is a ``ProjectionDirectory``: cached pointers per read model."""
        self.projectors = dict(projectors)
        self.directory = directory
        self.open_table = open_table
        self.dirty = dirty

    def project_tip(self, tip: Tip) -> list[ProjectionOutcome]:
        outcomes = []
        marked: set[str] = set()
        for projection in projections_for(tip.stream_type):
            rebuild_id = self.directory.pointer(projection.name).marking_for
            if rebuild_id is not None and rebuild_id not in marked:
                self.dirty.mark(rebuild_id, tip.stream_id, tip.stream_type)
                marked.add(rebuild_id)
            for table_name in self.directory.write_targets(projection.name):
                outcome = self._apply(projection, table_name, tip)
                if outcome is not None:
                    outcomes.append(outcome)
        return outcomes

    def _apply(self, projection: Projection, table_name: str, tip: Tip) -> ProjectionOutcome | None:
        table = self.open_table(projection, table_name)
        try:
            return self.projectors[projection.name].project(table, tip)
        except TableMissingError:
            # A rebuild was abandoned or an old generation dropped since the pointer
            # was cached: skip the table only if it is no longer a target.
            self.directory.invalidate(projection.name)
            if table_name in self.directory.write_targets(projection.name):
                raise
            logger.info(
                "table is no longer a target, skipped",
                extra={
                    "projection": projection.name,
                    "table": table_name,
                    "order_id": tip.stream_id,
                    "stream_id": tip.stream_id,
                    "version": tip.version,
                },
            )
            return None
