"""The whole system on one machine, from the same SAM template: what ``orders dev`` runs.

``LocalStack`` first binds the API gateway's socket, so a taken port fails before anything
slow starts. Then it starts DynamoDB Local with the template's tables, moto with the
template's queues, one runner per function, one stream poller per ``Type: DynamoDB`` event
and the gateway's server thread. ``stop()`` stops them in reverse order and waits for
every child process. Tests use it in-process::

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from infra.local import dynamodb_local, moto_server
from infra.local.checkpoints import CHECKPOINT_FILE_NAME, CheckpointStore
from infra.local.gateway import (
    MAX_REQUEST_BODY_BYTES,
    ApiGateway,
    GatewayError,
    PortUnavailableError,
    routes_from_template,
)
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
from infra.local.stream_mapping import stream_mappings
from infra.local.stream_poller import (
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETRY_DELAY,
    StreamPoller,
    StreamPollerError,
)
from infra.local.template import LOCAL_REGION, TEMPLATE_PATH, Template, create_tables

logger = logging.getLogger("orders.local")

DEFAULT_API_PORT = 3000
DEFAULT_DATA_DIR = PROJECT_ROOT / ".orders-data"
DYNAMODB_DIR_NAME = "dynamodb"
DYNAMODB_LOG_NAME = "dynamodb-local.log"
# An API function gets this many execution environments; a stream function needs one,
# since Lambda sends one batch per shard at a time.
DEFAULT_API_CONCURRENCY = 2


# Event source types that the local stack delivers: the gateway and the stream pollers.
_LOCAL_EVENT_TYPES = {"Api", "DynamoDB"}


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
    ) -> None:
        """Describe a stack; nothing starts before ``start()``.

        api_port: 0 picks a free port. data_dir: None keeps everything in memory (no
        checkpoint file, DynamoDB Local ``-inMemory``); a folder keeps DynamoDB data in
        ``data_dir/dynamodb`` and stream checkpoints beside it. dynamodb_endpoint_url:
        use an already running DynamoDB Local instead of starting one. handlers: replace
        the handler of some functions (logical id -> ``module.function``), e.g. with
        test doubles found on ``python_path``. environment: extra variables for every
        function. batching_window: overrides every mapping's
        MaximumBatchingWindowInSeconds (tests use 0).
        """
        self.template = Template.load(template_path, name_prefix=name_prefix, parameters=parameters)
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

        self.dynamodb_endpoint_url = dynamodb_endpoint_url or ""
        self.moto_endpoint_url = ""
        self.table_names: dict[str, str] = {}
        self.queue_urls: dict[str, str] = {}
        self.runners: dict[str, FunctionRunner] = {}
        self.pollers: list[StreamPoller] = []
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

        self._moto = moto_server.start(self.template)
        self.moto_endpoint_url = self._moto.endpoint_url
        self.queue_urls = dict(self._moto.queue_urls)

        self._start_runners()

        checkpoint_path = self.data_dir / CHECKPOINT_FILE_NAME if self.data_dir else None
        self.checkpoints = CheckpointStore(checkpoint_path)
        self._start_pollers(dynamodb)

        self.gateway.start()

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

    def _start_runners(self) -> None:
        specs = self.template.functions()
        unknown = set(self.handlers) - set(specs)
        if unknown:
            raise StackError(
                f"handlers were given for {sorted(unknown)}, which the template does not "
                f"declare; its functions are {sorted(specs)}"
            )
        service_environment = {**self.service_environment, **self.extra_environment}
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
                service_environment=service_environment,
                python_path=self.python_path,
            )
            runner = FunctionRunner(
                spec,
                function_name=function_name,
                environment=environment,
                handler=self.handlers.get(function_id),
                max_concurrency=self.api_concurrency if spec.events_of_type("Api") else 1,
                output=self.function_output,
                cwd=spec.code_dir or PROJECT_ROOT,
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
        for poller in self.pollers:
            poller.stop()
        for runner in self.runners.values():
            runner.stop()
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


def run_dev(arguments: argparse.Namespace) -> int:
    """Run the stack until SIGINT or SIGTERM; return the process exit code."""
    configure_logging()
    try:
        port = resolve_api_port(arguments.port)
    except StackError as error:
        logger.error("orders dev: %s", error)
        return 2
    in_memory = bool(getattr(arguments, "in_memory", False))
    data_dir = None if in_memory else Path(getattr(arguments, "data_dir", None) or DEFAULT_DATA_DIR)

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
    stack = LocalStack(api_port=port, data_dir=data_dir)
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
            StackError,
            dynamodb_local.DynamoDBLocalError,
        ) as error:
            logger.error("orders dev: could not start: %s", error)
            return 1
        for route in stack.gateway.routes if stack.gateway else []:
            logger.info("route %-6s %s -> %s", route.method, route.resource, route.function_id)
        where = _display(data_dir) if data_dir else "memory, discarded on exit"
        logger.info(
            "orders dev: ready on %s (DynamoDB Local on :%d, data in %s)",
            stack.api_url,
            stack.dynamodb_port,
            where,
        )
        while not stopping.wait(0.5):
            pass
        return 0
    finally:
        stack.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logger.info("orders dev: stopped")
