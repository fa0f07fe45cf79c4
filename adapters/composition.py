"""Composition root: builds the application and its adapters from the environment.

Every runtime (Lambda, the local stack, tests) goes through these functions, so
configuration is read in one place. Lambda handlers call them once at import
time and reuse the result across invocations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3

from adapters.carrier import HttpCarrier
from adapters.eventbridge import EventBridgePublisher
from adapters.eventstore.dynamodb import default_client_config
from adapters.read_models import DynamoDBOrderSummaries
from adapters.ses_email import SesEmailSender, TemplateCustomerDirectory
from adapters.sqs import SqsAttentionQueue, SqsReservationQueue
from adapters.stripe_payments import StripePaymentGateway
from application.orders import OrdersApplication
from application.saga import OrderSagaProcess, RetryPolicy, SagaPorts

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ORDER_SUMMARIES_TABLE = "ORDER_SUMMARIES_TABLE"
EVENT_BUS_NAME = "EVENT_BUS_NAME"
RESERVATION_QUEUE_URL = "RESERVATION_QUEUE_URL"
ATTENTION_QUEUE_URL = "ATTENTION_QUEUE_URL"
SAGA_RETRIES = "SAGA_RETRIES"
SAGA_RETRY_BASE_SECONDS = "SAGA_RETRY_BASE_SECONDS"


class ConfigurationError(RuntimeError):
    pass


def require_env(name: str, env: Mapping[str, str] | None = None) -> str:
    value = (env if env is not None else os.environ).get(name)
    if not value:
        raise ConfigurationError(f"environment variable {name} is not set")
    return value


@dataclass(frozen=True)
class OrderServices:
    orders: OrdersApplication
    summaries: DynamoDBOrderSummaries


def dynamodb_client() -> DynamoDBClient:
    return boto3.client("dynamodb", config=default_client_config())


def build_order_services(env: Mapping[str, str] | None = None) -> OrderServices:
    """Build the order application and the summary store; fail at once if unconfigured."""
    environment = dict(os.environ if env is None else env)
    orders = OrdersApplication(env=environment)
    summaries = DynamoDBOrderSummaries(
        dynamodb_client(), require_env(ORDER_SUMMARIES_TABLE, environment)
    )
    return OrderServices(orders=orders, summaries=summaries)


@dataclass(frozen=True)
class PublisherServices:
    orders: OrdersApplication
    publisher: EventBridgePublisher


def build_publisher(env: Mapping[str, str] | None = None) -> PublisherServices:
    environment = dict(os.environ if env is None else env)
    client = boto3.client("events", config=default_client_config())
    return PublisherServices(
        orders=OrdersApplication(env=environment),
        publisher=EventBridgePublisher(client, require_env(EVENT_BUS_NAME, environment)),
    )


def _number(environment: Mapping[str, str], name: str, default: float) -> float:
    raw = environment.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigurationError(f"{name}={raw!r} must not be negative")
    return value


def build_saga_process(env: Mapping[str, str] | None = None) -> OrderSagaProcess:
    """Wire the saga to Stripe, the carrier, SES and the two SQS queues."""
    environment = dict(os.environ if env is None else env)
    sqs = boto3.client("sqs", config=default_client_config())
    directory = TemplateCustomerDirectory.from_environment(environment)
    ports = SagaPorts(
        payments=StripePaymentGateway.from_environment(environment),
        shipments=HttpCarrier.from_environment(environment),
        email=SesEmailSender.from_environment(environment),
        reservations=SqsReservationQueue(sqs, require_env(RESERVATION_QUEUE_URL, environment)),
        attention=SqsAttentionQueue(sqs, require_env(ATTENTION_QUEUE_URL, environment)),
        recipient_for=directory.email_address,
    )
    retry = RetryPolicy(
        retries=int(_number(environment, SAGA_RETRIES, 3)),
        base_delay=_number(environment, SAGA_RETRY_BASE_SECONDS, 2.0),
    )
    return OrderSagaProcess(OrdersApplication(env=environment), ports, retry)
