"""The process that hosts one Lambda function, like a Lambda execution environment.

``infra.local.runner`` starts it as ``python -m infra.local.function_host`` with the
function's environment. It imports the handler once (the init phase), then serves
invocations one at a time on a listening socket that the parent bound and handed over,
using the Runtime Interface Emulator's route:
``POST /2015-03-31/functions/function/invocations`` with the event as JSON. The answer
is the handler's result as JSON; a handler exception answers an error payload
(``errorType``, ``errorMessage``, ``stackTrace``) with ``X-Amz-Function-Error: Unhandled``.

The function's own output (its JSON logs) goes to this process's stdout and stderr,
which the parent relays to the dev console.

With ``--policy`` (the function's IAM statements from the template, as JSON) every
DynamoDB, SQS and EventBridge call the function makes is checked against them first,
and refused as AWS would refuse it (see ``infra.local.iam``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

INVOKE_PATH = "/2015-03-31/functions/function/invocations"
FUNCTION_ERROR_HEADER = "X-Amz-Function-Error"
REQUEST_ID_HEADER = "X-Amzn-RequestId"
# Lambda caps a synchronous invocation payload at 6 MB in each direction.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024

Handler = Callable[[Any, Any], Any]


class LambdaContext:
    """The context object a Python Lambda handler receives, with the same attribute names."""

    def __init__(
        self,
        *,
        function_name: str,
        memory_limit_in_mb: int,
        invoked_function_arn: str,
        aws_request_id: str,
        deadline: float,
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = invoked_function_arn
        self.aws_request_id = aws_request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/{function_name}"
        self.identity: Any = None
        self.client_context: Any = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class FunctionHost:
    """Imports the handler and runs invocations one after another."""

    def __init__(
        self,
        *,
        handler_path: str,
        function_name: str,
        timeout: float,
        memory: int,
        function_arn: str | None = None,
    ) -> None:
        self.handler_path = handler_path
        self.function_name = function_name
        self.timeout = timeout
        self.memory = memory
        region = os.environ.get("AWS_REGION", "us-east-1")
        self.function_arn = (
            function_arn or f"arn:aws:lambda:{region}:000000000000:function:{function_name}"
        )
        self._handler: Handler | None = None
        self._init_error: dict[str, Any] | None = None
        # A Lambda environment runs one invocation at a time; module-level state in
        # handlers (loggers with per-invocation keys) relies on it.
        self._lock = threading.Lock()

    def initialize(self) -> dict[str, Any] | None:
        """Import the handler; return None on success, else the error payload."""
        module_name, _, attribute = self.handler_path.rpartition(".")
        try:
            if not module_name:
                raise ValueError(
                    f"the handler {self.handler_path!r} must look like 'package.module.function'"
                )
            importlib.invalidate_caches()
            module = importlib.import_module(module_name)
            handler = getattr(module, attribute)
            if not callable(handler):
                raise TypeError(f"{self.handler_path} is not callable")
        except Exception as error:
            traceback.print_exc()
            error_type = (
                "Runtime.ImportModuleError"
                if isinstance(error, ImportError)
                else "Runtime.HandlerNotFound"
                if isinstance(error, AttributeError)
                else "Runtime.UserCodeSyntaxError"
                if isinstance(error, SyntaxError)
                else type(error).__name__
            )
            self._init_error = {
                "errorType": error_type,
                "errorMessage": f"Unable to import handler {self.handler_path!r}: {error}",
                "stackTrace": traceback.format_tb(error.__traceback__),
            }
            return self._init_error
        self._handler = handler
        self._init_error = None
        return None

    def invoke(self, event: Any, request_id: str) -> tuple[Any, bool]:
        """Run the handler; return (payload, failed)."""
        with self._lock:
            if self._handler is None:
                # Lambda runs the init phase again for the next invocation after it failed.
                init_error = self.initialize()
                if init_error is not None:
                    return init_error, True
            assert self._handler is not None
            context = LambdaContext(
                function_name=self.function_name,
                memory_limit_in_mb=self.memory,
                invoked_function_arn=self.function_arn,
                aws_request_id=request_id,
                deadline=time.monotonic() + self.timeout,
            )
            try:
                return self._handler(event, context), False
            except Exception as error:
                traceback.print_exc()
                return {
                    "errorType": type(error).__name__,
                    "errorMessage": str(error),
                    "requestId": request_id,
                    "stackTrace": traceback.format_tb(error.__traceback__),
                }, True
            finally:
                sys.stdout.flush()
                sys.stderr.flush()


def _make_request_handler(host: FunctionHost) -> type[BaseHTTPRequestHandler]:
    class InvocationHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-lambda"

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != INVOKE_PATH:
                self._answer(HTTPStatus.NOT_FOUND, {"message": f"no route {self.path}"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_PAYLOAD_BYTES:
                self.close_connection = True
                self._answer(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {
                        "errorType": "RequestTooLargeException",
                        "errorMessage": f"request payload of {length} bytes is over "
                        f"{MAX_PAYLOAD_BYTES} bytes",
                    },
                )
                return
            raw = self.rfile.read(length) if length else b""
            try:
                event = json.loads(raw) if raw else {}
            except json.JSONDecodeError as error:
                self._answer(
                    HTTPStatus.BAD_REQUEST,
                    {"errorType": "InvalidRequestContentException", "errorMessage": str(error)},
                )
                return
            request_id = self.headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4())
            payload, failed = host.invoke(event, request_id)
            try:
                body = json.dumps(payload).encode()
            except (TypeError, ValueError) as error:
                payload = {
                    "errorType": "Runtime.MarshalError",
                    "errorMessage": f"Unable to marshal response: {error}",
                }
                body, failed = json.dumps(payload).encode(), True
            headers = {REQUEST_ID_HEADER: request_id}
            if failed:
                headers[FUNCTION_ERROR_HEADER] = "Unhandled"
            self._answer(HTTPStatus.OK, body, headers)

        def _answer(
            self,
            status: HTTPStatus,
            payload: bytes | dict[str, Any],
            headers: dict[str, str] | None = None,
        ) -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Keep access logs out of the function's log stream."""

    return InvocationHandler


def _exit_when_parent_goes(stdin_fd: int) -> None:
    """Exit once the parent closes our stdin, so a killed stack leaves no runner behind."""
    try:
        while os.read(stdin_fd, 1024):
            pass
    except OSError:
        pass
    os._exit(0)


def install_access_guard(function_id: str, policy_json: str) -> None:
    """Check every call of clients made from boto3's default session against the policy."""
    import boto3

    from infra.local.iam import AccessGuard, FunctionPolicy

    policy = FunctionPolicy.from_json(function_id, json.loads(policy_json))
    boto3.setup_default_session()
    AccessGuard(policy).install(boto3.DEFAULT_SESSION)


def serve(arguments: argparse.Namespace) -> int:
    if arguments.policy is not None:
        # Before the handler's import, which creates its clients.
        install_access_guard(arguments.function_id or arguments.function_name, arguments.policy)
    host = FunctionHost(
        handler_path=arguments.handler,
        function_name=arguments.function_name,
        timeout=arguments.timeout,
        memory=arguments.memory,
        function_arn=arguments.function_arn,
    )
    init_error = host.initialize()

    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), _make_request_handler(host), bind_and_activate=False
    )
    server.socket.close()
    server.socket = socket.socket(fileno=arguments.listen_fd)
    server.server_address = server.socket.getsockname()
    server.daemon_threads = True

    with os.fdopen(arguments.ready_fd, "w") as ready:
        ready.write(json.dumps({"init_error": init_error}) + "\n")

    threading.Thread(target=_exit_when_parent_goes, args=(sys.stdin.fileno(),), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--function-name", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--function-arn", default=None)
    parser.add_argument("--function-id", default=None, help="the template's logical id")
    parser.add_argument("--policy", default=None, help="IAM statements as JSON to enforce")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
