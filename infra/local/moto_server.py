"""moto's server for the AWS services the stack does not run for real: SQS, EventBridge, SES.

It runs in a thread of this process on a free port of 127.0.0.1. moto keeps its state
per process, so stacks in one test session share it. The name prefix, and the stack
name in bus names, keep them apart.

moto uses its default account, 123456789012, which is ``template.LOCAL_ACCOUNT``, so the
queue and bus ARNs that the template resolves are the ones moto reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from infra.local.template import LOCAL_ACCOUNT, LOCAL_REGION, Template

logger = logging.getLogger("orders.local.moto")

FAKE_CREDENTIALS = {
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}
# Properties of AWS::SQS::Queue that map one-to-one onto queue attributes.
_QUEUE_ATTRIBUTES = {
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
}


def client(service: str, endpoint_url: str) -> Any:
    """Create a boto3 client for a local endpoint with fake credentials and short timeouts."""
    from botocore.config import Config

    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=endpoint_url,
        region_name=LOCAL_REGION,
        config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
        **FAKE_CREDENTIALS,
    )


@dataclass
class MotoServer:
    """A running moto server and the queues created on it from the template."""

    server: ThreadedMotoServer
    port: int
    queue_urls: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(template: Template | None = None) -> MotoServer:
    """Start moto on a free port and create the template's queues and buses on it."""
    from moto.core.models import DEFAULT_ACCOUNT_ID

    # moto reads MOTO_ACCOUNT_ID on every request, before the access key's account.
    account = os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)
    if account != LOCAL_ACCOUNT:
        raise RuntimeError(
            f"moto would answer for account {account}, but the local stack's ARNs name "
            f"{LOCAL_ACCOUNT}; unset MOTO_ACCOUNT_ID so that both use {LOCAL_ACCOUNT}"
        )
    # Port 0: a taken port would kill moto's server thread and leave start() waiting.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    moto = MotoServer(server=server, port=port)
    if template is not None:
        try:
            moto.queue_urls = create_queues(client("sqs", moto.endpoint_url), template)
            template.queue_urls.update(moto.queue_urls)
            create_event_buses(client("events", moto.endpoint_url), template)
        except Exception:
            moto.stop()
            raise
    return moto


def create_queues(sqs_client: Any, template: Template) -> dict[str, str]:
    """Create each ``AWS::SQS::Queue`` of the template; return logical id -> queue URL.

    Dead-letter queues are created first, so a ``RedrivePolicy`` can name moto's ARN of
    its target (the template's ARN carries another account).
    """
    queues = template.resources_of_type("AWS::SQS::Queue")
    names = template.queue_names()
    arn_of_name: dict[str, str] = {}
    urls: dict[str, str] = {}
    ordered = sorted(names, key=lambda logical_id: "RedrivePolicy" in queues[logical_id].get(
        "Properties", {}))
    for logical_id in ordered:
        properties = template.resolve(queues[logical_id].get("Properties", {}))
        attributes = {
            key: str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in properties.items()
            if key in _QUEUE_ATTRIBUTES
        }
        redrive = properties.get("RedrivePolicy")
        if isinstance(redrive, dict):
            target = str(redrive.get("deadLetterTargetArn", "")).rsplit(":", 1)[-1]
            if target not in arn_of_name:
                raise ValueError(
                    f"{logical_id}: RedrivePolicy names the queue {target!r}, which the "
                    "template does not declare"
                )
            attributes["RedrivePolicy"] = json.dumps(
                {**redrive, "deadLetterTargetArn": arn_of_name[target]}
            )
        url = sqs_client.create_queue(QueueName=names[logical_id], Attributes=attributes)[
            "QueueUrl"
        ]
        urls[logical_id] = url
        arn_of_name[names[logical_id]] = sqs_client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
    return urls


def create_event_buses(events_client: Any, template: Template) -> dict[str, str]:
    """Create each ``AWS::Events::EventBus`` unless it exists; return logical id -> name."""
    names = template.event_bus_names()
    for name in names.values():
        with contextlib.suppress(events_client.exceptions.ResourceAlreadyExistsException):
            events_client.create_event_bus(Name=name)
    return names


def verify_email_identities(ses_client: Any, addresses: set[str]) -> None:
    """Verify sender addresses, since SES (and moto) sends only from verified identities."""
    for address in sorted(addresses):
        ses_client.verify_email_identity(EmailAddress=address)
        logger.info("SES identity %s verified in moto", address)
