"""Reading stream event source mappings from the template, and their checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.local.checkpoints import CheckpointStore, ShardPosition
from infra.local.stream_mapping import parse_mapping, stream_mappings
from infra.local.template import LOCAL_ACCOUNT, Template, TemplateError

STREAM = "arn:aws:dynamodb:us-east-1:000000000000:table/Events/stream"


def test_real_template_projector_mapping() -> None:
    mappings = {
        mapping.mapping_id: mapping for mapping in stream_mappings(Template.load(name_prefix="p-"))
    }
    mapping = mappings["ProjectorFunction/EventsStream"]

    assert (
        mapping.mapping_id,
        mapping.table_name,
        mapping.starting_position,
        mapping.batch_size,
        mapping.max_retries,
        mapping.bisect,
        mapping.report_item_failures,
        len(mapping.filters),
        mapping.on_failure_arn,
    ) == (
        "ProjectorFunction/EventsStream",
        "p-EventsTable",
        "TRIM_HORIZON",
        100,
        5,
        True,
        True,
        1,
        f"arn:aws:sqs:us-east-1:{LOCAL_ACCOUNT}:p-ProjectorDeadLetterQueue",
    )


def test_parameter_override_reaches_the_mapping() -> None:
    template = Template.load(parameters={"ProjectorMaxRetries": "1"})

    assert stream_mappings(template)[0].max_retries == 1


def test_lambda_defaults_apply_when_properties_are_left_out() -> None:
    mapping = parse_mapping("F", "E", {"Stream": STREAM, "StartingPosition": "LATEST"})

    assert (mapping.batch_size, mapping.batching_window, mapping.max_retries, mapping.bisect) == (
        100,
        0.0,
        -1,
        False,
    )


@pytest.mark.parametrize(
    "properties",
    [
        {"Stream": "not-an-arn", "StartingPosition": "LATEST"},
        {"Stream": STREAM, "StartingPosition": "AT_TIMESTAMP"},
        {"Stream": STREAM, "StartingPosition": "LATEST", "BatchSize": 0},
        {"Stream": STREAM, "StartingPosition": "LATEST", "MaximumRetryAttempts": -2},
        {"Stream": STREAM, "StartingPosition": "LATEST", "FunctionResponseTypes": ["Other"]},
        {
            "Stream": STREAM,
            "StartingPosition": "LATEST",
            "FilterCriteria": {"Filters": [{"Pattern": "{broken"}]},
        },
        {
            "Stream": STREAM,
            "StartingPosition": "LATEST",
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:x:y:z"}},
        },
    ],
)
def test_invalid_mapping_is_rejected(properties: dict[str, Any]) -> None:
    with pytest.raises(TemplateError):
        parse_mapping("F", "E", properties)


def test_checkpoints_survive_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    CheckpointStore(path).save("F/E", "arn:1", "shard-1", ShardPosition("42"))

    assert CheckpointStore(path).positions("F/E", "arn:1") == {"shard-1": ShardPosition("42")}


def test_checkpoints_of_another_stream_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints.json"
    CheckpointStore(path).save("F/E", "arn:old", "shard-1", ShardPosition("42"))

    assert CheckpointStore(path).positions("F/E", "arn:new") == {}


def test_in_memory_store_keeps_positions_for_its_lifetime() -> None:
    store = CheckpointStore(None)
    store.save("F/E", "arn:1", "shard-1", ShardPosition("42"))

    assert store.positions("F/E", "arn:1") == {"shard-1": ShardPosition("42")}
