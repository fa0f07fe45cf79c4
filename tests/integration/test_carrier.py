"""The carrier adapter against the local fake carrier on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import requests

from adapters.carrier import CarrierSettings, HttpCarrier
from adapters.settings import SettingError
from application.external import (
    ShipmentRejectedError,
    ShipmentTransientError,
    shipment_idempotency_key,
)
from domain.order import OrderLine
from infra.local.fake_carrier import FakeCarrier

LINES = (OrderLine("MUG-RED", 2, 1250), OrderLine("TEE-L", 1, 2000))
KEY = shipment_idempotency_key("o-1", 1)


@pytest.fixture(scope="module")
def fake_carrier() -> Iterator[FakeCarrier]:
    with FakeCarrier(port=0) as fake:
        yield fake


@pytest.fixture
def carrier_fake(fake_carrier: FakeCarrier) -> FakeCarrier:
    fake_carrier.reset()
    return fake_carrier


@pytest.fixture
def settings(carrier_fake: FakeCarrier) -> CarrierSettings:
    """Short timeouts and retry delays, so failure tests stay fast."""
    return CarrierSettings(
        api_url=carrier_fake.url,
        connect_timeout=1.0,
        read_timeout=0.5,
        max_retries=2,
        retry_initial_delay=0.01,
        retry_max_delay=0.02,
    )


@pytest.fixture
def carrier(settings: CarrierSettings) -> HttpCarrier:
    return HttpCarrier(settings)


def create(carrier: HttpCarrier, key: str = KEY, lines: tuple[OrderLine, ...] = LINES) -> str:
    return carrier.create_shipment(order_id="o-1", lines=lines, idempotency_key=key)


# --- create -------------------------------------------------------------------------------


def test_create_shipment(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    shipment_id = create(carrier)

    [shipment] = carrier_fake.shipments()
    assert shipment["shipment_id"] == shipment_id
    assert shipment["order_id"] == "o-1"
    assert shipment["lines"] == [
        {"sku": "MUG-RED", "quantity": 2},
        {"sku": "TEE-L", "quantity": 1},
    ]
    assert shipment["status"] == "created"


def test_same_key_returns_same_shipment(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    first = create(carrier)
    second = create(carrier)

    assert second == first
    assert len(carrier_fake.shipments()) == 1


def test_same_key_other_lines_is_rejected(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    create(carrier)

    with pytest.raises(ShipmentRejectedError) as caught:
        create(carrier, lines=(OrderLine("MUG-RED", 3, 1250),))

    assert "idempotency_key_reused" in str(caught.value)
    assert len(carrier_fake.shipments()) == 1


def test_invalid_line_is_rejected(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    with pytest.raises(ShipmentRejectedError) as caught:
        create(carrier, lines=(OrderLine("MUG-RED", 0, 1250),))

    assert "quantity" in str(caught.value)
    assert caught.value.retryable is False
    assert carrier_fake.shipments() == []


# --- transient failures -------------------------------------------------------------------


def test_two_500s_retried_within_adapter(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    carrier_fake.fail_next("status_500", 2)

    shipment_id = create(carrier)

    assert [entry["shipment_id"] for entry in carrier_fake.shipments()] == [shipment_id]


def test_500s_past_retries_then_saga_retry(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    carrier_fake.fail_next("status_500", 3)

    with pytest.raises(ShipmentTransientError) as caught:
        create(carrier)
    assert caught.value.retryable is True
    assert carrier_fake.shipments() == []

    shipment_id = create(carrier)

    assert [entry["shipment_id"] for entry in carrier_fake.shipments()] == [shipment_id]


def test_dropped_response_retry_replays(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    carrier_fake.fail_next("drop_after_commit")

    shipment_id = create(carrier)

    assert [entry["shipment_id"] for entry in carrier_fake.shipments()] == [shipment_id]


def test_dropped_response_then_saga_retry(
    settings: CarrierSettings, carrier_fake: FakeCarrier
) -> None:
    carrier = HttpCarrier(dataclasses.replace(settings, max_retries=0))
    carrier_fake.fail_next("drop_after_commit")

    with pytest.raises(ShipmentTransientError):
        create(carrier)
    [stored] = carrier_fake.shipments()

    assert create(carrier) == stored["shipment_id"]
    assert len(carrier_fake.shipments()) == 1


def test_read_timeout_retry_replays(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    carrier_fake.fail_next("stall_after_commit", seconds=5)

    shipment_id = create(carrier)

    assert [entry["shipment_id"] for entry in carrier_fake.shipments()] == [shipment_id]


def test_rate_limit_retried_with_capped_delay(
    carrier: HttpCarrier, carrier_fake: FakeCarrier
) -> None:
    # The fake sends Retry-After: 1; the 0.02 s maximum delay caps it.
    carrier_fake.fail_next("status_429")

    shipment_id = create(carrier)

    assert [entry["shipment_id"] for entry in carrier_fake.shipments()] == [shipment_id]


def test_unreachable_carrier_is_transient(settings: CarrierSettings) -> None:
    closed = FakeCarrier(port=0).start()
    url = closed.url
    closed.stop()
    carrier = HttpCarrier(dataclasses.replace(settings, api_url=url))

    with pytest.raises(ShipmentTransientError, match="ConnectionError"):
        create(carrier)


# --- cancel -------------------------------------------------------------------------------


def test_cancel_shipment_twice(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    shipment_id = create(carrier)

    carrier.cancel_shipment(order_id="o-1", shipment_id=shipment_id)
    carrier.cancel_shipment(order_id="o-1", shipment_id=shipment_id)

    [shipment] = carrier_fake.shipments()
    assert shipment["status"] == "cancelled"


def test_cancel_after_shipping_is_rejected(carrier: HttpCarrier, carrier_fake: FakeCarrier) -> None:
    shipment_id = create(carrier)
    carrier_fake.mark_shipped(shipment_id)

    with pytest.raises(ShipmentRejectedError, match="already_shipped"):
        carrier.cancel_shipment(order_id="o-1", shipment_id=shipment_id)


def test_cancel_unknown_shipment_is_rejected(carrier: HttpCarrier) -> None:
    with pytest.raises(ShipmentRejectedError, match="HTTP 404"):
        carrier.cancel_shipment(order_id="o-1", shipment_id="shp_missing")


# --- authentication and settings ----------------------------------------------------------


def test_api_key_is_sent(settings: CarrierSettings) -> None:
    with FakeCarrier(port=0, api_key="carrier-secret") as fake:
        keyed = HttpCarrier(
            dataclasses.replace(settings, api_url=fake.url, api_key="carrier-secret")
        )
        unkeyed = HttpCarrier(dataclasses.replace(settings, api_url=fake.url))

        shipment_id = create(keyed)
        with pytest.raises(ShipmentRejectedError, match="CARRIER_API_KEY"):
            create(unkeyed, key="order-o-2-shipment-1")

        assert [entry["shipment_id"] for entry in fake.shipments()] == [shipment_id]


def test_settings_from_environment(carrier_fake: FakeCarrier) -> None:
    settings = CarrierSettings.from_environment(
        {**carrier_fake.environment(), "CARRIER_API_KEY": "secret", "CARRIER_MAX_RETRIES": "1"}
    )

    assert settings.api_url == carrier_fake.url
    assert settings.max_retries == 1
    assert "secret" not in repr(settings)


def test_settings_need_url() -> None:
    with pytest.raises(SettingError, match="CARRIER_API_URL"):
        CarrierSettings.from_environment({})


# --- the fake over raw HTTP ---------------------------------------------------------------


def test_fake_requires_idempotency_key(carrier_fake: FakeCarrier) -> None:
    response = requests.post(
        f"{carrier_fake.url}/shipments",
        json={"order_id": "o-1", "lines": [{"sku": "MUG", "quantity": 1}]},
        timeout=5,
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_invalid"


def test_fake_rejects_malformed_json(carrier_fake: FakeCarrier) -> None:
    response = requests.post(
        f"{carrier_fake.url}/shipments",
        data=b"{not json",
        headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"},
        timeout=5,
    )

    assert response.status_code == 400


def test_fake_replay_header(carrier_fake: FakeCarrier) -> None:
    body = {"order_id": "o-1", "lines": [{"sku": "MUG", "quantity": 1}]}
    headers = {"Idempotency-Key": "k-1"}
    first = requests.post(f"{carrier_fake.url}/shipments", json=body, headers=headers, timeout=5)
    second = requests.post(f"{carrier_fake.url}/shipments", json=body, headers=headers, timeout=5)

    assert first.status_code == 201
    assert second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()


def test_fake_admin_ship_and_state(carrier_fake: FakeCarrier, carrier: HttpCarrier) -> None:
    shipment_id = create(carrier)

    shipped = requests.post(f"{carrier_fake.url}/_fake/shipments/{shipment_id}/ship", timeout=5)
    state = requests.get(f"{carrier_fake.url}/_fake/state", timeout=5).json()

    assert shipped.status_code == 200
    assert [entry["status"] for entry in state["shipments"]] == ["shipped"]
