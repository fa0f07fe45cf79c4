"""Order confirmation e-mails through Amazon SES, and the local rule for recipient addresses.

Settings come from the environment:

- ``EMAIL_SENDER`` (required): the ``From`` address. SES sends only from verified
  identities, so the local stack verifies it on moto (``verify_email_identity``).
- ``EMAIL_RECIPIENT_TEMPLATE`` (optional, default ``{customer_id}@customers.example.com``):
  orders carry only a ``customer_id``, and until a customer service owns the addresses,
  :class:`TemplateCustomerDirectory` builds each address from this template.
- boto3's usual settings choose the region and endpoint, e.g. ``AWS_ENDPOINT_URL_SES``
  for moto's server.

SES takes no idempotency key, so a retry after a timeout can deliver a second copy of a
confirmation.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Final

import boto3
from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from adapters.settings import SettingError, environment, require_setting
from application.external import (
    EmailError,
    EmailRejectedError,
    EmailTransientError,
    RecipientNotFoundError,
)
from domain.money import MINOR_UNITS
from domain.order import OrderLine

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient

logger = Logger(service="orders", child=True)

EMAIL_SENDER: Final = "EMAIL_SENDER"
EMAIL_RECIPIENT_TEMPLATE: Final = "EMAIL_RECIPIENT_TEMPLATE"
DEFAULT_RECIPIENT_TEMPLATE: Final = "{customer_id}@customers.example.com"

# Error codes SES returns for throttling and for failures on its side; botocore's
# standard retry mode has already retried these when they reach the adapter.
_TRANSIENT_CODES: Final = frozenset({
    "Throttling", "ThrottlingException", "TooManyRequestsException", "RequestTimeout",
    "ServiceUnavailable", "InternalFailure", "InternalError",
})  # fmt: skip
_TRANSPORT_ERRORS: Final = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)
# A practical subset of RFC 5321 addresses: one "@", no spaces or angle brackets.
_ADDRESS = re.compile(r"^[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,190}\.[A-Za-z]{2,63}$")
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def default_client_config() -> Config:
    return Config(
        connect_timeout=3, read_timeout=10, retries={"mode": "standard", "max_attempts": 3}
    )


def format_amount(amount: int, currency: str) -> str:
    """Format minor units with the currency's decimals: ``1250, "USD"`` -> ``"12.50 USD"``."""
    digits = MINOR_UNITS.get(currency)
    if digits is None:
        raise ValueError(f"unknown currency {currency!r}; use an ISO 4217 code such as 'USD'")
    value = Decimal(amount).scaleb(-digits)
    return f"{value:,.{digits}f} {currency}"


class TemplateCustomerDirectory:
    """:class:`application.external.CustomerDirectory` that fills an address template."""

    def __init__(self, template: str = DEFAULT_RECIPIENT_TEMPLATE) -> None:
        if template.count("{customer_id}") != 1:
            raise SettingError(
                f"{EMAIL_RECIPIENT_TEMPLATE}={template!r} must contain '{{customer_id}}' "
                "exactly once, e.g. '{customer_id}@customers.example.com'"
            )
        self._template = template

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> TemplateCustomerDirectory:
        values = environment(env)
        return cls(values.get(EMAIL_RECIPIENT_TEMPLATE, "").strip() or DEFAULT_RECIPIENT_TEMPLATE)

    def email_address(self, customer_id: str) -> str:
        address = self._template.replace("{customer_id}", customer_id)
        if not _ADDRESS.match(address):
            raise RecipientNotFoundError(
                customer_id,
                f"the template {self._template!r} gives {address!r}, which is not a valid "
                "e-mail address",
            )
        return address


class SesEmailSender:
    """:class:`application.external.EmailSender` on SES ``SendEmail``."""

    def __init__(self, client: SESClient, sender: str) -> None:
        self._client = client
        self._sender = sender

    @classmethod
    def from_environment(
        cls, env: Mapping[str, str] | None = None, client: SESClient | None = None
    ) -> SesEmailSender:
        values = environment(env)
        sender = require_setting(
            values, EMAIL_SENDER, "set it to a verified SES identity such as orders@example.com"
        )
        return cls(client or boto3.client("ses", config=default_client_config()), sender)

    def send_order_confirmation(
        self,
        *,
        order_id: str,
        customer_id: str,
        to_address: str,
        total: int,
        currency: str,
        lines: Sequence[OrderLine],
    ) -> str:
        subject = f"Your order {order_id} is confirmed"
        text, markup = render_confirmation(
            order_id=order_id, total=total, currency=currency, lines=lines
        )
        ids = {"order_id": order_id, "customer_id": customer_id}
        try:
            response = self._client.send_email(
                Source=self._sender,
                Destination={"ToAddresses": [to_address]},
                Message={
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": text, "Charset": "UTF-8"},
                        "Html": {"Data": markup, "Charset": "UTF-8"},
                    },
                },
                Tags=[{"Name": "order_id", "Value": _TAG_UNSAFE.sub("_", order_id)[:255]}],
            )
        except ClientError as error:
            raise _translate(error, ids) from None
        except _TRANSPORT_ERRORS as error:
            logger.warning("SES unreachable", extra={**ids, "error": type(error).__name__})
            raise EmailTransientError(
                f"sending the confirmation of order {order_id} failed: {error}; retry later "
                "(the customer may get a second copy)",
                order_id=order_id,
            ) from None

        message_id = response["MessageId"]
        logger.info("Order confirmation sent", extra={**ids, "message_id": message_id})
        return message_id


def render_confirmation(
    *, order_id: str, total: int, currency: str, lines: Sequence[OrderLine]
) -> tuple[str, str]:
    """Render the plain-text and HTML bodies of an order confirmation."""
    rows = [
        (
            line.sku,
            line.quantity,
            format_amount(line.unit_price, currency),
            format_amount(line.line_total, currency),
        )
        for line in lines
    ]
    total_text = format_amount(total, currency)

    text_lines = [f"Thank you for your order {order_id}.", ""]
    text_lines += [
        f"{sku}  x{quantity}  at {unit}  = {subtotal}" for sku, quantity, unit, subtotal in rows
    ]
    text_lines += ["", f"Total: {total_text}", ""]
    text = "\n".join(text_lines)

    cells = "".join(
        f"<tr><td>{html.escape(sku)}</td><td>{quantity}</td><td>{html.escape(unit)}</td>"
        f"<td>{html.escape(subtotal)}</td></tr>"
        for sku, quantity, unit, subtotal in rows
    )
    markup = (
        f"<html><body><p>Thank you for your order {html.escape(order_id)}.</p>"
        "<table><thead><tr><th>Item</th><th>Quantity</th><th>Unit price</th>"
        f"<th>Subtotal</th></tr></thead><tbody>{cells}</tbody></table>"
        f"<p><strong>Total: {html.escape(total_text)}</strong></p></body></html>"
    )
    return text, markup


def _translate(error: ClientError, ids: Mapping[str, str]) -> EmailError:
    code = error.response.get("Error", {}).get("Code", "Unknown")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    message = error.response.get("Error", {}).get("Message", "")
    order_id = ids["order_id"]
    details = {**ids, "ses_error": code, "http_status": status}
    if code in _TRANSIENT_CODES or status >= 500:
        logger.warning("SES failed transiently", extra=details)
        return EmailTransientError(
            f"SES did not send the confirmation of order {order_id}: {code} (HTTP {status}) "
            f"{message}; retry later",
            order_id=order_id,
        )
    logger.error("SES rejected the confirmation", extra=details)
    return EmailRejectedError(
        f"SES rejected the confirmation of order {order_id}: {code} (HTTP {status}) {message}; "
        "check EMAIL_SENDER is a verified identity and the recipient address is valid",
        order_id=order_id,
    )
