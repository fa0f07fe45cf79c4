"""The whole system on one machine, from the same SAM template: what ``orders dev`` runs.

``LocalStack`` first binds the API gateway's socket, so a taken port fails before anything
slow starts. Then it starts, in this order:

1. DynamoDB Local with the template's tables;
2. the fake Stripe and the fake carrier (:mod:`infra.local.fake_stripe`,
   :mod:`infra.local.fake_carrier`), whose addresses become the ``StripeApiKey`` and
   ``CarrierApiUrl`` parameters and ``STRIPE_API_BASE`` of the functions that the template
   gives ``STRIPE_API_KEY``. With ``stripe_api_key`` the real Stripe test API is used and
   no fake Stripe starts. ``orders dev`` passes ``$STRIPE_API_KEY`` when it contains a
   Stripe *test* key;
3. moto (one server for SQS, EventBridge and SES) with the template's queues and buses,
   the ``EMAIL_SENDER`` addresses of the functions verified as SES identities;
4. the EventBridge routers of :mod:`infra.local.event_router`, before anything can put
   an event;
5. one runner per function, one stream poller per ``Type: DynamoDB`` event and one SQS
   poller per ``Type: SQS`` event (:mod:`infra.local.sqs_poller`);
6. the gateway's server thread, so ``/health`` answers only once all of the above is up.

``stop()`` stops them in reverse order and waits for every child process.

NOTE: moto keeps queues in memory, so messages still on a queue when the stack stops
are gone at the next start, even with a data folder. An order in flight then stays
where it was; ``orders saga retry ORDER_ID`` moves it on, unless it still waits for
its stock reservations (status PLACED), which nothing sends again.

Tests use it in-process::

    with LocalStack(name_prefix="t1-", dynamodb_endpoint_url=url) as stack:
        requests.get(f"{stack.api_url}/health", timeout=5)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from infra.local import dev_state, dynamodb_local, moto_server
from infra.local.checkpoints import CHECKPOINT_FILE_NAME, CheckpointStore
from infra.local.event_router import EventRouter, EventRouterError, start_routers
from infra.local.fake_carrier import FakeCarrier
from infra.local.fake_stripe import FakeStripe
from infra.local.gateway import (
    MAX_REQUEST_BODY_BYTES,
    ApiGateway,
    GatewayError,
    PortUnavailableError,
    routes_from_template,
)
from infra.local.iam import FunctionPolicy
from infra.local.runner import (
    PROJECT_ROOT,
    FunctionRunner,
    Invoker,
    OutputSink,
    RunnerError,
    console_output,
    function_arn,
    lambda_environment,
)
from infra.local.sqs_poller import (
    DEFAULT_POLLERS,
    DEFAULT_RETRY_VISIBILITY,
    SqsMapping,
    SqsPoller,
    SqsPollerError,
    poller_count,
    sqs_mappings,
)
from infra.local.stream_mapping import stream_mappings
from infra.local.stream_poller import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRY_DELAY,
    StreamPoller,
    StreamPollerError,
)
from infra.local.template import (
    LOCAL_REGION,
    TEMPLATE_PATH,
    Template,
    TemplateError,
    create_tables,
)

logger = logging.getLogger("orders.local")

DEFAULT_API_PORT = 3000
DEFAULT_DATA_DIR = dev_state.DEFAULT_DATA_DIR
DYNAMODB_DIR_NAME = "dynamodb"
DYNAMODB_LOG_NAME = "dynamodb-local.log"
# An API function gets this many execution environments; a stream function needs one,
# since Lambda sends one batch per shard at a time.
DEFAULT_API_CONCURRENCY = 2


# A test key that the fake Stripe accepts and the template's AllowedPattern allows.
FAKE_STRIPE_API_KEY = "sk_test_local"
STRIPE_KEY_PARAMETER = "StripeApiKey"
CARRIER_URL_PARAMETER = "CarrierApiUrl"
STRIPE_KEY_VARIABLE = "STRIPE_API_KEY"
STRIPE_BASE_VARIABLE = "STRIPE_API_BASE"
EMAIL_SENDER_VARIABLE = "EMAIL_SENDER"
# Bounds moto's model dump, which lists every object moto holds.
MAX_MOTO_DATA_BYTES = 64 * 1024 * 1024

# Event source types that the local stack delivers: the gateway and the pollers.
_LOCAL_EVENT_TYPES = {"Api", "DynamoDB", "SQS"}


class StackError(RuntimeError):
    """A part of the local stack could not start."""


class LocalStack:
    """The local stack; every attribute below is set once ``start()`` returned."""

    def __init__(
        self,
        *,
        template_path: Path = TEMPLATE_PATH,
        parameters: Mapping[str, str] | None = None,
        name_prefix: str = "",
        api_port: int = 0,
        data_dir: Path | None = None,
        dynamodb_endpoint_url: str | None = None,
        handlers: Mapping[str, str] | None = None,
        python_path: Sequence[Path] = (),
        environment: Mapping[str, str] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        batching_window: float | None = None,
        api_concurrency: int = DEFAULT_API_CONCURRENCY,
        max_request_body_bytes: int = MAX_REQUEST_BODY_BYTES,
        function_output: OutputSink | None = None,
        stack_name: str = "",
        stripe_api_key: str | None = None,
        sqs_pollers: int = DEFAULT_POLLERS,
        sqs_retry_visibility: int = DEFAULT_RETRY_VISIBILITY,
        enforce_iam: bool = True,
    ) -> None:
        """Describe a stack; nothing starts before ``start()``.

        api_port: 0 picks a free port. data_dir: None keeps everything in memory (no
        checkpoint file, DynamoDB Local ``-inMemory``); a folder keeps DynamoDB data in
        ``data_dir/dynamodb`` and stream checkpoints beside it. dynamodb_endpoint_url:
        use an already running DynamoDB Local instead of starting one. handlers: replace
        the handler of some functions (logical id -> ``module.function``), e.g. with
        test doubles found on ``python_path``. environment: extra variables for every
        function. batching_window: overrides every stream mapping's
        MaximumBatchingWindowInSeconds (tests use 0). parameters: win over the template's
        defaults and over the fakes' addresses, e.g. ``{"SagaRetryBaseSeconds": "0.2"}``.
        stack_name: ``AWS::StackName``; by default the name prefix without its trailing
        dash, or ``orders-local``. stripe_api_key: a Stripe test key to use Stripe's test
        API instead of starting the fake. sqs_pollers: batches of one queue in a function
        at once. sqs_retry_visibility: seconds until a failed SQS message is delivered again.
        enforce_iam: refuse each function's DynamoDB, SQS and EventBridge calls that its
        ``Policies`` do not grant, as AWS would (``infra.local.iam``).
        """
        self.template = Template.load(
            template_path, name_prefix=name_prefix, parameters=parameters, stack_name=stack_name
        )
        self.parameter_overrides = dict(parameters or {})
        self.name_prefix = name_prefix
        self.requested_api_port = api_port
        self.data_dir = data_dir
        self.handlers = dict(handlers or {})
        self.python_path = list(python_path)
        self.extra_environment = dict(environment or {})
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.batching_window = batching_window
        self.api_concurrency = api_concurrency
        self.max_request_body_bytes = max_request_body_bytes
        self.function_output = function_output or console_output()
        self.stripe_api_key = stripe_api_key
        self.sqs_poller_count = sqs_pollers
        self.sqs_retry_visibility = sqs_retry_visibility
        self.enforce_iam = enforce_iam

        self.dynamodb_endpoint_url = dynamodb_endpoint_url or ""
        self.moto_endpoint_url = ""
        self.table_names: dict[str, str] = {}
        self.queue_urls: dict[str, str] = {}
        self.runners: dict[str, FunctionRunner] = {}
        self.pollers: list[StreamPoller] = []
        self.sqs_pollers: list[SqsPoller] = []
        self.routers: list[EventRouter] = []
        self.router_queue_urls: dict[str, str] = {}
        self.fake_stripe: FakeStripe | None = None
        self.fake_carrier: FakeCarrier | None = None
        self.gateway: ApiGateway | None = None
        self.checkpoints: CheckpointStore | None = None
        self._own_dynamodb = dynamodb_endpoint_url is None
        self._dynamodb: dynamodb_local.DynamoDBLocal | None = None
        self._moto: moto_server.MotoServer | None = None
        self._invokers: dict[str, Invoker] = {}

    # Public attributes -------------------------------------------------------------

    @property
    def api_url(self) -> str:
        if self.gateway is None:
            raise StackError("the stack is not started")
        return self.gateway.url

    @property
    def api_port(self) -> int:
        if self.gateway is None:
            raise StackError("the stack is not started")
        return self.gateway.port

    @property
    def stack_name(self) -> str:
        return self.template.resolved_stack_name

    def queue_url(self, logical_id: str) -> str:
        """The URL of a template queue, e.g. ``queue_url("SagaQueue")``."""
        try:
            return self.queue_urls[logical_id]
        except KeyError:
            raise StackError(
                f"the stack has no queue {logical_id!r}; its queues are {sorted(self.queue_urls)}"
            ) from None

    @property
    def dynamodb_port(self) -> int:
        return int(self.dynamodb_endpoint_url.rsplit(":", 1)[-1])

    @property
    def service_environment(self) -> dict[str, str]:
        """Environment variables that point boto3 in a function (or a test) at local services."""
        return {
            # Anything not named below goes to moto rather than to real AWS.
            "AWS_ENDPOINT_URL": self.moto_endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb_endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": self.dynamodb_endpoint_url,
            "AWS_ENDPOINT_URL_SQS": self.moto_endpoint_url,
            "AWS_ENDPOINT_URL_EVENTBRIDGE": self.moto_endpoint_url,
            "AWS_ENDPOINT_URL_SES": self.moto_endpoint_url,
            "AWS_ACCESS_KEY_ID": moto_server.FAKE_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": moto_server.FAKE_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": LOCAL_REGION,
        }

    def client(self, service: str) -> Any:
        """Create a boto3 client for one of the stack's services (dynamodb, sqs, ...)."""
        local = {"dynamodb", "dynamodbstreams"}
        endpoint = self.dynamodb_endpoint_url if service in local else self.moto_endpoint_url
        return moto_server.client(service, endpoint)

    # Lifecycle ---------------------------------------------------------------------

    def start(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        routes = routes_from_template(self.template)
        # Bind the API port before anything slow starts, so a taken port fails at once.
        self.gateway = ApiGateway(
            routes,
            self._invokers,
            port=self.requested_api_port,
            max_body_bytes=self.max_request_body_bytes,
        )

        if self._own_dynamodb:
            self._start_dynamodb()
        dynamodb = self.client("dynamodb")
        self.table_names = create_tables(dynamodb, self.template)

        self._start_fakes()
        problems = self.template.parameter_problems()
        if problems:
            raise StackError("; ".join(problems))

        self._moto = moto_server.start(self.template)
        self.moto_endpoint_url = self._moto.endpoint_url
        self.queue_urls = dict(self._moto.queue_urls)
        self._verify_email_senders()
        self.routers, self.router_queue_urls = start_routers(
            self.template,
            sqs_client=self.client("sqs"),
            events_client=self.client("events"),
            queue_urls=self.queue_urls,
        )

        queue_mappings = [mapping for mapping in sqs_mappings(self.template) if mapping.enabled]
        self._start_runners(queue_mappings)

        checkpoint_path = self.data_dir / CHECKPOINT_FILE_NAME if self.data_dir else None
        self.checkpoints = CheckpointStore(checkpoint_path)
        self._start_pollers(dynamodb)
        self._start_sqs_pollers(queue_mappings)

        self.gateway.start()

    def _start_fakes(self) -> None:
        """Start the fakes of external APIs and point the template's parameters at them."""
        declared = self.template.body.get("Parameters", {})
        defaults: dict[str, str] = {}
        if self.stripe_api_key is None:
            self.fake_stripe = FakeStripe(port=0).start()
            defaults[STRIPE_KEY_PARAMETER] = FAKE_STRIPE_API_KEY
        else:
            defaults[STRIPE_KEY_PARAMETER] = self.stripe_api_key
        self.fake_carrier = FakeCarrier(port=0).start()
        defaults[CARRIER_URL_PARAMETER] = self.fake_carrier.url
        for name, value in defaults.items():
            if name in declared and name not in self.parameter_overrides:
                self.template.parameters[name] = value

    def _verify_email_senders(self) -> None:
        senders = {
            spec.environment[EMAIL_SENDER_VARIABLE]
            for spec in self.template.functions().values()
            if spec.environment.get(EMAIL_SENDER_VARIABLE)
        }
        moto_server.verify_email_identities(self.client("ses"), senders)

    def _function_environment(self, environment: Mapping[str, str]) -> dict[str, str]:
        """What the stack adds to one function's environment: local endpoints, the fakes."""
        added = {**self.service_environment, **self.extra_environment}
        if STRIPE_KEY_VARIABLE in environment and self.fake_stripe is not None:
            added.setdefault(STRIPE_BASE_VARIABLE, self.fake_stripe.url)
        return added

    def _start_dynamodb(self) -> None:
        if self.data_dir is None:
            self._dynamodb = dynamodb_local.start()
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._dynamodb = dynamodb_local.start(
                data_dir=self.data_dir / DYNAMODB_DIR_NAME,
                log_path=self.data_dir / DYNAMODB_LOG_NAME,
            )
        self.dynamodb_endpoint_url = self._dynamodb.endpoint_url

    def _start_runners(self, queue_mappings: Sequence[SqsMapping] = ()) -> None:
        specs = self.template.functions()
        unknown = set(self.handlers) - set(specs)
        if unknown:
            raise StackError(
                f"handlers were given for {sorted(unknown)}, which the template does not "
                f"declare; its functions are {sorted(specs)}"
            )
        for function_id, spec in specs.items():
            for event_name, event in spec.events.items():
                if event.get("Type") not in _LOCAL_EVENT_TYPES:
                    # NOTE: nothing local delivers these yet, so the function never sees them.
                    logger.warning(
                        "%s.%s: the local stack does not run %s events yet",
                        function_id,
                        event_name,
                        event.get("Type"),
                    )
            function_name = self.template.local_name(function_id)
            environment = lambda_environment(
                spec,
                function_name,
                code_dir=spec.code_dir or PROJECT_ROOT,
                service_environment=self._function_environment(spec.environment),
                python_path=self.python_path,
            )
            concurrency = self.api_concurrency if spec.events_of_type("Api") else 1
            queue_pollers = sum(
                poller_count(mapping, spec.reserved_concurrency, self.sqs_poller_count)
                for mapping in queue_mappings
                if mapping.function_id == function_id
            )
            runner = FunctionRunner(
                spec,
                function_name=function_name,
                environment=environment,
                handler=self.handlers.get(function_id),
                max_concurrency=max(concurrency, queue_pollers),
                output=self.function_output,
                cwd=spec.code_dir or PROJECT_ROOT,
                policy=(
                    FunctionPolicy.from_template(self.template, function_id)
                    if self.enforce_iam
                    else None
                ),
            )
            self.runners[function_id] = runner
            self._invokers[function_id] = runner
            runner.start()

    def _start_pollers(self, dynamodb: Any) -> None:
        assert self.checkpoints is not None
        streams = self.client("dynamodbstreams")
        for mapping in stream_mappings(self.template):
            if not mapping.enabled:
                logger.info("%s: disabled in the template", mapping.mapping_id)
                continue
            runner = self.runners[mapping.function_id]
            poller = StreamPoller(
                mapping,
                invoker=runner,
                function_arn=function_arn(runner.function_name),
                dynamodb_client=dynamodb,
                streams_client=streams,
                checkpoints=self.checkpoints,
                failure_sink=self._send_to_queue,
                poll_interval=self.poll_interval,
                retry_delay=self.retry_delay,
                batching_window=self.batching_window,
            )
            self.pollers.append(poller)
            poller.start()

    def _start_sqs_pollers(self, mappings: Sequence[SqsMapping]) -> None:
        specs = self.template.functions()
        sqs = self.client("sqs")
        urls_by_name = {url.rsplit("/", 1)[-1]: url for url in self.queue_urls.values()}
        for mapping in mappings:
            queue_url = urls_by_name.get(mapping.queue_name)
            if queue_url is None:
                raise StackError(
                    f"{mapping.mapping_id}: the queue {mapping.queue_arn} is not one of the "
                    "template's queues; declare it as an AWS::SQS::Queue"
                )
            reserved = specs[mapping.function_id].reserved_concurrency
            pollers = poller_count(mapping, reserved, self.sqs_poller_count)
            poller = SqsPoller(
                mapping,
                invoker=self.runners[mapping.function_id],
                sqs_client=sqs,
                queue_url=queue_url,
                pollers=pollers,
                retry_visibility=self.sqs_retry_visibility,
            )
            self.sqs_pollers.append(poller)
            poller.start()
            logger.info(
                "%s: %d pollers on %s, batches of up to %d",
                mapping.mapping_id,
                pollers,
                mapping.queue_name,
                mapping.batch_size,
            )

    def _send_to_queue(self, queue_arn: str, message: dict[str, Any]) -> None:
        name = queue_arn.rsplit(":", 1)[-1]
        urls = {url.rsplit("/", 1)[-1]: url for url in self.queue_urls.values()}
        sqs = self.client("sqs")
        url = urls.get(name) or sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))

    def stop(self) -> None:
        """Stop everything that started, newest first; safe to call more than once."""
        if self.gateway is not None:
            self.gateway.stop()
        # Ask every thread first, so their waits run out together rather than in turn.
        for sqs_poller in self.sqs_pollers:
            sqs_poller.request_stop()
        for router in self.routers:
            router.request_stop()
        for poller in self.pollers:
            poller.stop()
        for sqs_poller in self.sqs_pollers:
            sqs_poller.stop()
        for router in self.routers:
            router.stop()
        for runner in self.runners.values():
            runner.stop()
        for fake in (self.fake_carrier, self.fake_stripe):
            if fake is not None:
                fake.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._dynamodb is not None:
            self._dynamodb.stop()
            self._dynamodb = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for_streams(self, timeout: float = 10.0) -> bool:
        """Wait until every poller has delivered what its stream holds; False on timeout."""
        return all(poller.wait_until_idle(timeout) for poller in self.pollers)

    def wait_until_idle(self, timeout: float = 15.0) -> bool:
        """Wait until streams, router queues and SQS-fed functions have nothing left to do.

        Quiet means: every stream poller idle, no SQS batch in a function, and every
        polled queue and router queue holding no message (visible, in flight or
        delayed), twice in a row. False when that did not happen within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        quiet_in_a_row = 0
        while quiet_in_a_row < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._queues_quiet() and self.wait_for_streams(min(remaining, 2.0)):
                quiet_in_a_row += 1
            else:
                quiet_in_a_row = 0
                time.sleep(0.05)
        return True

    def _queues_quiet(self) -> bool:
        if any(poller.busy for poller in self.sqs_pollers):
            return False
        sqs = self.client("sqs")
        urls = [poller.queue_url for poller in self.sqs_pollers]
        urls += list(self.router_queue_urls.values())
        for url in urls:
            attributes = sqs.get_queue_attributes(
                QueueUrl=url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )["Attributes"]
            if any(int(count) for count in attributes.values()):
                return False
        return True

    def sent_emails(self) -> list[dict[str, Any]]:
        """Every e-mail moto's SES has accepted, oldest first, read from moto's model dump.

        Each is ``{"message_id", "source", "destinations", "subject", "body"}``. moto keeps
        its state per process, so e-mails sent by other stacks of this process show too.
        """
        if not self.moto_endpoint_url:
            raise StackError("the stack is not started")
        response = requests.get(
            f"{self.moto_endpoint_url}/moto-api/data.json", timeout=10, stream=True
        )
        response.raise_for_status()
        raw = response.raw.read(MAX_MOTO_DATA_BYTES + 1, decode_content=True)
        if len(raw) > MAX_MOTO_DATA_BYTES:
            raise StackError(
                f"moto's model dump is over {MAX_MOTO_DATA_BYTES} bytes; restart the stack "
                "to start from empty state"
            )
        messages = json.loads(raw).get("ses", {}).get("Message", [])
        return [
            {
                "message_id": message.get("id"),
                "source": message.get("source"),
                "destinations": message.get("destinations", {}),
                "subject": message.get("subject"),
                "body": message.get("body"),
            }
            for message in messages
        ]

    def dev_state(self) -> dev_state.DevState:
        """What ``orders saga retry`` needs to reach this stack (see :mod:`dev_state`)."""
        return dev_state.DevState(
            pid=os.getpid(),
            stack_name=self.stack_name,
            api_url=self.api_url,
            moto_endpoint_url=self.moto_endpoint_url,
            region=LOCAL_REGION,
            queue_urls=dict(self.queue_urls),
            dynamodb_endpoint_url=self.dynamodb_endpoint_url,
            table_names=dict(self.table_names),
        )

    def child_process_ids(self) -> list[int]:
        pids = [pid for runner in self.runners.values() for pid in runner.process_ids]
        if self._dynamodb is not None:
            pids.append(self._dynamodb.process.pid)
        return pids


# `orders dev` ----------------------------------------------------------------------


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("werkzeug", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def resolve_api_port(flag: int | None, environ: Mapping[str, str] = os.environ) -> int:
    """``--port`` wins, then ``$PORT``, then 3000."""
    if flag is not None:
        return flag
    raw = environ.get("PORT", "").strip()
    if not raw:
        return DEFAULT_API_PORT
    try:
        return int(raw)
    except ValueError:
        raise StackError(
            f"PORT={raw!r} is not a port number; set it to one (e.g. PORT=3000) or pass --port"
        ) from None


def _display(path: Path) -> str:
    try:
        return f"{path.relative_to(Path.cwd())}/"
    except ValueError:
        return f"{path}/"


def stripe_test_key(environ: Mapping[str, str] = os.environ) -> str | None:
    """The Stripe test key in ``$STRIPE_API_KEY``, or None to use the fake Stripe.

    Only test-mode keys are accepted: a local stack must never move real money.
    """
    key = environ.get(STRIPE_KEY_VARIABLE, "").strip()
    if not key:
        return None
    if key.startswith(("sk_live_", "rk_live_")):
        raise StackError(
            f"{STRIPE_KEY_VARIABLE} holds a live-mode Stripe key; orders dev only uses test "
            "keys (sk_test_...). Unset it to use the local fake Stripe"
        )
    if not key.startswith(("sk_test_", "rk_test_")):
        raise StackError(
            f"{STRIPE_KEY_VARIABLE} does not look like a Stripe test key (sk_test_...); set "
            "one, or unset it to use the local fake Stripe"
        )
    return key


def _masked(key: str) -> str:
    return f"{key[:8]}...{key[-4:]}"


def run_dev(arguments: argparse.Namespace) -> int:
    """Run the stack until SIGINT or SIGTERM; return the process exit code."""
    configure_logging()
    try:
        port = resolve_api_port(arguments.port)
        stripe_key = stripe_test_key()
    except StackError as error:
        logger.error("orders dev: %s", error)
        return 2
    in_memory = bool(getattr(arguments, "in_memory", False))
    state_dir = Path(getattr(arguments, "data_dir", None) or DEFAULT_DATA_DIR)
    data_dir = None if in_memory else state_dir
    state_path = state_dir / dev_state.STATE_FILE_NAME

    stopping = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            logger.warning("orders dev: already stopping")
            return
        logger.info("orders dev: %s received, stopping", signal.Signals(signum).name)
        stopping.set()

    previous = {
        signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    stack = LocalStack(
        api_port=port,
        data_dir=data_dir,
        stripe_api_key=stripe_key,
        enforce_iam=not getattr(arguments, "no_iam_check", False),
    )
    try:
        try:
            stack.start()
        except PortUnavailableError as error:
            logger.error(
                "orders dev: port %d is not available (%s); stop what uses it or pick "
                "another port with --port N or PORT=N",
                error.port,
                error,
            )
            return 2
        except (
            GatewayError,
            RunnerError,
            StreamPollerError,
            SqsPollerError,
            EventRouterError,
            TemplateError,
            StackError,
            dynamodb_local.DynamoDBLocalError,
        ) as error:
            logger.error("orders dev: could not start: %s", error)
            return 1
        for route in stack.gateway.routes if stack.gateway else []:
            logger.info("route %-6s %s -> %s", route.method, route.resource, route.function_id)
        if stack.fake_stripe is not None:
            logger.info("orders dev: fake Stripe on %s", stack.fake_stripe.url)
        elif stripe_key is not None:
            logger.info(
                "orders dev: using Stripe's test API with %s from %s",
                _masked(stripe_key),
                STRIPE_KEY_VARIABLE,
            )
        if stack.fake_carrier is not None:
            logger.info("orders dev: fake carrier on %s", stack.fake_carrier.url)
        logger.info("orders dev: moto (SQS, EventBridge, SES) on %s", stack.moto_endpoint_url)
        stack.dev_state().write(state_path)
        where = _display(data_dir) if data_dir else "memory, discarded on exit"
        logger.info(
            "orders dev: ready on %s (DynamoDB Local on :%d, data in %s, stack state in %s)",
            stack.api_url,
            stack.dynamodb_port,
            where,
            state_path,
        )
        while not stopping.wait(0.5):
            pass
        return 0
    finally:
        dev_state.remove(state_path, os.getpid())
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logger.info("orders dev: stopped")
