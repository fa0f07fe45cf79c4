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

from adapters.eventstore.dynamodb import default_client_config
from adapters.read_models import DynamoDBOrderSummaries
from application.orders import OrdersApplication

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ORDER_SUMMARIES_TABLE = "ORDER_SUMMARIES_TABLE"


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
