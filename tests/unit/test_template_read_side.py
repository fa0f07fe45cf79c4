"""The read side in infra/template.yaml: tables, indexes, the rebuild function and its IAM."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.unit.test_template import (
    REGION,
    as_list,
    iam_statements,
    load_sam_template,
    translate,
)

Template = dict[str, Any]
READ_MODEL_TABLES = ("OrderSummariesTable", "CustomerStatsTable", "InventoryLevelsTable")


@pytest.fixture(scope="module", autouse=True)
def aws_region() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        yield


@pytest.fixture(scope="module")
def sam() -> Template:
    return load_sam_template()


@pytest.fixture(scope="module")
def cloudformation(sam: Template) -> Template:
    return translate(sam)


def role_statements(cloudformation: Template, function_id: str) -> list[dict[str, Any]]:
    role = f"{function_id}Role"
    return [
        statement
        for location, statement in iam_statements(cloudformation)
        if location.startswith(f"{role}/")
    ]


def resources_of(statements: list[dict[str, Any]], action: str) -> list[Any]:
    return [
        resource
        for statement in statements
        if action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
    ]


def index_names(sam: Template, table: str) -> list[str]:
    properties = sam["Resources"][table]["Properties"]
    return [index["IndexName"] for index in properties.get("GlobalSecondaryIndexes", [])]


def test_order_summaries_have_the_three_list_indexes(sam: Template) -> None:
    assert index_names(sam, "OrderSummariesTable") == [
        "by_customer",
        "by_status",
        "needs_attention",
    ]


def test_customer_stats_index_the_order_rows_by_date(sam: Template) -> None:
    assert index_names(sam, "CustomerStatsTable") == ["by_customer"]


def test_every_function_knows_the_read_model_tables(sam: Template) -> None:
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert {
        "ORDER_SUMMARIES_TABLE",
        "CUSTOMER_STATS_TABLE",
        "INVENTORY_LEVELS_TABLE",
        "PROJECTION_CONTROL_TABLE",
    } <= set(variables)


@pytest.mark.parametrize("function_id", ["ApiFunction", "ProjectorFunction"])
def test_only_the_rebuild_may_scan(cloudformation: Template, function_id: str) -> None:
    statements = role_statements(cloudformation, function_id)
    assert resources_of(statements, "dynamodb:Scan") == []


def test_api_reads_read_models_without_writing_them(cloudformation: Template) -> None:
    statements = role_statements(cloudformation, "ApiFunction")
    read_model_writes = [
        resource
        for action in ("dynamodb:PutItem", "dynamodb:UpdateItem")
        for resource in resources_of(statements, action)
        if any(table in str(resource) for table in READ_MODEL_TABLES)
    ]
    assert read_model_writes == []


def test_rebuild_creates_and_deletes_only_generation_tables(cloudformation: Template) -> None:
    statements = role_statements(cloudformation, "RebuildFunction")
    for action in ("dynamodb:CreateTable", "dynamodb:DeleteTable", "dynamodb:UpdateTable"):
        resources = resources_of(statements, action)
        assert resources, action
        assert all("-g*" in str(resource) for resource in resources), action


def test_rebuild_function_reads_one_segment_per_message(sam: Template) -> None:
    event = sam["Resources"]["RebuildFunction"]["Properties"]["Events"]["SegmentMessages"]
    assert event["Properties"]["BatchSize"] == 1
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_rebuild_queue_outlives_the_function_timeout(sam: Template) -> None:
    timeout = sam["Resources"]["RebuildFunction"]["Properties"]["Timeout"]
    visibility = sam["Resources"]["RebuildQueue"]["Properties"]["VisibilityTimeout"]
    assert visibility >= 6 * timeout


def test_rebuild_queue_has_dlq_and_alarm(sam: Template) -> None:
    redrive = sam["Resources"]["RebuildQueue"]["Properties"]["RedrivePolicy"]
    alarm = sam["Resources"]["RebuildDeadLetterAlarm"]["Properties"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RebuildDeadLetterQueue", "Arn"]}
    assert alarm["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": ["RebuildDeadLetterQueue", "QueueName"]
    }


@pytest.mark.parametrize(
    ("path", "method"),
    [("/orders", "get"), ("/customers/{customer_id}/stats", "get")],
)
def test_api_routes_the_new_queries(sam: Template, path: str, method: str) -> None:
    events = sam["Resources"]["ApiFunction"]["Properties"]["Events"].values()
    routes = {(event["Properties"]["Path"], event["Properties"]["Method"]) for event in events}
    assert (path, method) in routes
