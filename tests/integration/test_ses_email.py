"""The SES e-mail adapter against moto's server on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.ses.models import ses_backends

from adapters.ses_email import SesEmailSender
from adapters.settings import SettingError
from application.external import EmailRejectedError, EmailTransientError
from domain.order import OrderLine

if TYPE_CHECKING:
    from mypy_boto3_ses import SESClient

REGION = "eu-west-1"
SENDER = "orders@example.com"
RECIPIENT = "c-1@customers.example.com"
LINES = (OrderLine("MUG-RED", 2, 1250), OrderLine("TEE-L", 1, 2000))


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def ses_client(endpoint: str, **config: Any) -> SESClient:
    client: SESClient = boto3.client(
        "ses", region_name=REGION, endpoint_url=endpoint, config=Config(**config)
    )
    return client


@pytest.fixture
def ses(moto_endpoint: str) -> SESClient:
    client = ses_client(moto_endpoint)
    client.verify_email_identity(EmailAddress=SENDER)
    return client


def sent_count(ses: SESClient) -> int:
    return int(ses.get_send_quota()["SentLast24Hours"])


def sent_message(message_id: str) -> Any:
    backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]
    [message] = [entry for entry in backend.sent_messages if entry.id == message_id]
    return message


def send(sender: SesEmailSender, to_address: str = RECIPIENT, order_id: str = "o-1") -> str:
    return sender.send_order_confirmation(
        order_id=order_id,
        customer_id="c-1",
        to_address=to_address,
        total=4500,
        currency="USD",
        lines=LINES,
    )


def test_confirmation_is_sent(ses: SESClient) -> None:
    before = sent_count(ses)

    message_id = send(SesEmailSender(ses, SENDER), order_id="o-1:web")

    message = sent_message(message_id)
    assert sent_count(ses) == before + 1
    assert message.source == SENDER
    assert message.destinations["ToAddresses"] == [RECIPIENT]
    assert message.subject == "Your order o-1:web is confirmed"
    assert "45.00 USD" in message.body
    assert "MUG-RED" in message.body


def test_unverified_sender_is_rejected(ses: SESClient) -> None:
    before = sent_count(ses)
    sender = SesEmailSender(ses, "unverified@example.com")

    with pytest.raises(EmailRejectedError) as caught:
        send(sender)

    assert "MessageRejected" in str(caught.value)
    assert caught.value.retryable is False
    assert sent_count(ses) == before


def test_invalid_recipient_is_rejected(ses: SESClient) -> None:
    before = sent_count(ses)

    with pytest.raises(EmailRejectedError):
        send(SesEmailSender(ses, SENDER), to_address="not an address")

    assert sent_count(ses) == before


def closed_port() -> int:
    """Return a loopback port that had no listener a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_ses_is_transient() -> None:
    client = ses_client(
        f"http://127.0.0.1:{closed_port()}",
        connect_timeout=1,
        retries={"mode": "standard", "max_attempts": 1},
    )

    with pytest.raises(EmailTransientError) as caught:
        send(SesEmailSender(client, SENDER))

    assert caught.value.retryable is True


@pytest.mark.parametrize(("code", "status"), [("Throttling", 400), ("ServiceUnavailable", 503)])
def test_throttling_and_5xx_are_transient(moto_endpoint: str, code: str, status: int) -> None:
    client = ses_client(moto_endpoint)
    with Stubber(client) as stubber:
        stubber.add_client_error("send_email", service_error_code=code, http_status_code=status)

        with pytest.raises(EmailTransientError, match=code):
            send(SesEmailSender(client, SENDER))


def test_sender_setting_is_required(ses: SESClient) -> None:
    with pytest.raises(SettingError, match="EMAIL_SENDER"):
        SesEmailSender.from_environment({}, client=ses)
