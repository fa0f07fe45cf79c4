"""The parts the local fakes of external HTTP APIs share (Stripe, the carrier).

Each fake is a threaded ``http.server`` on 127.0.0.1 that keeps its state in memory, stores
idempotent responses, and has an admin API under ``/_fake/``:

- ``POST /_fake/failures`` with ``{"mode": ..., "count": N}`` makes the next N API
  requests fail. ``path_prefix`` limits the failure to matching paths, and ``seconds``
  sets how long ``stall_after_commit`` waits. The modes are:

  * ``status_500``: return a 500 error and do nothing else;
  * ``status_429``: return a 429 rate-limit error and do nothing else;
  * ``drop_after_commit``: run the request, store its result and idempotent response,
    then close the connection without sending a response;
  * ``stall_after_commit``: like ``drop_after_commit``, but wait ``seconds`` (at most
    :data:`MAX_STALL_SECONDS`) before closing, so the client's read timeout fires first.

- ``DELETE /_fake/failures`` disarms every failure, ``GET /_fake/state`` returns the stored
  objects as JSON, and ``POST /_fake/reset`` deletes all state and armed failures.

Requests are handled one at a time under one lock, so two requests with the same
idempotency key never run concurrently: the second one replays the first one's response.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger("orders.local.fakes")

LOOPBACK = "127.0.0.1"
MAX_BODY_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 256
MAX_FAILURE_COUNT: Final = 1000
MAX_STALL_SECONDS: Final = 30.0
FAILURE_MODES: Final = frozenset(
    {"status_500", "status_429", "drop_after_commit", "stall_after_commit"}
)
REJECTING_MODES: Final = frozenset({"status_500", "status_429"})


class BadRequestError(ValueError):
    """A request the fake cannot parse; it becomes a 4xx response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        """Parse the body as JSON; raise :class:`BadRequestError` (400) if it is not."""
        if not self.body:
            raise BadRequestError(400, "the request body is empty; send a JSON object")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise BadRequestError(400, f"the request body is not valid JSON: {error}") from None


@dataclass(frozen=True)
class Response:
    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredResponse:
    """The first response sent for an idempotency key, with the fingerprint of its request."""

    fingerprint: tuple[Any, ...]
    response: Response
    request_id: str


@dataclass
class ArmedFailure:
    mode: str
    remaining: int
    path_prefix: str
    seconds: float

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "remaining": self.remaining,
            "path_prefix": self.path_prefix,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Outcome:
    """A response, or a connection the server closes without one (``drop_after`` set)."""

    response: Response
    drop_after: float | None = None


def new_id(prefix: str) -> str:
    """Build an object id in Stripe's style, e.g. ``pi_3f9a...`` (24 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def parse_int(value: object) -> int | None:
    """Parse a base-10 integer with an optional minus sign, as form fields carry it."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None
    digits = value[1:] if value.startswith("-") else value
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    return int(value)


class FailureSwitch:
    """Failures armed through the admin API, consumed one per matching API request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed: list[ArmedFailure] = []

    def arm(
        self, mode: str, count: int = 1, *, path_prefix: str = "/", seconds: float = 5.0
    ) -> ArmedFailure:
        if mode not in FAILURE_MODES:
            raise BadRequestError(
                400, f"unknown failure mode {mode!r}; use one of {sorted(FAILURE_MODES)}"
            )
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not 1 <= count <= (MAX_FAILURE_COUNT)
        ):
            raise BadRequestError(
                400, f"count {count!r} is invalid; use an integer from 1 to {MAX_FAILURE_COUNT}"
            )
        if not isinstance(path_prefix, str) or not path_prefix.startswith("/"):
            raise BadRequestError(400, f"path_prefix {path_prefix!r} must start with '/'")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= MAX_STALL_SECONDS
        ):
            raise BadRequestError(
                400, f"seconds {seconds!r} is invalid; use 0 to {MAX_STALL_SECONDS}"
            )
        failure = ArmedFailure(mode, count, path_prefix, float(seconds))
        with self._lock:
            self._armed.append(failure)
        return failure

    def take(self, path: str) -> ArmedFailure | None:
        """Consume one failure armed for ``path``, oldest first; ``None`` if there is none."""
        with self._lock:
            for failure in self._armed:
                if path.startswith(failure.path_prefix):
                    failure.remaining -= 1
                    if failure.remaining == 0:
                        self._armed.remove(failure)
                    return ArmedFailure(
                        failure.mode, failure.remaining, failure.path_prefix, failure.seconds
                    )
        return None

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [failure.describe() for failure in self._armed]


class FakeHttpApi:
    """Base class of a fake API: the admin endpoints, failure injection and the server.

    Subclasses implement :meth:`authorize`, :meth:`handle_api`, :meth:`failure_response`,
    :meth:`state` and :meth:`clear_state`, and call them only under :attr:`lock`.
    """

    name = "fake"

    def __init__(self, port: int = 0) -> None:
        self.lock = threading.RLock()
        self.failures = FailureSwitch()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> FakeHttpApi:
        """Start serving on 127.0.0.1 in a daemon thread; return ``self``."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already running at {self.url}")
        server = ThreadingHTTPServer((LOOPBACK, self._port), _handler_class(self))
        server.daemon_threads = True
        self._server = server
        self._stopping.clear()
        # A short poll interval lets stop() return within 50 ms.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-server",
            daemon=True,
        )
        self._thread.start()
        logger.info("%s listening on %s", self.name, self.url)
        return self

    def stop(self) -> None:
        """Stop the server; stalled requests end at once. Stopping twice is a no-op."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        logger.info("%s stopped (%s)", self.name, self.url)
        self._server = None
        self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> FakeHttpApi:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- Python admin API -------------------------------------------------------------

    def fail_next(
        self, mode: str, count: int = 1, *, path_prefix: str = "/", seconds: float = 5.0
    ) -> None:
        """Make the next ``count`` API requests under ``path_prefix`` fail with ``mode``."""
        try:
            self.failures.arm(mode, count, path_prefix=path_prefix, seconds=seconds)
        except BadRequestError as error:
            raise ValueError(str(error)) from None

    def reset(self) -> None:
        """Forget every stored object, idempotent response and armed failure."""
        self.failures.clear()
        with self.lock:
            self.clear_state()

    # --- request handling -------------------------------------------------------------

    def handle(self, request: Request) -> Outcome:
        if request.path.startswith("/_fake/"):
            return Outcome(self._handle_admin(request))
        with self.lock:
            rejection = self.authorize(request)
            if rejection is not None:
                return Outcome(rejection)
            failure = self.failures.take(request.path)
            if failure is not None and failure.mode in REJECTING_MODES:
                logger.info(
                    "%s: injected %s for %s %s",
                    self.name,
                    failure.mode,
                    request.method,
                    request.path,
                )
                return Outcome(self.failure_response(failure.mode))
            response = self.handle_api(request)
        if failure is None:
            return Outcome(response)
        logger.info(
            "%s: injected %s for %s %s", self.name, failure.mode, request.method, request.path
        )
        delay = failure.seconds if failure.mode == "stall_after_commit" else 0.0
        return Outcome(response, drop_after=delay)

    def wait_for_stop(self, seconds: float) -> None:
        """Wait ``seconds``, or less when the server stops meanwhile."""
        self._stopping.wait(seconds)

    def _handle_admin(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/"))
        if route == ("GET", "/_fake/state"):
            with self.lock:
                state = self.state()
            return Response(200, {**state, "failures": self.failures.describe()})
        if route == ("POST", "/_fake/failures"):
            payload = request.json()
            if not isinstance(payload, dict):
                raise BadRequestError(400, 'send a JSON object such as {"mode": "status_500"}')
            failure = self.failures.arm(
                payload.get("mode", ""),
                payload.get("count", 1),
                path_prefix=payload.get("path_prefix", "/"),
                seconds=payload.get("seconds", 5.0),
            )
            return Response(201, failure.describe())
        if route == ("DELETE", "/_fake/failures"):
            self.failures.clear()
            return Response(200, {"failures": []})
        if route == ("POST", "/_fake/reset"):
            self.reset()
            return Response(200, {"reset": True})
        response = self.handle_admin_route(request)
        if response is not None:
            return response
        raise BadRequestError(404, f"no admin endpoint {request.method} {request.path}")

    # --- for subclasses ---------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """Return an error response for an unauthorized request, ``None`` otherwise."""
        return None

    def handle_api(self, request: Request) -> Response:
        raise NotImplementedError

    def handle_admin_route(self, request: Request) -> Response | None:
        """Serve an admin route of the subclass; ``None`` when there is no such route."""
        return None

    def failure_response(self, mode: str) -> Response:
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> Response:
        """Shape an error found while parsing a request (size, JSON, unknown route)."""
        return Response(status, {"error": {"message": message}})

    def state(self) -> dict[str, Any]:
        raise NotImplementedError

    def clear_state(self) -> None:
        raise NotImplementedError


def _handler_class(api: FakeHttpApi) -> type[_FakeRequestHandler]:
    class Handler(_FakeRequestHandler):
        fake = api

    return Handler


class _FakeRequestHandler(BaseHTTPRequestHandler):
    fake: FakeHttpApi
    # HTTP/1.0: one request per connection, so a dropped connection never breaks a
    # client's pooled connection for a later request.
    protocol_version = "HTTP/1.0"
    server_version = "orders-local-fake/1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status: bodies may carry payment method ids.
        logger.debug("%s: " + format, self.fake.name, *args)

    def _serve(self) -> None:
        try:
            request = self._read_request()
            outcome = self.fake.handle(request)
        except BadRequestError as error:
            outcome = Outcome(self.fake.error_response(error.status, str(error)))
        except Exception:
            logger.exception("%s: request %s %s failed", self.fake.name, self.command, self.path)
            outcome = Outcome(
                self.fake.error_response(500, "the fake raised an unexpected error; see its log")
            )
        if outcome.drop_after is not None:
            self.fake.wait_for_stop(outcome.drop_after)
            self._drop_connection()
            return
        self._send(outcome.response)

    def _read_request(self) -> Request:
        length_header = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise BadRequestError(411, "chunked bodies are not supported; send Content-Length")
        length = parse_int(length_header) if length_header is not None else 0
        if length is None or length < 0:
            raise BadRequestError(400, f"Content-Length {length_header!r} is invalid")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise BadRequestError(
                413, f"the body has {length} bytes, over the maximum of {MAX_BODY_BYTES}"
            )
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        try:
            query = dict(parse_qsl(parts.query, keep_blank_values=True, max_num_fields=MAX_FIELDS))
        except ValueError:
            raise BadRequestError(
                400, f"the query string has more than {MAX_FIELDS} fields"
            ) from None
        headers = {name.lower(): value for name, value in self.headers.items()}
        return Request(self.command, parts.path, query, headers, body)

    def _send(self, response: Response) -> None:
        payload = json.dumps(response.body, separators=(",", ":")).encode()
        self.send_response(response.status, HTTPStatus(response.status).phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # the client has already gone
            self.connection.shutdown(socket.SHUT_RDWR)
