"""The fake Stripe over raw HTTP: authentication, idempotency, validation and limits."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.local.fake_http import MAX_BODY_BYTES, MAX_FIELDS
from infra.local.fake_stripe import FakeStripe

AUTH = {"Authorization": "Bearer sk_test_raw_http"}
CHARGE = {
    "amount": "2500",
    "currency": "usd",
    "confirm": "true",
    "payment_method": "pm_card_visa",
    "automatic_payment_methods[enabled]": "true",
    "automatic_payment_methods[allow_redirects]": "never",
    "metadata[order_id]": "o-1",
}


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe(port=0) as fake:
        yield fake


@pytest.fixture
def fake(fake_stripe: FakeStripe) -> FakeStripe:
    fake_stripe.reset()
    return fake_stripe


def post(
    fake: FakeStripe,
    path: str,
    data: dict[str, str] | str | bytes,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    sent = dict(AUTH if headers is None else headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    return requests.post(f"{fake.url}{path}", data=data, headers=sent, timeout=5)


def error_of(response: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json()["error"]
    return error


# --- authentication -----------------------------------------------------------------------


def test_missing_authorization_is_401(fake: FakeStripe) -> None:
    response = post(fake, "/v1/payment_intents", CHARGE, headers={})

    assert response.status_code == 401
    assert error_of(response)["type"] == "invalid_request_error"


def test_live_key_is_401_and_masked(fake: FakeStripe) -> None:
    live_key = "sk_live_abcdefghijklmnop"
    response = post(
        fake, "/v1/payment_intents", CHARGE, headers={"Authorization": f"Bearer {live_key}"}
    )

    assert response.status_code == 401
    assert live_key not in response.text


def test_basic_auth_is_accepted(fake: FakeStripe) -> None:
    token = base64.b64encode(b"sk_test_basic:").decode()
    response = post(
        fake, "/v1/payment_intents", CHARGE, headers={"Authorization": f"Basic {token}"}
    )

    assert response.status_code == 200


# --- idempotency --------------------------------------------------------------------------


def test_same_key_replays_response(fake: FakeStripe) -> None:
    first = post(fake, "/v1/payment_intents", CHARGE, key="k-1")
    second = post(fake, "/v1/payment_intents", CHARGE, key="k-1")

    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert second.headers["Original-Request"] == first.headers["Request-Id"]
    assert len(fake.payment_intents()) == 1


def test_same_key_other_params_is_idempotency_error(fake: FakeStripe) -> None:
    post(fake, "/v1/payment_intents", CHARGE, key="k-1")

    response = post(fake, "/v1/payment_intents", {**CHARGE, "amount": "2600"}, key="k-1")

    assert response.status_code == 400
    assert error_of(response)["type"] == "idempotency_error"
    assert len(fake.payment_intents()) == 1


def test_same_key_other_endpoint_is_idempotency_error(fake: FakeStripe) -> None:
    intent = post(fake, "/v1/payment_intents", CHARGE, key="k-1").json()

    response = post(fake, "/v1/refunds", {"payment_intent": intent["id"]}, key="k-1")

    assert error_of(response)["type"] == "idempotency_error"


def test_keys_are_scoped_to_api_key(fake: FakeStripe) -> None:
    post(fake, "/v1/payment_intents", CHARGE, key="k-1")

    other = post(
        fake,
        "/v1/payment_intents",
        CHARGE,
        key="k-1",
        headers={"Authorization": "Bearer sk_test_other_account"},
    )

    assert "Idempotent-Replayed" not in other.headers
    assert len(fake.payment_intents()) == 2


def test_rejected_request_is_not_stored(fake: FakeStripe) -> None:
    invalid = post(fake, "/v1/payment_intents", {**CHARGE, "amount": "abc"}, key="k-1")
    corrected = post(fake, "/v1/payment_intents", CHARGE, key="k-1")

    assert invalid.status_code == 400
    assert corrected.status_code == 200
    assert "Idempotent-Replayed" not in corrected.headers
    assert len(fake.payment_intents()) == 1


def test_decline_is_stored(fake: FakeStripe) -> None:
    declined = {**CHARGE, "payment_method": "pm_card_visa_chargeDeclined"}
    post(fake, "/v1/payment_intents", declined, key="k-1")

    replay = post(fake, "/v1/payment_intents", declined, key="k-1")

    assert replay.status_code == 402
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(fake.charges()) == 1


def test_overlong_key_is_rejected(fake: FakeStripe) -> None:
    response = post(fake, "/v1/payment_intents", CHARGE, key="k" * 256)

    assert response.status_code == 400
    assert fake.payment_intents() == []


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "param"),
    [
        ({"amount": "12.5"}, "parameter_invalid_integer", "amount"),
        ({"amount": "-100"}, "parameter_invalid_integer", "amount"),
        ({"amount": "0"}, "parameter_invalid_integer", "amount"),
        ({"amount": "49"}, "amount_too_small", "amount"),
        ({"amount": "100000000"}, "amount_too_large", "amount"),
        ({"amount": None}, "parameter_missing", "amount"),
        ({"currency": None}, "parameter_missing", "currency"),
        ({"payment_method": None}, "parameter_missing", "payment_method"),
        ({"payment_method": "pm_card_nonexistent"}, "resource_missing", "payment_method"),
        ({"customer": "cus_1"}, "resource_missing", "customer"),
        ({"colour": "blue"}, "parameter_unknown", "colour"),
    ],
)
def test_invalid_charge_params(
    fake: FakeStripe, changes: dict[str, str | None], code: str, param: str
) -> None:
    data = {name: value for name, value in {**CHARGE, **changes}.items() if value is not None}

    response = post(fake, "/v1/payment_intents", data)

    assert response.status_code == 400
    assert error_of(response).get("code") == code
    assert error_of(response)["param"] == param


def test_unknown_currency_is_rejected(fake: FakeStripe) -> None:
    response = post(fake, "/v1/payment_intents", {**CHARGE, "currency": "xxy"})

    assert response.status_code == 400
    assert error_of(response)["param"] == "currency"


def test_redirects_need_return_url(fake: FakeStripe) -> None:
    data = {
        name: value
        for name, value in CHARGE.items()
        if not name.startswith("automatic_payment_methods")
    }

    response = post(fake, "/v1/payment_intents", data)

    assert response.status_code == 400
    assert error_of(response)["param"] == "return_url"


def test_card_only_type_list_is_accepted(fake: FakeStripe) -> None:
    data = {
        name: value
        for name, value in CHARGE.items()
        if not name.startswith("automatic_payment_methods")
    }
    data["allowed_payment_method_types[0]"] = "card"

    response = post(fake, "/v1/payment_intents", data)

    assert response.status_code == 200


def test_unconfirmed_intent_is_rejected(fake: FakeStripe) -> None:
    response = post(fake, "/v1/payment_intents", {**CHARGE, "confirm": "false"})

    assert response.status_code == 400
    assert error_of(response)["param"] == "confirm"


def test_too_many_metadata_keys(fake: FakeStripe) -> None:
    metadata = {f"metadata[key{index}]": "v" for index in range(51)}

    response = post(fake, "/v1/payment_intents", {**CHARGE, **metadata})

    assert response.status_code == 400
    assert error_of(response)["param"] == "metadata"


def test_too_many_fields(fake: FakeStripe) -> None:
    fields = {f"metadata[k{index}]": "v" for index in range(MAX_FIELDS + 1)}

    response = post(fake, "/v1/payment_intents", {**CHARGE, **fields})

    assert response.status_code == 400
    assert str(MAX_FIELDS) in error_of(response)["message"]


def test_body_over_limit_is_413(fake: FakeStripe) -> None:
    response = post(fake, "/v1/payment_intents", "a=" + "x" * MAX_BODY_BYTES)

    assert response.status_code == 413


def test_declined_card_body(fake: FakeStripe) -> None:
    data = {**CHARGE, "payment_method": "pm_card_chargeDeclinedInsufficientFunds"}

    response = post(fake, "/v1/payment_intents", data)

    error = error_of(response)
    assert response.status_code == 402
    assert error["type"] == "card_error"
    assert error["code"] == "card_declined"
    assert error["decline_code"] == "insufficient_funds"
    assert error["payment_intent"]["status"] == "requires_payment_method"


# --- reads and refunds --------------------------------------------------------------------


def test_get_payment_intent(fake: FakeStripe) -> None:
    created = post(fake, "/v1/payment_intents", CHARGE).json()

    fetched = requests.get(
        f"{fake.url}/v1/payment_intents/{created['id']}", headers=AUTH, timeout=5
    )

    assert fetched.json() == created


def test_get_missing_payment_intent_is_404(fake: FakeStripe) -> None:
    response = requests.get(f"{fake.url}/v1/payment_intents/pi_missing", headers=AUTH, timeout=5)

    assert response.status_code == 404
    assert error_of(response)["code"] == "resource_missing"


def test_list_is_newest_first_and_limited(fake: FakeStripe) -> None:
    ids = [post(fake, "/v1/payment_intents", CHARGE).json()["id"] for _ in range(3)]

    listing = requests.get(
        f"{fake.url}/v1/payment_intents", params={"limit": "2"}, headers=AUTH, timeout=5
    ).json()

    assert [intent["id"] for intent in listing["data"]] == [ids[2], ids[1]]
    assert listing["has_more"] is True


def test_refund_and_get_refund(fake: FakeStripe) -> None:
    intent = post(fake, "/v1/payment_intents", CHARGE).json()
    refund = post(fake, "/v1/refunds", {"payment_intent": intent["id"], "amount": "500"}).json()

    fetched = requests.get(f"{fake.url}/v1/refunds/{refund['id']}", headers=AUTH, timeout=5)

    assert fetched.json() == refund
    assert refund["amount"] == 500
    assert fake.charges()[0]["amount_refunded"] == 500


def test_refund_needs_exactly_one_target(fake: FakeStripe) -> None:
    response = post(fake, "/v1/refunds", {"amount": "500"})

    assert response.status_code == 400
    assert error_of(response)["code"] == "parameter_missing"


def test_refund_of_declined_intent_is_rejected(fake: FakeStripe) -> None:
    declined = post(
        fake, "/v1/payment_intents", {**CHARGE, "payment_method": "pm_card_chargeDeclined"}
    ).json()["error"]["payment_intent"]

    response = post(fake, "/v1/refunds", {"payment_intent": declined["id"]})

    assert response.status_code == 400
    assert fake.refunds() == []


def test_unknown_route_is_404(fake: FakeStripe) -> None:
    response = post(fake, "/v1/customers", {"email": "a@example.com"})

    assert response.status_code == 404


# --- admin API ----------------------------------------------------------------------------


def test_admin_failures_and_state(fake: FakeStripe) -> None:
    armed = requests.post(
        f"{fake.url}/_fake/failures", json={"mode": "status_500", "count": 1}, timeout=5
    )
    failed = post(fake, "/v1/payment_intents", CHARGE)
    succeeded = post(fake, "/v1/payment_intents", CHARGE)
    state = requests.get(f"{fake.url}/_fake/state", timeout=5).json()

    assert armed.status_code == 201
    assert failed.status_code == 500
    assert error_of(failed)["type"] == "api_error"
    assert succeeded.status_code == 200
    assert [intent["id"] for intent in state["payment_intents"]] == [succeeded.json()["id"]]
    assert state["failures"] == []


def test_admin_rejects_unknown_mode(fake: FakeStripe) -> None:
    response = requests.post(f"{fake.url}/_fake/failures", json={"mode": "explode"}, timeout=5)

    assert response.status_code == 400
    assert "explode" in error_of(response)["message"]


def test_fail_next_rejects_bad_count(fake: FakeStripe) -> None:
    with pytest.raises(ValueError, match="count"):
        fake.fail_next("status_500", 0)


def test_admin_reset_forgets_everything(fake: FakeStripe) -> None:
    post(fake, "/v1/payment_intents", CHARGE, key="k-1")
    fake.fail_next("status_500", 5)

    requests.post(f"{fake.url}/_fake/reset", timeout=5)

    assert fake.payment_intents() == []
    assert post(fake, "/v1/payment_intents", CHARGE, key="k-1").status_code == 200
