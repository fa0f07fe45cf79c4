"""The local IAM check: which permissions a call needs and whether a role grants them."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from infra.local.iam import (
    AccessGuard,
    FunctionPolicy,
    Permission,
    Statement,
    required_permissions,
)
from infra.local.template import Template, TemplateError

TABLE = "arn:aws:dynamodb:us-east-1:123456789012:table"


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.load()


def policy(*statements: dict[str, Any]) -> FunctionPolicy:
    return FunctionPolicy.from_json("TestFunction", list(statements))


def allowed(function: FunctionPolicy, action: str, resource: str) -> bool:
    return function.allows(Permission(action, resource))


# What a call needs --------------------------------------------------------------------


def test_transaction_needs_the_item_action_on_each_table() -> None:
    params = {
        "TransactItems": [
            {"Put": {"TableName": "Events", "Item": {}}},
            {"Update": {"TableName": "Stats", "Key": {}}},
            {"ConditionCheck": {"TableName": "Events", "Key": {}}},
        ]
    }
    assert required_permissions("dynamodb", "TransactWriteItems", params) == [
        Permission("dynamodb:PutItem", f"{TABLE}/Events"),
        Permission("dynamodb:UpdateItem", f"{TABLE}/Stats"),
        Permission("dynamodb:ConditionCheckItem", f"{TABLE}/Events"),
    ]


def test_batch_write_needs_batch_write_on_each_table() -> None:
    params = {"RequestItems": {"B": [], "A": []}}
    assert required_permissions("dynamodb", "BatchWriteItem", params) == [
        Permission("dynamodb:BatchWriteItem", f"{TABLE}/A"),
        Permission("dynamodb:BatchWriteItem", f"{TABLE}/B"),
    ]


def test_query_on_an_index_needs_the_index_arn() -> None:
    params = {"TableName": "Orders", "IndexName": "by_status"}
    assert required_permissions("dynamodb", "Query", params) == [
        Permission("dynamodb:Query", f"{TABLE}/Orders/index/by_status")
    ]


def test_queue_url_becomes_the_queue_arn() -> None:
    params = {"QueueUrl": "http://127.0.0.1:5000/123456789012/SagaQueue", "MessageBody": "{}"}
    assert required_permissions("sqs", "SendMessage", params) == [
        Permission("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:SagaQueue")
    ]


def test_sqs_batch_call_needs_the_single_message_action() -> None:
    params = {"QueueUrl": "http://127.0.0.1:5000/123456789012/Reservations", "Entries": []}
    assert required_permissions("sqs", "SendMessageBatch", params) == [
        Permission("sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:Reservations")
    ]


def test_put_events_defaults_to_default_bus() -> None:
    params = {"Entries": [{"Source": "s", "DetailType": "d", "Detail": "{}"}]}
    assert required_permissions("events", "PutEvents", params) == [
        Permission("events:PutEvents", "arn:aws:events:us-east-1:123456789012:event-bus/default")
    ]


def test_services_not_emulated_need_nothing() -> None:
    assert required_permissions("ses", "SendEmail", {"Source": "a@example.com"}) == []


# What a role grants --------------------------------------------------------------------


def test_resource_wildcard_covers_generations_and_their_indexes() -> None:
    function = policy(
        {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{TABLE}/Orders-g*"}
    )
    assert allowed(function, "dynamodb:Query", f"{TABLE}/Orders-g12/index/by_status")


def test_resource_wildcard_does_not_cover_the_base_table() -> None:
    function = policy(
        {"Effect": "Allow", "Action": "dynamodb:Query", "Resource": f"{TABLE}/Orders-g*"}
    )
    assert not allowed(function, "dynamodb:Query", f"{TABLE}/Orders")


def test_action_names_match_without_case() -> None:
    function = policy({"Effect": "Allow", "Action": "DynamoDB:getitem", "Resource": "*"})
    assert allowed(function, "dynamodb:GetItem", f"{TABLE}/Orders")


def test_explicit_deny_wins_over_allow() -> None:
    function = policy(
        {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
        {"Effect": "Deny", "Action": "dynamodb:DeleteTable", "Resource": f"{TABLE}/Events"},
    )
    assert not allowed(function, "dynamodb:DeleteTable", f"{TABLE}/Events")


def test_square_brackets_are_literal_in_resources() -> None:
    function = policy({"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "arn:q[1]"})
    assert not allowed(function, "sqs:SendMessage", "arn:q1")


def test_not_action_is_refused_when_read() -> None:
    with pytest.raises(TemplateError, match="NotAction is not emulated"):
        Statement.parse({"Effect": "Allow", "NotAction": "s3:*", "Resource": "*"}, "here")


def test_statement_without_action_is_refused() -> None:
    with pytest.raises(TemplateError, match="Action must be a string or a list"):
        Statement.parse({"Effect": "Allow", "Resource": "*"}, "here")


# The template's roles --------------------------------------------------------------------


def test_api_may_query_the_status_index(template: Template) -> None:
    api = FunctionPolicy.from_template(template, "ApiFunction")
    assert allowed(api, "dynamodb:Query", f"{TABLE}/OrderSummariesTable/index/by_status")


def test_api_may_not_scan_the_order_summaries(template: Template) -> None:
    api = FunctionPolicy.from_template(template, "ApiFunction")
    assert not allowed(api, "dynamodb:Scan", f"{TABLE}/OrderSummariesTable")


def test_rebuild_may_bulk_load_a_generation(template: Template) -> None:
    rebuild = FunctionPolicy.from_template(template, "RebuildFunction")
    assert allowed(rebuild, "dynamodb:BatchWriteItem", f"{TABLE}/CustomerStatsTable-g3")


def test_rebuild_may_not_write_the_live_base_table(template: Template) -> None:
    rebuild = FunctionPolicy.from_template(template, "RebuildFunction")
    assert not allowed(rebuild, "dynamodb:BatchWriteItem", f"{TABLE}/CustomerStatsTable")


def test_unknown_function_is_refused(template: Template) -> None:
    with pytest.raises(TemplateError, match="no function 'NoSuchFunction'"):
        FunctionPolicy.from_template(template, "NoSuchFunction")


# The guard on a boto3 session ------------------------------------------------------------


# Nothing listens on the discard port: a call that got past the guard fails to connect.
UNREACHABLE = "http://127.0.0.1:9"


def guarded_client(enforce: bool) -> tuple[Any, AccessGuard, Stubber]:
    function = policy(
        {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": f"{TABLE}/Events"}
    )
    guard = AccessGuard(function, enforce=enforce)
    session = boto3.session.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    guard.install(session)
    client = session.client(
        "dynamodb",
        endpoint_url=UNREACHABLE,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    return client, guard, Stubber(client)


def test_enforcing_guard_refuses_before_sending() -> None:
    client, _, _ = guarded_client(enforce=True)
    with pytest.raises(ClientError) as raised:
        client.put_item(TableName="Events", Item={"pk": {"S": "x"}})
    assert raised.value.response["Error"]["Code"] == "AccessDeniedException"


def test_refusal_names_the_action_and_resource() -> None:
    client, _, _ = guarded_client(enforce=True)
    with pytest.raises(ClientError) as raised:
        client.put_item(TableName="Events", Item={"pk": {"S": "x"}})
    assert f"dynamodb:PutItem on resource: {TABLE}/Events" in str(raised.value)


def test_enforcing_guard_lets_granted_calls_through() -> None:
    client, _, stubber = guarded_client(enforce=True)
    stubber.add_response("get_item", {}, {"TableName": "Events", "Key": {"pk": {"S": "x"}}})
    with stubber:
        assert client.get_item(TableName="Events", Key={"pk": {"S": "x"}}) == {}


def test_recording_guard_records_denied_call() -> None:
    client, guard, stubber = guarded_client(enforce=False)
    stubber.add_response("put_item", {}, {"TableName": "Events", "Item": {"pk": {"S": "x"}}})
    with stubber:
        client.put_item(TableName="Events", Item={"pk": {"S": "x"}})
    assert guard.denied == [Permission("dynamodb:PutItem", f"{TABLE}/Events")]


def test_sam_policy_template_grants_its_actions() -> None:
    body = {
        "Resources": {
            "Table": {"Type": "AWS::DynamoDB::Table", "Properties": {}},
            "Reader": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "Policies": [{"DynamoDBReadPolicy": {"TableName": {"Ref": "Table"}}}]
                },
            },
        }
    }
    reader = FunctionPolicy.from_template(Template(body=body), "Reader")
    assert allowed(reader, "dynamodb:Query", f"{TABLE}/Table/index/by_status")
