"""``orders projections rebuild|verify|status`` against tables on DynamoDB Local."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from adapters.composition import build_rebuild_services
from infra.local.cli import main
from infra.local.dynamodb_local import DynamoDBLocal
from tests.lambda_support import handler_environment
from tests.read_model_workload import PlannedOrder, Workload, run_workload

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

pytestmark = pytest.mark.dynamodb

WORKLOAD = Workload(
    stock=(3, 3, 0, 0),
    orders=(
        PlannedOrder("c-1", "USD", (("MUG", 1, 1250),), "fulfilled", "none"),
        PlannedOrder("c-2", "EUR", (("TEA", 2, 499), ("PEN", 1, 100)), "paid", "flagged"),
        PlannedOrder("c-1", "USD", (("CUP", 1, 700),), "cancelled_placed", "none"),
    ),
)


@pytest.fixture
def target(
    tables: dict[str, str],
    dynamodb_local_server: DynamoDBLocal,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Load the workload, project it live, and return the CLI's arguments for these tables."""
    for name, value in handler_environment(tables).items():
        monkeypatch.setenv(name, value)
    # The CLI points boto3 at the local stack through the process environment; these
    # set-to-themselves calls make the monkeypatch put every value back afterwards.
    for name in (
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(name, os.environ.get(name, ""))
    monkeypatch.delenv("EVENTS_TABLE")  # the CLI finds the tables by their prefix instead
    services = build_rebuild_services(handler_environment(tables))
    recorded = run_workload(services.orders, WORKLOAD)
    projector = services.read_side.live_projector(services.orders)
    for tips in recorded.tips.values():
        projector.project_tip(tips[-1])
    services.orders.close()
    prefix = tables["EventsTable"].removesuffix("EventsTable")
    return ["--endpoint-url", dynamodb_local_server.endpoint_url, "--table-prefix", prefix]


def test_rebuild_switches_and_verify_finds_no_difference(
    target: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    rebuilt = main(["projections", "rebuild", "--segments", "2", "--no-progress", *target])
    rebuild_output = capsys.readouterr().out
    verified = main(["projections", "verify", *target])
    verify_output = capsys.readouterr().out

    assert rebuilt == 0, rebuild_output
    assert "read models switched to the new tables" in rebuild_output
    assert verified == 0, verify_output
    assert verify_output.count("no differences") == 3


def test_verify_reports_a_changed_row(
    target: list[str],
    tables: dict[str, str],
    dynamodb_client: DynamoDBClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    item = dynamodb_client.scan(TableName=tables["OrderSummariesTable"], Limit=1)["Items"][0]
    dynamodb_client.put_item(
        TableName=tables["OrderSummariesTable"], Item={**item, "total": {"N": "1"}}
    )

    verified = main(["projections", "verify", "order_summary", *target])
    output = capsys.readouterr().out

    assert verified == 1
    assert f"order_summary {item['order_id']['S']}: total:" in output


def test_status_names_the_live_tables(
    target: list[str], tables: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "status", *target]) == 0
    output = capsys.readouterr().out
    assert f"order_summary: live {tables['OrderSummariesTable']} (generation 0)" in output


def test_unknown_read_model_is_rejected(
    target: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["projections", "rebuild", "orders_by_colour", *target]) == 2
    assert "no read model is called 'orders_by_colour'" in capsys.readouterr().err


class FakeSqs:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send_message(self, **request: str) -> dict[str, str]:
        self.sent.append((request["QueueUrl"], request["MessageBody"]))
        return {"MessageId": str(len(self.sent))}


def test_distributed_rebuild_sends_one_message_per_segment(
    target: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = FakeSqs()
    real_client = boto3.client

    def client(service: str, **options: Any) -> Any:
        return sqs if service == "sqs" else real_client(service, **options)

    monkeypatch.setattr("boto3.client", client)
    queue = "https://sqs.us-east-1.amazonaws.com/000000000000/orders-RebuildQueue"

    started = main(
        [
            "projections",
            "rebuild",
            "--segments",
            "3",
            "--distributed",
            "--queue-url",
            queue,
            *target,
        ]
    )

    assert started == 0, capsys.readouterr().err
    assert [json.loads(body)["segment"] for _, body in sqs.sent] == [0, 1, 2]
    assert {url for url, _ in sqs.sent} == {queue}
