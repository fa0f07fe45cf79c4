"""Idempotency keys of the external ports, and the confirmation e-mail's text."""

from __future__ import annotations

import pytest

from adapters.ses_email import TemplateCustomerDirectory, format_amount, render_confirmation
from adapters.settings import SettingError
from application.external import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    RecipientNotFoundError,
    charge_idempotency_key,
    refund_idempotency_key,
    shipment_idempotency_key,
)
from domain.order import OrderLine

# --- idempotency keys ---------------------------------------------------------------------


def test_keys_name_order_action_attempt() -> None:
    assert charge_idempotency_key("o-1", 1) == "order-o-1-charge-1"
    assert refund_idempotency_key("o-1", 2) == "order-o-1-refund-2"
    assert shipment_idempotency_key("o-1", 3) == "order-o-1-shipment-3"


def test_keys_differ_per_action() -> None:
    assert charge_idempotency_key("o-1", 1) != refund_idempotency_key("o-1", 1)


@pytest.mark.parametrize("attempt", [0, -1, True])
def test_key_rejects_invalid_attempt(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        charge_idempotency_key("o-1", attempt)


def test_key_rejects_empty_order_id() -> None:
    with pytest.raises(ValueError, match="order_id"):
        charge_idempotency_key("", 1)


def test_key_rejects_overlong_order_id() -> None:
    with pytest.raises(ValueError, match=str(MAX_IDEMPOTENCY_KEY_LENGTH)):
        charge_idempotency_key("o" * MAX_IDEMPOTENCY_KEY_LENGTH, 1)


# --- amounts and the e-mail body ----------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1250, "USD", "12.50 USD"),
        (5, "EUR", "0.05 EUR"),
        (1250, "JPY", "1,250 JPY"),
        (1234567, "BHD", "1,234.567 BHD"),
        (0, "USD", "0.00 USD"),
        (123456789, "USD", "1,234,567.89 USD"),
    ],
)
def test_format_amount(amount: int, currency: str, expected: str) -> None:
    assert format_amount(amount, currency) == expected


def test_format_amount_rejects_unknown_currency() -> None:
    with pytest.raises(ValueError, match="XXX"):
        format_amount(100, "XXX")


def test_confirmation_lists_lines_and_total() -> None:
    lines = (OrderLine("MUG-RED", 2, 1250), OrderLine("TEE-L", 1, 2000))

    text, markup = render_confirmation(order_id="o-1", total=4500, currency="USD", lines=lines)

    assert "MUG-RED  x2  at 12.50 USD  = 25.00 USD" in text
    assert "TEE-L  x1  at 20.00 USD  = 20.00 USD" in text
    assert "Total: 45.00 USD" in text
    assert "<td>MUG-RED</td><td>2</td><td>12.50 USD</td><td>25.00 USD</td>" in markup
    assert "Total: 45.00 USD" in markup


def test_confirmation_escapes_html() -> None:
    _, markup = render_confirmation(
        order_id="<o-1>", total=100, currency="USD", lines=(OrderLine("A", 1, 100),)
    )

    assert "<o-1>" not in markup
    assert "&lt;o-1&gt;" in markup


# --- recipient addresses ------------------------------------------------------------------


def test_default_recipient_template() -> None:
    directory = TemplateCustomerDirectory.from_environment({})

    assert directory.email_address("c-1") == "c-1@customers.example.com"


def test_recipient_template_from_environment() -> None:
    directory = TemplateCustomerDirectory.from_environment(
        {"EMAIL_RECIPIENT_TEMPLATE": "shop+{customer_id}@example.org"}
    )

    assert directory.email_address("c-1") == "shop+c-1@example.org"


def test_recipient_template_needs_placeholder() -> None:
    with pytest.raises(SettingError, match="customer_id"):
        TemplateCustomerDirectory("orders@example.com")


def test_customer_id_giving_invalid_address() -> None:
    directory = TemplateCustomerDirectory()

    with pytest.raises(RecipientNotFoundError):
        directory.email_address("c 1@x")
