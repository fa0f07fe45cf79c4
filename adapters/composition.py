"""Composition root: builds the application and its adapters from the environment.

Every runtime (Lambda, the local stack, tests) goes through these functions, so
configuration is read in one place. Lambda handlers call them once at import
time and reuse the result across invocations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from adapters.event_scan import DynamoDBEventScanner
from adapters.eventstore.dynamodb import default_client_config
from adapters.projection_control import (
    DynamoDBDirtyStreams,
    DynamoDBProjectionControl,
    DynamoDBTableGenerations,
    ProjectionDirectory,
)
from adapters.projection_tables import DynamoDBProjectionTable
from adapters.read_models import DynamoDBReadModels
from application.orders import OrdersApplication
from application.ports import RebuildRun, Tip, TipRecorder
from projections.catalog import PROJECTIONS
from projections.live import LiveProjector
from projections.projection import Projection
from projections.projector import GuardedProjector
from projections.rebuild import (
    DEFAULT_FLUSH_EVENTS,
    CatchUp,
    RebuildCoordinator,
    RebuildTarget,
    SegmentRebuilder,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from adapters.eventbridge import EventBridgePublisher
    from application.saga import OrderSagaProcess

# The saga's and the publisher's adapters (Stripe, the carrier, SES, EventBridge) are
# imported inside their build functions, so the other handlers' cold starts skip them.

ORDER_SUMMARIES_TABLE = "ORDER_SUMMARIES_TABLE"
CUSTOMER_STATS_TABLE = "CUSTOMER_STATS_TABLE"
INVENTORY_LEVELS_TABLE = "INVENTORY_LEVELS_TABLE"
PROJECTION_CONTROL_TABLE = "PROJECTION_CONTROL_TABLE"
PROJECTION_POINTER_TTL_SECONDS = "PROJECTION_POINTER_TTL_SECONDS"
REBUILD_QUEUE_URL = "REBUILD_QUEUE_URL"
DEFAULT_POINTER_TTL_SECONDS = 5.0
# Read model -> the variable naming its table in the template (generation 0).
READ_MODEL_TABLES = {
    "order_summary": ORDER_SUMMARIES_TABLE,
    "customer_stats": CUSTOMER_STATS_TABLE,
    "inventory_levels": INVENTORY_LEVELS_TABLE,
}
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
class ReadSide:
    """The read-model tables: where their pointers live and how to open a table."""

    client: DynamoDBClient
    base_tables: dict[str, str]
    control: DynamoDBProjectionControl
    directory: ProjectionDirectory
    dirty: DynamoDBDirtyStreams

    def open_table(self, projection: Projection, table_name: str) -> DynamoDBProjectionTable:
        return DynamoDBProjectionTable(self.client, table_name, projection.key_attributes)

    def live_projector(self, orders: OrdersApplication) -> LiveProjector:
        """Build the stream handler's projector: every read model, every table it names."""
        return LiveProjector(
            guarded_projectors(orders), self.directory, self.open_table, self.dirty
        )


def guarded_projectors(
    orders: OrdersApplication, *, warn_on_gap: bool = True
) -> dict[str, GuardedProjector]:
    def read_events(stream_id: str, after: int, up_to: int) -> Any:
        return orders.recorder.select_events(stream_id, gt=after, lte=up_to)

    return {
        name: GuardedProjector(
            projection, orders.mapper.to_domain_event, read_events, warn_on_gap=warn_on_gap
        )
        for name, projection in PROJECTIONS.items()
    }


@dataclass(frozen=True)
class OrderServices:
    orders: OrdersApplication
    read_models: DynamoDBReadModels
    read_side: ReadSide


def dynamodb_client(*, validate: bool = True) -> DynamoDBClient:
    """Create a DynamoDB client; ``validate=False`` skips botocore's parameter checks."""
    config = default_client_config()
    if not validate:
        config = config.merge(Config(parameter_validation=False))
    return boto3.client("dynamodb", config=config)


def build_read_side(
    env: Mapping[str, str] | None = None, client: DynamoDBClient | None = None
) -> ReadSide:
    environment = dict(os.environ if env is None else env)
    client = client or dynamodb_client()
    base_tables = {
        name: require_env(variable, environment) for name, variable in READ_MODEL_TABLES.items()
    }
    control_table = require_env(PROJECTION_CONTROL_TABLE, environment)
    control = DynamoDBProjectionControl(client, control_table, base_tables)
    ttl = _number(environment, PROJECTION_POINTER_TTL_SECONDS, DEFAULT_POINTER_TTL_SECONDS)
    return ReadSide(
        client,
        base_tables,
        control,
        ProjectionDirectory(control, ttl),
        DynamoDBDirtyStreams(client, control_table),
    )


def build_order_services(env: Mapping[str, str] | None = None) -> OrderServices:
    """Build the order application and the read models; fail at once if unconfigured."""
    environment = dict(os.environ if env is None else env)
    orders = OrdersApplication(env=environment)
    read_side = build_read_side(environment)
    return OrderServices(
        orders=orders,
        read_models=DynamoDBReadModels(read_side.client, read_side.directory),
        read_side=read_side,
    )


@dataclass(frozen=True)
class RebuildServices:
    orders: OrdersApplication
    read_side: ReadSide
    scanner: DynamoDBEventScanner
    generations: DynamoDBTableGenerations

    def read_tip(self, stream_id: str) -> Tip | None:
        recorder = self.orders.recorder
        if not isinstance(recorder, TipRecorder):
            raise ConfigurationError(f"{type(recorder).__name__} keeps no tips")
        return recorder.select_tip(stream_id)

    def coordinator(self, scan_segments: int = 4) -> RebuildCoordinator:
        catch_up = CatchUp(
            dirty=self.read_side.dirty,
            read_tip=self.read_tip,
            projectors=guarded_projectors(self.orders, warn_on_gap=False),
            open_table=self.read_side.open_table,
            scan_segments=scan_segments,
        )
        return RebuildCoordinator(
            self.read_side.control,
            self.generations,
            self.read_side.base_tables,
            catch_up=catch_up,
            pointer_ttl_seconds=self.read_side.directory.ttl_seconds,
        )

    def segment_rebuilder(
        self,
        run: RebuildRun,
        *,
        flush_events: int = DEFAULT_FLUSH_EVENTS,
        page_limit: int | None = None,
    ) -> SegmentRebuilder:
        def read_events(stream_id: str, after: int, up_to: int) -> Any:
            return self.orders.recorder.select_events(stream_id, gt=after, lte=up_to)

        targets = [
            RebuildTarget(projection, self.read_side.open_table(projection, run.tables[name]))
            for name, projection in PROJECTIONS.items()
            if name in run.projections
        ]
        return SegmentRebuilder(
            rebuild_id=run.rebuild_id,
            total_segments=run.total_segments,
            targets=targets,
            scanner=self.scanner,
            decode=self.orders.mapper.to_domain_event,
            read_events=read_events,
            checkpoints=self.read_side.control,
            flush_events=flush_events,
            page_limit=page_limit,
        )


def build_rebuild_services(
    env: Mapping[str, str] | None = None, client: DynamoDBClient | None = None
) -> RebuildServices:
    environment = dict(os.environ if env is None else env)
    # A rebuild sends every row once in BatchWriteItem requests that our own code
    # builds, and botocore's client-side check of them took about a seventh of a
    # segment's time (profiled on DynamoDB Local). DynamoDB still validates each
    # request and returns ValidationException, so a malformed one is still caught.
    client = client or dynamodb_client(validate=False)
    orders = OrdersApplication(env=environment)
    read_side = build_read_side(environment, client)
    return RebuildServices(
        orders=orders,
        read_side=read_side,
        scanner=DynamoDBEventScanner(client, require_env("EVENTS_TABLE", environment)),
        generations=DynamoDBTableGenerations(client),
    )


@dataclass(frozen=True)
class PublisherServices:
    orders: OrdersApplication
    publisher: EventBridgePublisher


def build_publisher(env: Mapping[str, str] | None = None) -> PublisherServices:
    from adapters.eventbridge import EventBridgePublisher

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
    from adapters.carrier import HttpCarrier
    from adapters.ses_email import SesEmailSender, TemplateCustomerDirectory
    from adapters.sqs import SqsAttentionQueue, SqsReservationQueue
    from adapters.stripe_payments import StripePaymentGateway
    from application.saga import OrderSagaProcess, RetryPolicy, SagaPorts

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
