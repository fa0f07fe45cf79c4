"""The settings of a Lambda event source mapping on a DynamoDB stream, read from the template.

Each ``Type: DynamoDB`` event of a function is one mapping. Defaults are Lambda's
(BatchSize 100, no batching window, MaximumRetryAttempts -1 meaning until the record
expires, no bisect, whole-batch failures).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.local.event_pattern import EventPattern, PatternError
from infra.local.template import Template, TemplateError

logger = logging.getLogger("orders.local.streams")

_TABLE_IN_STREAM_ARN = re.compile(r":table/([^/]+)/stream")
_SUPPORTED = {
    "Stream",
    "StartingPosition",
    "BatchSize",
    "MaximumBatchingWindowInSeconds",
    "MaximumRetryAttempts",
    "BisectBatchOnFunctionError",
    "FunctionResponseTypes",
    "FilterCriteria",
    "DestinationConfig",
    "Enabled",
}
MAX_BATCH_SIZE = 10_000
MAX_BATCHING_WINDOW = 300


@dataclass(frozen=True)
class StreamMapping:
    mapping_id: str
    """``Function/Event``: names the mapping in logs and checkpoints."""
    function_id: str
    table_name: str
    starting_position: str
    batch_size: int = 100
    batching_window: float = 0.0
    max_retries: int = -1
    bisect: bool = False
    report_item_failures: bool = False
    filters: tuple[EventPattern, ...] = ()
    on_failure_arn: str | None = None
    enabled: bool = True


def stream_mappings(template: Template) -> list[StreamMapping]:
    mappings = []
    for function_id, spec in template.functions().items():
        for event_name, properties in spec.events_of_type("DynamoDB").items():
            mappings.append(parse_mapping(function_id, event_name, properties))
    return mappings


def parse_mapping(
    function_id: str, event_name: str, properties: Mapping[str, Any]
) -> StreamMapping:
    """Validate one resolved ``Type: DynamoDB`` event's properties into a mapping."""
    where = f"{function_id}.Events.{event_name}"
    ignored = sorted(set(properties) - _SUPPORTED)
    if ignored:
        logger.warning("%s: the local poller ignores %s", where, ", ".join(ignored))

    stream = str(properties.get("Stream", ""))
    table = _TABLE_IN_STREAM_ARN.search(stream)
    if table is None:
        raise TemplateError(
            f"{where}: Stream must be a table's StreamArn (!GetAtt Table.StreamArn), "
            f"got {stream!r}"
        )
    starting_position = str(properties.get("StartingPosition", ""))
    if starting_position not in ("TRIM_HORIZON", "LATEST"):
        raise TemplateError(
            f"{where}: StartingPosition must be TRIM_HORIZON or LATEST, got {starting_position!r}"
        )
    batch_size = _integer(properties, "BatchSize", 100, where, 1, MAX_BATCH_SIZE)
    window = _integer(
        properties, "MaximumBatchingWindowInSeconds", 0, where, 0, MAX_BATCHING_WINDOW
    )
    max_retries = _integer(properties, "MaximumRetryAttempts", -1, where, -1, 10_000)
    response_types = properties.get("FunctionResponseTypes") or []
    unknown_types = set(response_types) - {"ReportBatchItemFailures"}
    if unknown_types:
        raise TemplateError(f"{where}: unknown FunctionResponseTypes {sorted(unknown_types)}")
    return StreamMapping(
        mapping_id=f"{function_id}/{event_name}",
        function_id=function_id,
        table_name=table.group(1),
        starting_position=starting_position,
        batch_size=batch_size,
        batching_window=float(window),
        max_retries=max_retries,
        bisect=_boolean(properties.get("BisectBatchOnFunctionError", False)),
        report_item_failures="ReportBatchItemFailures" in response_types,
        filters=_filters(properties.get("FilterCriteria"), where),
        on_failure_arn=_on_failure(properties.get("DestinationConfig"), where),
        enabled=_boolean(properties.get("Enabled", True)),
    )


def _integer(
    properties: Mapping[str, Any], name: str, default: int, where: str, low: int, high: int
) -> int:
    raw = properties.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise TemplateError(f"{where}: {name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise TemplateError(f"{where}: {name} must be between {low} and {high}, got {value}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def _filters(criteria: Any, where: str) -> tuple[EventPattern, ...]:
    if not criteria:
        return ()
    patterns = []
    for position, entry in enumerate(criteria.get("Filters", [])):
        text = entry.get("Pattern")
        if not isinstance(text, str):
            text = json.dumps(text)
        try:
            patterns.append(EventPattern.parse(text))
        except PatternError as error:
            raise TemplateError(f"{where}: FilterCriteria.Filters[{position}]: {error}") from None
    return tuple(patterns)


def _on_failure(config: Any, where: str) -> str | None:
    if not config:
        return None
    on_failure = config.get("OnFailure") or {}
    destination = on_failure.get("Destination")
    if destination is None:
        return None
    if not str(destination).startswith("arn:aws:sqs:"):
        raise TemplateError(
            f"{where}: the local poller sends failed batches only to SQS, got {destination!r}"
        )
    return str(destination)
