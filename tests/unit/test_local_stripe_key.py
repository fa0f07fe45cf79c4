"""Which Stripe `orders dev` talks to: the fake, or Stripe's test API with a test key."""

from __future__ import annotations

import pytest

from infra.local.stack import StackError, stripe_test_key


def test_no_key_means_the_fake() -> None:
    assert stripe_test_key({}) is None


def test_test_key_is_used() -> None:
    assert stripe_test_key({"STRIPE_API_KEY": " sk_test_abc123 "}) == "sk_test_abc123"


@pytest.mark.parametrize("key", ["sk_live_abc123", "rk_live_abc123"])
def test_live_key_is_rejected(key: str) -> None:
    with pytest.raises(StackError, match="live-mode"):
        stripe_test_key({"STRIPE_API_KEY": key})


def test_other_value_is_rejected() -> None:
    with pytest.raises(StackError, match="does not look like a Stripe test key"):
        stripe_test_key({"STRIPE_API_KEY": "pk_test_abc123"})
