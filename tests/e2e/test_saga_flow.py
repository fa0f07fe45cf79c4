"""The order saga end to end: the real template on the local stack, driven over HTTP.

Orders go through the whole AWS-shaped wiring: API -> events table -> stream ->
publisher -> EventBridge bus -> rule -> saga queue -> saga -> reservation queue ->
item workers -> fake Stripe, fake carrier and SES (moto). Every wait polls with a
deadline, and the counts are read only once the stack has gone quiet
(``LocalStack.wait_until_idle``), so a late duplicate would still be counted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local import dynamodb_local
from infra.local.cli import main as orders_cli
from infra.local.dev_state import STATE_FILE_NAME
from infra.local.stack import LocalStack
from infra.local.stream_poller import lambda_record
from infra.local.template import LOCAL_ACCOUNT, LOCAL_REGION
from tests.integration.local_stack_support import log_function_output

pytestmark = pytest.mark.e2e

FULFILLED_DEADLINE = 15.0
FINAL_DEADLINE = 30.0
IDLE_DEADLINE = 30.0
FINAL_STATUSES = {"FULFILLED", "FAILED", "CANCELLED"}
UNIT_PRICE = 1250
HTTP_TIMEOUT = 10


@pytest.fixture(scope="module")
def stack(dynamodb_local_server: dynamodb_local.DynamoDBLocal) -> Iterator[LocalStack]:
    with LocalStack(
        name_prefix=f"saga{uuid.uuid4().hex[:8]}-",
        dynamodb_endpoint_url=dynamodb_local_server.endpoint_url,
        parameters={"SagaRetryBaseSeconds": "0.2"},
        sqs_retry_visibility=1,
        function_output=log_function_output,
    ) as running:
        yield running


@pytest.fixture(autouse=True)
def quiet_and_healthy_fakes(stack: LocalStack) -> Iterator[None]:
    """Start each test with no armed failures and leave no work running after it."""
    yield
    assert stack.fake_stripe is not None
    assert stack.fake_carrier is not None
    stack.fake_stripe.failures.clear()
    stack.fake_carrier.failures.clear()
    stack.wait_until_idle(IDLE_DEADLINE)


def new_sku() -> str:
    return f"SKU-{uuid.uuid4().hex[:10]}"


# HTTP ---------------------------------------------------------------------------------


def restock(stack: LocalStack, sku: str, quantity: int) -> None:
    response = requests.post(
        f"{stack.api_url}/inventory/{sku}/restock",
        json={"quantity": quantity},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text


def stock(stack: LocalStack, sku: str) -> dict[str, Any]:
    response = requests.get(f"{stack.api_url}/inventory/{sku}", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    level: dict[str, Any] = response.json()
    return level


def place_order(
    stack: LocalStack,
    lines: dict[str, int],
    *,
    payment_method: str = "pm_card_visa",
    customer_id: str | None = None,
) -> str:
    body = {
        "customer_id": customer_id or f"c-{uuid.uuid4().hex[:10]}",
        "currency": "USD",
        "payment_method": payment_method,
        "lines": [
            {"sku": sku, "quantity": quantity, "unit_price": UNIT_PRICE}
            for sku, quantity in lines.items()
        ],
    }
    response = requests.post(f"{stack.api_url}/orders", json=body, timeout=HTTP_TIMEOUT)
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def read_order(stack: LocalStack, order_id: str) -> dict[str, Any] | None:
    response = requests.get(f"{stack.api_url}/orders/{order_id}", timeout=HTTP_TIMEOUT)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


def wait_for_order(
    stack: LocalStack,
    order_id: str,
    condition: Callable[[dict[str, Any]], bool],
    deadline: float = FINAL_DEADLINE,
) -> dict[str, Any]:
    """Poll ``GET /orders/{id}`` until ``condition`` holds; fail with the last state seen."""
    until = time.monotonic() + deadline
    order = None
    while time.monotonic() < until:
        order = read_order(stack, order_id)
        if order is not None and condition(order):
            return order
        time.sleep(0.05)
    raise AssertionError(f"order {order_id} did not get there within {deadline} s: {order}")


def wait_for_status(
    stack: LocalStack, order_id: str, status: str, deadline: float = FINAL_DEADLINE
) -> dict[str, Any]:
    return wait_for_order(stack, order_id, lambda order: order["status"] == status, deadline)


def order_events(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    response = requests.get(f"{stack.api_url}/orders/{order_id}/events", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def settle(stack: LocalStack) -> None:
    assert stack.wait_until_idle(IDLE_DEADLINE), "the stack still had work after 30 s"


# Fakes and moto -------------------------------------------------------------------


def fake_stripe(stack: LocalStack) -> Any:
    assert stack.fake_stripe is not None
    return stack.fake_stripe


def fake_carrier(stack: LocalStack) -> Any:
    assert stack.fake_carrier is not None
    return stack.fake_carrier


def charges(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    """Successful charges of the order in the fake Stripe."""
    return [
        charge
        for charge in fake_stripe(stack).charges()
        if charge["metadata"].get("order_id") == order_id and charge["status"] == "succeeded"
    ]


def payment_intents(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    return [
        intent
        for intent in fake_stripe(stack).payment_intents()
        if intent["metadata"].get("order_id") == order_id
    ]


def refunds(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    return [
        refund
        for refund in fake_stripe(stack).refunds()
        if refund["metadata"].get("order_id") == order_id
    ]


def emails(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    return [email for email in stack.sent_emails() if order_id in (email["subject"] or "")]


def shipments(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    return [
        shipment for shipment in fake_carrier(stack).shipments() if shipment["order_id"] == order_id
    ]


def wait_for_emails(stack: LocalStack, order_id: str, deadline: float = FINAL_DEADLINE) -> None:
    until = time.monotonic() + deadline
    while not emails(stack, order_id):
        if time.monotonic() > until:
            raise AssertionError(f"no confirmation of order {order_id} within {deadline} s")
        time.sleep(0.1)


# The happy path -------------------------------------------------------------------


def test_paid_order_is_fulfilled_within_15_s(stack: LocalStack) -> None:
    mug, tea = new_sku(), new_sku()
    restock(stack, mug, 10)
    restock(stack, tea, 5)

    started = time.monotonic()
    order_id = place_order(stack, {mug: 2, tea: 1})
    order = wait_for_status(stack, order_id, "FULFILLED", FULFILLED_DEADLINE)
    print(f"measured: seconds_to_fulfilled={time.monotonic() - started:.2f}")
    wait_for_emails(stack, order_id)
    settle(stack)

    assert order["total"] == 3 * UNIT_PRICE
    assert [charge["amount"] for charge in charges(stack, order_id)] == [3 * UNIT_PRICE]
    assert stock(stack, mug)["on_hand"] == 8
    assert stock(stack, tea)["on_hand"] == 4
    assert stock(stack, mug)["reserved"] == 0
    assert len(emails(stack, order_id)) == 1


# Failures and compensation --------------------------------------------------------


def test_out_of_stock_line_fails_order(stack: LocalStack) -> None:
    plenty, scarce = new_sku(), new_sku()
    restock(stack, plenty, 10)
    restock(stack, scarce, 1)

    order_id = place_order(stack, {plenty: 2, scarce: 3})
    order = wait_for_status(stack, order_id, "FAILED")
    settle(stack)

    assert scarce in order["failure_reason"]
    assert charges(stack, order_id) == []
    assert stock(stack, plenty)["available"] == 10
    assert stock(stack, plenty)["on_hand"] == 10
    assert stock(stack, scarce)["available"] == 1


def test_declined_card_fails_and_restores_stock(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)

    order_id = place_order(stack, {sku: 4}, payment_method="pm_card_visa_chargeDeclined")
    order = wait_for_status(stack, order_id, "FAILED")
    settle(stack)

    assert "declined" in order["failure_reason"]
    assert charges(stack, order_id) == []
    assert stock(stack, sku)["available"] == 10
    assert stock(stack, sku)["reserved"] == 0


def test_cancel_after_payment_refunds_and_restores_stock(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    # The carrier creates the shipment, then delays each of the next two answers by 3 s
    # and drops the connection. Whichever saga runs reach it (one or two, since the
    # PaymentCaptured event starts another), a retry with the same key gets the
    # shipment. The order stays PAID for at least 3 s, long enough to cancel it.
    fake_carrier(stack).fail_next("stall_after_commit", 2, path_prefix="/shipments", seconds=3.0)

    order_id = place_order(stack, {sku: 3})
    wait_for_status(stack, order_id, "PAID")
    cancelled = requests.post(f"{stack.api_url}/orders/{order_id}/cancel", timeout=HTTP_TIMEOUT)
    wait_for_status(stack, order_id, "CANCELLED")
    settle(stack)

    assert cancelled.status_code == 202
    assert [refund["amount"] for refund in refunds(stack, order_id)] == [3 * UNIT_PRICE]
    assert stock(stack, sku)["available"] == 10
    assert stock(stack, sku)["on_hand"] == 10
    assert [shipment["status"] for shipment in shipments(stack, order_id)] == ["cancelled"]


def test_cancel_after_fulfilment_is_409(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    order_id = place_order(stack, {sku: 1})
    wait_for_status(stack, order_id, "FULFILLED")

    response = requests.post(f"{stack.api_url}/orders/{order_id}/cancel", timeout=HTTP_TIMEOUT)

    assert response.status_code == 409
    assert refunds(stack, order_id) == []


# Stripe failing -------------------------------------------------------------------


def test_stripe_failing_twice_then_up_charges_once(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    fake_stripe(stack).fail_next("status_500", 2, path_prefix="/v1/payment_intents")

    order_id = place_order(stack, {sku: 1})
    wait_for_status(stack, order_id, "FULFILLED")
    settle(stack)

    assert len(charges(stack, order_id)) == 1


def test_connection_dropped_after_charge_charges_once(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    fake_stripe(stack).fail_next("drop_after_commit", 1, path_prefix="/v1/payment_intents")

    order_id = place_order(stack, {sku: 1})
    wait_for_status(stack, order_id, "FULFILLED")
    settle(stack)

    assert len(payment_intents(stack, order_id)) == 1
    assert len(charges(stack, order_id)) == 1


# Duplicate deliveries -------------------------------------------------------------


def eventbridge_event(order_id: str, event: dict[str, Any]) -> str:
    """An order event as the bus delivers it to the saga queue."""
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": event["type"],
            "source": "orders.order",
            "account": LOCAL_ACCOUNT,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": LOCAL_REGION,
            "resources": [],
            "detail": {
                "order_id": order_id,
                "stream_id": order_id,
                "version": event["version"],
                "occurred_at": event["occurred_at"],
                "data": event["data"],
            },
        }
    )


def tip_records(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    """The stream records of the order's tip, shaped as the publisher received them."""
    table = stack.table_names["EventsTable"]
    dynamodb, streams = stack.client("dynamodb"), stack.client("dynamodbstreams")
    stream_arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    records = []
    for shard in streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not page["Records"]:
                break
            for raw in page["Records"]:
                image = raw["dynamodb"].get("NewImage", {})
                if (
                    image.get("kind", {}).get("S") == "tip"
                    and image.get("stream_id", {}).get("S") == order_id
                ):
                    records.append(lambda_record(raw, stream_arn))
            iterator = page.get("NextShardIterator")
    return records


def test_duplicate_deliveries_change_nothing(stack: LocalStack) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    order_id = place_order(stack, {sku: 2})
    wait_for_status(stack, order_id, "FULFILLED")
    wait_for_emails(stack, order_id)
    settle(stack)
    events_before = order_events(stack, order_id)
    stock_before = stock(stack, sku)

    sqs = stack.client("sqs")
    for event in events_before:
        sqs.send_message(
            QueueUrl=stack.queue_url("SagaQueue"), MessageBody=eventbridge_event(order_id, event)
        )
    sqs.send_message(
        QueueUrl=stack.queue_url("ReservationQueue"),
        MessageBody=json.dumps({"order_id": order_id, "sku": sku, "quantity": 2}),
    )
    records = tip_records(stack, order_id)
    republished = stack.runners["PublisherFunction"].invoke({"Records": records})
    settle(stack)

    assert len(records) >= 4
    assert republished.payload == {"batchItemFailures": []}
    assert len(charges(stack, order_id)) == 1
    assert len(emails(stack, order_id)) == 1
    assert stock(stack, sku) == stock_before
    assert order_events(stack, order_id) == events_before


# Contention -----------------------------------------------------------------------


def test_fifty_orders_for_ten_units(stack: LocalStack) -> None:
    sku = new_sku()
    customer = f"c-{uuid.uuid4().hex[:10]}"
    restock(stack, sku, 10)
    placed: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def place() -> None:
        try:
            order_id = place_order(stack, {sku: 1}, customer_id=customer)
        except BaseException as error:  # the assert below reports it; a thread would lose it
            with lock:
                errors.append(error)
            return
        with lock:
            placed.append(order_id)

    started = time.monotonic()
    threads = [threading.Thread(target=place) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    levels = []
    statuses: dict[str, str] = {}
    until = time.monotonic() + 90
    while time.monotonic() < until:
        levels.append(stock(stack, sku))
        response = requests.get(
            f"{stack.api_url}/customers/{customer}/orders",
            params={"limit": "100"},
            timeout=HTTP_TIMEOUT,
        )
        statuses = {row["order_id"]: row["status"] for row in response.json()["orders"]}
        if len(statuses) == len(placed) and set(statuses.values()) <= FINAL_STATUSES:
            break
        time.sleep(0.25)
    print(f"measured: seconds_for_50_orders={time.monotonic() - started:.2f}")
    settle(stack)
    final = stock(stack, sku)
    fulfilled = [order_id for order_id, status in statuses.items() if status == "FULFILLED"]

    assert len(placed) == 50
    assert list(statuses.values()).count("FULFILLED") == 10
    assert list(statuses.values()).count("FAILED") == 40
    assert (final["on_hand"], final["reserved"]) == (0, 0)
    assert min(level["available"] for level in levels) >= 0
    assert sum(len(charges(stack, order_id)) for order_id in fulfilled) == 10


# Operator retry -------------------------------------------------------------------


def attention_messages(stack: LocalStack, order_id: str) -> list[dict[str, Any]]:
    response = stack.client("sqs").receive_message(
        QueueUrl=stack.queue_url("SagaAttentionQueue"),
        MaxNumberOfMessages=10,
        WaitTimeSeconds=1,
    )
    bodies = [json.loads(message["Body"]) for message in response.get("Messages", [])]
    return [body for body in bodies if body.get("order_id") == order_id]


def test_failing_refund_needs_attention_until_retried(stack: LocalStack, tmp_path: Path) -> None:
    sku = new_sku()
    restock(stack, sku, 10)
    # Shipping fails for good, so the saga refunds; the refunds fail for good too.
    fake_carrier(stack).fail_next("status_500", 1000, path_prefix="/shipments")
    fake_stripe(stack).fail_next("status_500", 1000, path_prefix="/v1/refunds")

    order_id = place_order(stack, {sku: 2})
    stuck = wait_for_order(stack, order_id, lambda order: order["needs_attention"], 60)
    reported = attention_messages(stack, order_id)
    fake_stripe(stack).failures.clear()
    fake_carrier(stack).failures.clear()
    stack.dev_state().write(tmp_path / STATE_FILE_NAME)
    exit_code = orders_cli(["saga", "retry", order_id, "--data-dir", str(tmp_path)])
    resolved = wait_for_order(stack, order_id, lambda order: not order["needs_attention"])
    settle(stack)

    assert stuck["status"] == "PAID"
    assert [message["step"] for message in reported] == ["refund"]
    assert exit_code == 0
    assert resolved["status"] == "FAILED"
    assert len(refunds(stack, order_id)) == 1
    assert stock(stack, sku)["available"] == 10
