"""The Stripe payment gateway against the local fake Stripe on 127.0.0.1."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.settings import SettingError
from adapters.stripe_payments import StripePaymentGateway, StripeSettings
from application.external import (
    PaymentAlreadyRefundedError,
    PaymentConfigurationError,
    PaymentDeclinedError,
    PaymentResult,
    PaymentTransientError,
)
from infra.local.fake_stripe import FakeStripe

API_KEY = "sk_test_orders_integration"


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[FakeStripe]:
    with FakeStripe(port=0) as fake:
        yield fake


@pytest.fixture
def stripe_fake(fake_stripe: FakeStripe) -> FakeStripe:
    fake_stripe.reset()
    return fake_stripe


@pytest.fixture
def settings(stripe_fake: FakeStripe) -> StripeSettings:
    """Short timeouts and retry delays, so failure tests stay fast."""
    return StripeSettings(
        api_key=API_KEY,
        api_base=stripe_fake.url,
        connect_timeout=1.0,
        read_timeout=0.5,
        max_network_retries=2,
        retry_initial_delay=0.01,
        retry_max_delay=0.02,
    )


@pytest.fixture
def gateway(settings: StripeSettings) -> StripePaymentGateway:
    return StripePaymentGateway.from_settings(settings)


def charge(
    gateway: StripePaymentGateway,
    order_id: str = "o-1",
    attempt: int = 1,
    *,
    amount: int = 2500,
    payment_method: str = "pm_card_visa",
) -> PaymentResult:
    return gateway.charge(
        order_id=order_id,
        attempt=attempt,
        amount=amount,
        currency="USD",
        payment_method=payment_method,
        customer_id="c-1",
    )


def succeeded_charges(fake: FakeStripe) -> list[dict[str, Any]]:
    return [entry for entry in fake.charges() if entry["status"] == "succeeded"]


# --- charges ------------------------------------------------------------------------------


def test_charge_succeeds(gateway: StripePaymentGateway, stripe_fake: FakeStripe) -> None:
    result = charge(gateway)

    assert result.status == "succeeded"
    assert result.amount == 2500
    assert result.currency == "USD"
    assert result.payment_id.startswith("pi_")
    assert result.replayed is False
    [intent] = stripe_fake.payment_intents()
    assert intent["id"] == result.payment_id
    assert intent["currency"] == "usd"
    assert intent["metadata"] == {"order_id": "o-1", "customer_id": "c-1", "attempt": "1"}
    [stored_charge] = succeeded_charges(stripe_fake)
    assert stored_charge["id"] == result.charge_id


def test_charge_same_attempt_replays(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    first = charge(gateway)
    second = charge(gateway)

    assert second.payment_id == first.payment_id
    assert second.replayed is True
    assert len(stripe_fake.payment_intents()) == 1


def test_charge_new_attempt_charges_again(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    first = charge(gateway, attempt=1)
    second = charge(gateway, attempt=2)

    assert second.payment_id != first.payment_id
    assert len(succeeded_charges(stripe_fake)) == 2


def test_generic_decline(gateway: StripePaymentGateway, stripe_fake: FakeStripe) -> None:
    with pytest.raises(PaymentDeclinedError) as caught:
        charge(gateway, payment_method="pm_card_visa_chargeDeclined")

    assert caught.value.decline_code == "generic_decline"
    assert caught.value.customer_message == "Your card was declined."
    assert caught.value.retryable is False
    assert caught.value.order_id == "o-1"
    [intent] = stripe_fake.payment_intents()
    assert intent["status"] == "requires_payment_method"
    assert succeeded_charges(stripe_fake) == []


def test_insufficient_funds_decline(gateway: StripePaymentGateway) -> None:
    with pytest.raises(PaymentDeclinedError) as caught:
        charge(gateway, payment_method="pm_card_chargeDeclinedInsufficientFunds")

    assert caught.value.decline_code == "insufficient_funds"
    assert caught.value.customer_message == "Your card has insufficient funds."


def test_decline_replayed_for_same_attempt(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    for _ in range(2):
        with pytest.raises(PaymentDeclinedError):
            charge(gateway, payment_method="pm_card_visa_chargeDeclined")

    assert len(stripe_fake.charges()) == 1


def test_amount_below_minimum_is_declined(gateway: StripePaymentGateway) -> None:
    with pytest.raises(PaymentDeclinedError) as caught:
        charge(gateway, amount=10)

    assert caught.value.decline_code == "amount_too_small"


# --- transient failures and retries -----------------------------------------------------


def test_two_500s_retried_within_adapter(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    stripe_fake.fail_next("status_500", 2)

    result = charge(gateway)

    assert result.status == "succeeded"
    assert [intent["id"] for intent in stripe_fake.payment_intents()] == [result.payment_id]


def test_500s_past_retries_then_saga_retry(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    stripe_fake.fail_next("status_500", 3)  # the first try and both network retries

    with pytest.raises(PaymentTransientError) as caught:
        charge(gateway)
    assert caught.value.retryable is True
    assert caught.value.outcome_known is True
    assert stripe_fake.payment_intents() == []

    result = charge(gateway, attempt=2)  # Stripe answered, so the saga moves to a new key

    assert [intent["id"] for intent in stripe_fake.payment_intents()] == [result.payment_id]


def test_dropped_response_retry_replays(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    stripe_fake.fail_next("drop_after_commit")

    result = charge(gateway)

    [stored_charge] = succeeded_charges(stripe_fake)
    assert result.replayed is True
    assert result.payment_id == stored_charge["payment_intent"]


def test_dropped_response_then_saga_retry(
    settings: StripeSettings, stripe_fake: FakeStripe
) -> None:
    gateway = StripePaymentGateway.from_settings(
        dataclasses.replace(settings, max_network_retries=0)
    )
    stripe_fake.fail_next("drop_after_commit")

    with pytest.raises(PaymentTransientError):
        charge(gateway)
    [stored_charge] = succeeded_charges(stripe_fake)  # the charge happened all the same

    result = charge(gateway)  # the saga retries the same attempt

    assert result.payment_id == stored_charge["payment_intent"]
    assert result.replayed is True
    assert len(succeeded_charges(stripe_fake)) == 1


def test_read_timeout_retry_replays(gateway: StripePaymentGateway, stripe_fake: FakeStripe) -> None:
    # The fake sends no response for 5 s; the adapter's 0.5 s read timeout fires first.
    stripe_fake.fail_next("stall_after_commit", seconds=5)

    result = charge(gateway)

    assert result.replayed is True
    assert len(succeeded_charges(stripe_fake)) == 1


def test_rate_limit_is_transient(gateway: StripePaymentGateway, stripe_fake: FakeStripe) -> None:
    stripe_fake.fail_next("status_429")

    with pytest.raises(PaymentTransientError):
        charge(gateway)
    assert stripe_fake.payment_intents() == []


def test_unreachable_stripe_is_transient(settings: StripeSettings) -> None:
    closed = FakeStripe(port=0).start()
    url = closed.url
    closed.stop()
    gateway = StripePaymentGateway.from_settings(dataclasses.replace(settings, api_base=url))

    with pytest.raises(PaymentTransientError) as caught:
        charge(gateway)
    assert caught.value.outcome_known is False


# --- configuration errors ---------------------------------------------------------------


def test_idempotency_mismatch_is_configuration_error(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    charge(gateway, amount=2500)

    with pytest.raises(PaymentConfigurationError) as caught:
        charge(gateway, amount=3000)  # same attempt, other parameters

    assert "IdempotencyError" in str(caught.value)
    assert caught.value.retryable is False
    assert len(stripe_fake.payment_intents()) == 1


@pytest.mark.parametrize("api_key", ["", "sk_live_not_for_tests", "not-a-key"])
def test_rejected_api_key_is_configuration_error(
    settings: StripeSettings, stripe_fake: FakeStripe, api_key: str
) -> None:
    gateway = StripePaymentGateway.from_settings(dataclasses.replace(settings, api_key=api_key))

    with pytest.raises(PaymentConfigurationError) as caught:
        charge(gateway)

    assert "HTTP 401" in str(caught.value)
    assert "STRIPE_API_KEY" in str(caught.value)
    assert stripe_fake.payment_intents() == []


def test_unknown_payment_method_is_configuration_error(
    gateway: StripePaymentGateway,
) -> None:
    with pytest.raises(PaymentConfigurationError) as caught:
        charge(gateway, payment_method="pm_card_unknown")

    assert "resource_missing" in str(caught.value)
    assert "pm_card_unknown" not in str(caught.value)


# --- refunds ------------------------------------------------------------------------------


def test_refund_same_attempt_refunds_once(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    payment = charge(gateway)

    first = gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1)
    second = gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1)

    assert first.refund_id == second.refund_id
    assert first.replayed is False
    assert second.replayed is True
    assert first.amount == 2500
    assert first.payment_id == payment.payment_id
    assert len(stripe_fake.refunds()) == 1
    [stored_charge] = succeeded_charges(stripe_fake)
    assert stored_charge["amount_refunded"] == 2500


def test_refund_after_dropped_response_refunds_once(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    payment = charge(gateway)
    stripe_fake.fail_next("drop_after_commit", path_prefix="/v1/refunds")

    result = gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1)

    assert result.replayed is True
    assert [refund["id"] for refund in stripe_fake.refunds()] == [result.refund_id]


def test_partial_refunds_up_to_amount(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    payment = charge(gateway)

    gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1, amount=1000)
    with pytest.raises(PaymentConfigurationError) as caught:
        gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=2, amount=2000)

    assert "greater than" in str(caught.value)
    assert [refund["amount"] for refund in stripe_fake.refunds()] == [1000]


def test_refund_of_refunded_payment(gateway: StripePaymentGateway) -> None:
    payment = charge(gateway)
    gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1)

    with pytest.raises(PaymentAlreadyRefundedError):
        gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=2)


def test_refund_of_unknown_payment(gateway: StripePaymentGateway) -> None:
    with pytest.raises(PaymentConfigurationError) as caught:
        gateway.refund(order_id="o-1", payment_id="pi_missing", attempt=1)

    assert "resource_missing" in str(caught.value)


def test_refund_500s_past_retries_is_transient(
    gateway: StripePaymentGateway, stripe_fake: FakeStripe
) -> None:
    payment = charge(gateway)
    stripe_fake.fail_next("status_500", 3, path_prefix="/v1/refunds")

    with pytest.raises(PaymentTransientError):
        gateway.refund(order_id="o-1", payment_id=payment.payment_id, attempt=1)
    assert stripe_fake.refunds() == []


# --- settings -----------------------------------------------------------------------------


def test_settings_need_api_key() -> None:
    with pytest.raises(SettingError, match="STRIPE_API_KEY"):
        StripeSettings.from_environment({"STRIPE_API_BASE": "http://127.0.0.1:1"})


def test_settings_read_environment() -> None:
    settings = StripeSettings.from_environment(
        {
            "STRIPE_API_KEY": API_KEY,
            "STRIPE_API_BASE": "http://127.0.0.1:12111/",
            "STRIPE_MAX_NETWORK_RETRIES": "1",
            "STRIPE_READ_TIMEOUT_SECONDS": "4.5",
        }
    )

    assert settings.api_base == "http://127.0.0.1:12111"
    assert settings.max_network_retries == 1
    assert settings.read_timeout == 4.5
    assert API_KEY not in repr(settings)


def test_settings_reject_invalid_base() -> None:
    with pytest.raises(SettingError, match="STRIPE_API_BASE"):
        StripeSettings.from_environment(
            {"STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": "127.0.0.1:12111"}
        )
