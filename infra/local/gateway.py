"""An HTTP server that plays API Gateway (REST API, Lambda proxy integration) in front of runners.

Routes come from the template's ``Type: Api`` events. Each request becomes a version 1.0
proxy event and the function's proxy response becomes the HTTP response.

Where this deliberately differs from API Gateway, for a friendlier dev loop:

- An unknown path answers 404 ``{"message": "Not Found"}`` and a known path with a method
  it does not declare answers 405 ``{"message": "Method Not Allowed"}`` with an ``Allow``
  header. API Gateway answers both with 403 ``{"message": "Missing Authentication
  Token"}``.
- The API is served at the root (``/orders``), without the stage prefix (``/v1/orders``)
  that the execute-api URL carries; ``requestContext.stage`` and ``requestContext.path``
  still name the stage.
- A body that is not UTF-8 reaches the function base64-encoded with ``isBase64Encoded``
  set, since the template declares no binary media types to decide by.
- The 29-second integration timeout is not enforced; the function's own Timeout is.

As on API Gateway: ``path`` and ``pathParameters`` keep the percent-encoding the client
sent while query string values are decoded; a trailing slash matches the route without
it; a body over 10 MB is refused with 413; a function error or a malformed proxy response
answers 502 ``{"message": "Internal server error"}``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from infra.local.runner import Invoker, RunnerError
from infra.local.template import LOCAL_ACCOUNT, Template

logger = logging.getLogger("orders.local.gateway")

# API Gateway's payload limit for REST APIs.
MAX_REQUEST_BODY_BYTES = 10 * 1024 * 1024
# A client that stops sending mid-request must not hold a server thread forever.
REQUEST_READ_TIMEOUT = 30.0
LOCAL_API_ID = "local"
_PARAMETER = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")
_ALLOWED_RESPONSE_KEYS = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"}
# Hop-by-hop and framing headers are the server's business, not the function's.
_FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class GatewayError(RuntimeError):
    """The gateway could not start or the template declares a route it cannot serve."""


class PortUnavailableError(GatewayError):
    def __init__(self, port: int, reason: str) -> None:
        super().__init__(f"cannot listen on 127.0.0.1:{port}: {reason}")
        self.port = port


@dataclass(frozen=True)
class Route:
    """One ``Type: Api`` event: a resource path template and a method bound to a function."""

    function_id: str
    resource: str
    method: str
    stage: str
    pattern: re.Pattern[str] = field(compare=False)
    rank: tuple[int, ...] = field(compare=False)

    @classmethod
    def create(cls, function_id: str, resource: str, method: str, stage: str) -> Route:
        if not resource.startswith("/"):
            raise GatewayError(
                f"{function_id}: the Api event path {resource!r} must start with '/'"
            )
        parts: list[str] = []
        rank: list[int] = []
        for segment in resource.strip("/").split("/") if resource != "/" else []:
            parameter = _PARAMETER.match(segment)
            if parameter is None:
                if "{" in segment or "}" in segment:
                    raise GatewayError(
                        f"{function_id}: the path segment {segment!r} in {resource!r} mixes "
                        "text and a parameter, which API Gateway rejects"
                    )
                parts.append(re.escape(segment))
                rank.append(0)
            elif parameter.group(2):
                parts.append(f"(?P<{_group_name(parameter.group(1))}>.+)")
                rank.append(2)
            else:
                parts.append(f"(?P<{_group_name(parameter.group(1))}>[^/]+)")
                rank.append(1)
        regex = "^/" + "/".join(parts) + "/?$"
        return cls(
            function_id=function_id,
            resource=resource,
            method=method.upper(),
            stage=stage,
            pattern=re.compile(regex),
            rank=tuple(rank),
        )

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {_parameter_name(name): value for name, value in found.groupdict().items()}

    def accepts(self, method: str) -> bool:
        return self.method in ("ANY", method)


def _group_name(parameter: str) -> str:
    # Regex group names must be identifiers; template parameter names may hold '-' or '.'.
    return "p_" + parameter.encode().hex()


def _parameter_name(group_name: str) -> str:
    return bytes.fromhex(group_name.removeprefix("p_")).decode()


def routes_from_template(template: Template) -> list[Route]:
    routes = []
    for function_id, spec in template.functions().items():
        for event_name, properties in spec.events_of_type("Api").items():
            if "Path" not in properties or "Method" not in properties:
                raise GatewayError(
                    f"{function_id}.{event_name}: an Api event needs Path and Method"
                )
            stage = template.api_stage(properties.get("RestApiId"))
            routes.append(
                Route.create(function_id, properties["Path"], properties["Method"], stage)
            )
    # API Gateway prefers the most specific resource: literal segments over {param}
    # over {proxy+}, comparing from the left.
    return sorted(routes, key=lambda route: route.rank)


# Proxy event and response ----------------------------------------------------------


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    target: str
    headers: Sequence[tuple[str, str]]
    body: bytes
    source_ip: str
    host: str


def build_proxy_event(
    route: Route, path_parameters: Mapping[str, str], request: IncomingRequest
) -> dict[str, Any]:
    """Turn a request into the version 1.0 event of API Gateway's Lambda proxy integration."""
    split = urlsplit(request.target)
    path = split.path or "/"
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(split.query, keep_blank_values=True):
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    try:
        body: str | None = request.body.decode("utf-8") if request.body else None
        is_base64 = False
    except UnicodeDecodeError:
        body, is_base64 = base64.b64encode(request.body).decode("ascii"), True
    now = datetime.now(UTC)
    user_agent = next(
        (value for name, value in request.headers if name.lower() == "user-agent"), None
    )
    return {
        "resource": route.resource,
        "path": path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) or None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": is_base64,
        "requestContext": {
            "accountId": LOCAL_ACCOUNT,
            "apiId": LOCAL_API_ID,
            "resourceId": route.resource,
            "resourcePath": route.resource,
            "httpMethod": request.method,
            "path": f"/{route.stage}{path}",
            "stage": route.stage,
            "protocol": "HTTP/1.1",
            "requestId": str(uuid.uuid4()),
            "extendedRequestId": str(uuid.uuid4()),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "domainName": request.host,
            "identity": {
                "sourceIp": request.source_ip,
                "userAgent": user_agent,
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "user": None,
                "userArn": None,
            },
        },
    }


@dataclass(frozen=True)
class ProxyResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class MalformedResponseError(ValueError):
    """The function's answer is not a valid Lambda proxy response."""


def parse_proxy_response(payload: Any) -> ProxyResponse:
    if not isinstance(payload, dict):
        raise MalformedResponseError(f"expected a JSON object, got {type(payload).__name__}")
    unknown = set(payload) - _ALLOWED_RESPONSE_KEYS
    if unknown:
        raise MalformedResponseError(f"unexpected keys {sorted(unknown)}")
    status = payload.get("statusCode")
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise MalformedResponseError(f"statusCode must be an HTTP status, got {status!r}")
    single = payload.get("headers") or {}
    multi = payload.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise MalformedResponseError("headers and multiValueHeaders must be JSON objects")
    headers: list[tuple[str, str]] = []
    multi_names = {name.lower() for name in multi}
    for name, values in multi.items():
        if not isinstance(values, list):
            raise MalformedResponseError(f"multiValueHeaders[{name!r}] must be a list")
        headers.extend((name, _header_value(value)) for value in values)
    headers.extend(
        (name, _header_value(value))
        for name, value in single.items()
        if name.lower() not in multi_names
    )
    body = payload.get("body")
    if body is None:
        raw = b""
    elif isinstance(body, str):
        if payload.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(body, validate=True)
            except ValueError as error:
                raise MalformedResponseError(f"body is not valid base64: {error}") from None
        else:
            raw = body.encode()
    else:
        raise MalformedResponseError(f"body must be a string, got {type(body).__name__}")
    return ProxyResponse(status=status, headers=headers, body=raw)


def _header_value(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise MalformedResponseError(f"header values must be strings, got {value!r}")
    return str(value)


# Server ----------------------------------------------------------------------------


class _GatewayServer(ThreadingHTTPServer):
    # http.server listens with a backlog of 5, which resets clients in a burst of
    # concurrent requests; API Gateway accepts them and throttles far higher.
    request_queue_size = 128
    daemon_threads = True


class ApiGateway:
    """A threaded HTTP server on 127.0.0.1 that routes requests to function runners."""

    def __init__(
        self,
        routes: Sequence[Route],
        invokers: Mapping[str, Invoker],
        *,
        port: int = 0,
        max_body_bytes: int = MAX_REQUEST_BODY_BYTES,
    ) -> None:
        self.routes = list(routes)
        # Kept by reference: a stack binds the port first and adds its runners later.
        self.invokers = invokers
        self.max_body_bytes = max_body_bytes
        try:
            self._server = _GatewayServer(("127.0.0.1", port), _make_handler(self))
        except OSError as error:
            raise PortUnavailableError(port, error.strerror or str(error)) from None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiGateway:
        missing = {route.function_id for route in self.routes} - set(self.invokers)
        if missing:
            raise GatewayError(f"no runner for the functions {sorted(missing)}")
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="api-gateway",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ApiGateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def find_route(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """Return the matching route and its parameters, or the methods the path accepts."""
        allowed: list[str] = []
        for route in self.routes:
            parameters = route.match(path)
            if parameters is None:
                continue
            if route.accepts(method):
                return route, parameters
            allowed.append(route.method)
        return allowed


def _make_handler(gateway: ApiGateway) -> type[BaseHTTPRequestHandler]:
    class ProxyHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "local-api-gateway"
        timeout = REQUEST_READ_TIMEOUT

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_PATCH(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

        def do_OPTIONS(self) -> None:
            self._handle()

        def _handle(self) -> None:
            started = time.monotonic()
            status = self._dispatch()
            logger.info(
                "%s %s -> %d (%.0f ms)",
                self.command,
                self.path,
                status,
                (time.monotonic() - started) * 1000,
            )

        def _dispatch(self) -> int:
            path = urlsplit(self.path).path or "/"
            found = gateway.find_route(self.command, path)
            if isinstance(found, list):
                self._drain_small_body()
                if found:
                    return self._error(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        "Method Not Allowed",
                        extra_headers=[("Allow", ", ".join(sorted(set(found))))],
                    )
                return self._error(HTTPStatus.NOT_FOUND, "Not Found")
            route, parameters = found
            body = self._read_body()
            if body is None:
                self.close_connection = True
                return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large")
            request = IncomingRequest(
                method=self.command,
                target=self.path,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
                host=self.headers.get("Host") or f"127.0.0.1:{gateway.port}",
            )
            event = build_proxy_event(route, parameters, request)
            request_id = event["requestContext"]["requestId"]
            try:
                result = gateway.invokers[route.function_id].invoke(event)
            except RunnerError as error:
                logger.error("%s: the invocation failed: %s", route.function_id, error)
                return self._error(HTTPStatus.BAD_GATEWAY, "Internal server error", request_id)
            except Exception:
                logger.exception("%s: the invocation failed", route.function_id)
                return self._error(HTTPStatus.BAD_GATEWAY, "Internal server error", request_id)
            if result.failed:
                payload = result.payload if isinstance(result.payload, dict) else {}
                message = str(payload.get("errorMessage", "")).strip()
                logger.error(
                    "%s: %s: %s",
                    route.function_id,
                    payload.get("errorType", result.function_error),
                    message.splitlines()[0] if message else "",
                )
                return self._error(HTTPStatus.BAD_GATEWAY, "Internal server error", request_id)
            try:
                response = parse_proxy_response(result.payload)
            except MalformedResponseError as error:
                logger.error(
                    "%s: malformed Lambda proxy response (%s)", route.function_id, error
                )
                return self._error(HTTPStatus.BAD_GATEWAY, "Internal server error", request_id)
            self._send(response, request_id)
            return response.status

        def _read_body(self) -> bytes | None:
            """Read the body, or return None when it is over the limit.

            An oversized body is still read and dropped, up to twice the limit, so the
            client, still sending, gets to read the 413 instead of a reset connection.
            """
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunked()
            length = _content_length(self.headers.get("Content-Length"))
            if length > gateway.max_body_bytes:
                if length <= 2 * gateway.max_body_bytes:
                    self._discard(length)
                return None
            return self.rfile.read(length) if length > 0 else b""

        def _read_chunked(self) -> bytes | None:
            chunks: list[bytes] = []
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return None if total > gateway.max_body_bytes else b"".join(chunks)
                total += size
                if total > 2 * gateway.max_body_bytes:
                    return None
                if total > gateway.max_body_bytes:
                    chunks.clear()
                    self._discard(size)
                else:
                    chunks.append(self.rfile.read(size))
                self.rfile.readline(16)

        def _discard(self, length: int) -> None:
            while length > 0:
                read = len(self.rfile.read(min(length, 1024 * 1024)))
                if not read:
                    return
                length -= read

        def _drain_small_body(self) -> None:
            """Read a small body we will not use, so keep-alive stays in sync; drop big ones."""
            length = _content_length(self.headers.get("Content-Length"))
            if 0 < length <= 64 * 1024:
                self.rfile.read(length)
            elif length or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True

        def _send(self, response: ProxyResponse, request_id: str) -> None:
            self.send_response(response.status)
            names = set()
            for name, value in response.headers:
                if name.lower() in _FRAMING_HEADERS:
                    continue
                names.add(name.lower())
                self.send_header(name, value)
            if "content-type" not in names:
                self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-RequestId", request_id)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        def _error(
            self,
            status: HTTPStatus,
            message: str,
            request_id: str | None = None,
            extra_headers: Sequence[tuple[str, str]] = (),
        ) -> int:
            body = json.dumps({"message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-amzn-RequestId", request_id or str(uuid.uuid4()))
            self.send_header("x-amzn-ErrorType", _ERROR_TYPES.get(status, "InternalFailure"))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return int(status)

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are logged once, with their outcome, by _handle."""

    return ProxyHandler


def _content_length(header: str | None) -> int:
    try:
        return max(0, int(header or 0))
    except ValueError:
        return 0


_ERROR_TYPES = {
    HTTPStatus.NOT_FOUND: "NotFoundException",
    HTTPStatus.METHOD_NOT_ALLOWED: "MethodNotAllowedException",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RequestEntityTooLargeException",
    HTTPStatus.BAD_GATEWAY: "InternalServerErrorException",
}
