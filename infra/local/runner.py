"""Run a template function in its own Python processes and invoke it over HTTP.

Each ``FunctionRunner`` owns up to ``max_concurrency`` execution environments, each a
``python -m infra.local.function_host`` process with the function's environment from
the template. An environment imports the handler once and then serves one invocation
at a time, as on Lambda; a busy runner starts another environment (a cold start) until
it reaches ``max_concurrency``, then callers wait for a free one.

The listening socket is bound here and handed to the child, so there is no window in
which another process could take its port. An invocation that outlives the function's
``Timeout`` is answered with Lambda's timeout error and its environment is killed, since
the handler may be stuck.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import queue
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from infra.local.function_host import (
    FUNCTION_ERROR_HEADER,
    INVOKE_PATH,
    MAX_PAYLOAD_BYTES,
    REQUEST_ID_HEADER,
)
from infra.local.iam import FunctionPolicy
from infra.local.template import LOCAL_ACCOUNT, LOCAL_REGION, FunctionSpec

logger = logging.getLogger("orders.local.runner")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Lambda allows 10 s for the init phase; a loaded 2-core laptop importing boto3,
# pydantic and Powertools deserves more before we call it broken.
DEFAULT_INIT_TIMEOUT = 30.0
# Time for the HTTP round trip on top of the function's own Timeout.
INVOKE_GRACE_SECONDS = 0.5
STOP_TIMEOUT = 5.0

OutputSink = Callable[[str, str], None]
"""Receives (function name, one line of the function's stdout or stderr)."""


class RunnerError(RuntimeError):
    """A function environment could not be started or reached."""


class PayloadTooLargeError(RunnerError):
    """The event is over Lambda's 6 MB limit for a synchronous invocation."""


@dataclass(frozen=True)
class InvocationResult:
    """What Lambda's Invoke answers: the payload and, on failure, the function error kind."""

    payload: Any
    function_error: str | None
    request_id: str
    duration: float

    @property
    def failed(self) -> bool:
        return self.function_error is not None


class Invoker(Protocol):
    """Anything that invokes a function synchronously; FunctionRunner is the real one."""

    def invoke(self, event: Any) -> InvocationResult: ...


def console_output(stream: IO[str] | None = None) -> OutputSink:
    """Print each function line to ``stream`` (stdout by default), prefixed by its name."""
    lock = threading.Lock()

    def write(function_name: str, line: str) -> None:
        target = stream or sys.stdout
        with lock:
            target.write(f"{function_name} | {line}\n")
            target.flush()

    return write


def lambda_environment(
    spec: FunctionSpec,
    function_name: str,
    *,
    code_dir: Path,
    service_environment: Mapping[str, str],
    python_path: Sequence[Path] = (),
) -> dict[str, str]:
    """Build the process environment Lambda would give this function, pointed at local services.

    Nothing from the developer's shell leaks in except PATH, HOME and locale, so a real
    AWS profile or key in the shell never reaches local code.
    """
    inherited = {
        name: os.environ[name]
        for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
        if name in os.environ
    }
    search_path = [str(code_dir), *(str(path) for path in python_path)]
    if str(PROJECT_ROOT) not in search_path:
        search_path.append(str(PROJECT_ROOT))
    return {
        **inherited,
        "PYTHONPATH": os.pathsep.join(search_path),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TZ": "UTC",
        "AWS_REGION": LOCAL_REGION,
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{function_name}",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.11",
        "LAMBDA_TASK_ROOT": str(code_dir),
        "_HANDLER": spec.handler,
        # The marker `sam local` sets; Powertools' Tracer switches itself off on it, as
        # there is no X-Ray daemon here.
        "AWS_SAM_LOCAL": "true",
        # Shared AWS config files could carry a real profile or endpoints.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **spec.environment,
        **service_environment,
    }


class _Environment:
    """One function_host process and the port it serves on."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, relays: list[threading.Thread]):
        self.process = process
        self.port = port
        self.relays = relays

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        for relay in self.relays:
            relay.join(timeout=1.0)


class FunctionRunner:
    """The local execution environments of one template function."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        function_name: str,
        environment: Mapping[str, str],
        handler: str | None = None,
        max_concurrency: int = 1,
        output: OutputSink | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        cwd: Path = PROJECT_ROOT,
        policy: FunctionPolicy | None = None,
    ) -> None:
        """``policy``: the function's IAM statements; its calls are refused beyond them."""
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.spec = spec
        self.function_name = function_name
        self.handler = handler or spec.handler
        self.environment = {**environment, "_HANDLER": handler or spec.handler}
        self.max_concurrency = max_concurrency
        self.output = output or console_output()
        self.init_timeout = init_timeout
        self.cwd = cwd
        self.policy = policy
        self._idle: queue.LifoQueue[_Environment] = queue.LifoQueue()
        self._environments: list[_Environment] = []
        self._starting = 0
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def timeout(self) -> float:
        return float(self.spec.timeout)

    @property
    def process_ids(self) -> list[int]:
        with self._lock:
            return [environment.process.pid for environment in self._environments]

    def start(self) -> FunctionRunner:
        """Start the first environment so the first invocation is warm."""
        self._idle.put(self._start_environment())
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            environments, self._environments = self._environments, []
        for environment in environments:
            environment.stop()

    def __enter__(self) -> FunctionRunner:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Invocation --------------------------------------------------------------------

    def invoke(self, event: Any, *, wait_timeout: float | None = None) -> InvocationResult:
        """Invoke the function synchronously (RequestResponse) and return its answer.

        ``wait_timeout`` bounds the wait for a free environment; by default the
        function's own Timeout.
        """
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        body = json.dumps(event).encode()
        if len(body) > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError(
                f"{self.function_name}: the event is {len(body)} bytes, over Lambda's "
                f"{MAX_PAYLOAD_BYTES}-byte limit for a synchronous invocation"
            )
        environment = self._acquire(wait_timeout if wait_timeout is not None else self.timeout)
        try:
            payload, function_error = self._call(environment, body, request_id)
        finally:
            self._release(environment)
        return InvocationResult(
            payload=payload,
            function_error=function_error,
            request_id=request_id,
            duration=time.monotonic() - started,
        )

    def _call(
        self, environment: _Environment, body: bytes, request_id: str
    ) -> tuple[Any, str | None]:
        connection = http.client.HTTPConnection(
            "127.0.0.1", environment.port, timeout=self.timeout + INVOKE_GRACE_SECONDS
        )
        try:
            connection.request(
                "POST",
                INVOKE_PATH,
                body=body,
                headers={"Content-Type": "application/json", REQUEST_ID_HEADER: request_id},
            )
            response = connection.getresponse()
            raw = response.read()
            function_error = response.getheader(FUNCTION_ERROR_HEADER)
        except TimeoutError:
            logger.warning(
                "%s: invocation %s timed out after %.2f s; restarting its environment",
                self.function_name,
                request_id,
                self.timeout,
            )
            environment.stop(timeout=1.0)
            return {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Task timed out after {self.timeout:.2f} seconds",
            }, "Unhandled"
        except (OSError, http.client.HTTPException) as error:
            code = environment.process.poll()
            logger.warning(
                "%s: invocation %s lost its environment (%s, exit code %s)",
                self.function_name,
                request_id,
                error,
                code,
            )
            environment.stop(timeout=1.0)
            return {
                "errorType": "Runtime.ExitError",
                "errorMessage": f"RequestId: {request_id} Error: Runtime exited "
                f"with error: exit status {code}",
            }, "Unhandled"
        finally:
            connection.close()
        if response.status != 200:
            return {
                "errorType": "ServiceException",
                "errorMessage": f"the function host answered HTTP {response.status}: {raw[:500]!r}",
            }, "Unhandled"
        return json.loads(raw) if raw else None, function_error

    def _acquire(self, wait_timeout: float) -> _Environment:
        deadline = time.monotonic() + wait_timeout
        while True:
            try:
                environment = self._idle.get_nowait()
            except queue.Empty:
                environment = None
            if environment is not None:
                if environment.alive:
                    return environment
                self._forget(environment)
                continue
            with self._lock:
                if self._stopped:
                    raise RunnerError(f"{self.function_name}: the runner is stopped")
                may_start = len(self._environments) + self._starting < self.max_concurrency
                if may_start:
                    self._starting += 1
            if may_start:
                try:
                    return self._start_environment()
                finally:
                    with self._lock:
                        self._starting -= 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerError(
                    f"{self.function_name}: all {self.max_concurrency} environments stayed "
                    f"busy for {wait_timeout:.1f} s; raise max_concurrency or shorten the work"
                )
            try:
                environment = self._idle.get(timeout=remaining)
            except queue.Empty:
                continue
            if environment.alive:
                return environment
            self._forget(environment)

    def _release(self, environment: _Environment) -> None:
        if environment.alive and not self._stopped:
            self._idle.put(environment)
        else:
            self._forget(environment)

    def _forget(self, environment: _Environment) -> None:
        environment.stop(timeout=1.0)
        with self._lock:
            if environment in self._environments:
                self._environments.remove(environment)

    # Process management ------------------------------------------------------------

    def _start_environment(self) -> _Environment:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port: int = listener.getsockname()[1]
        ready_read, ready_write = os.pipe()
        command = [
            sys.executable,
            "-m",
            "infra.local.function_host",
            "--handler",
            self.handler,
            "--function-name",
            self.function_name,
            "--timeout",
            str(self.spec.timeout),
            "--memory",
            str(self.spec.memory_size),
            "--function-arn",
            function_arn(self.function_name),
            "--listen-fd",
            str(listener.fileno()),
            "--ready-fd",
            str(ready_write),
        ]
        if self.policy is not None:
            command += [
                "--function-id",
                self.policy.function_id,
                "--policy",
                json.dumps(self.policy.to_json()),
            ]
        try:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=dict(self.environment),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(listener.fileno(), ready_write),
                # Its own session: a Ctrl-C in the terminal reaches only the stack, which
                # then stops its children in order.
                start_new_session=True,
            )
        finally:
            os.close(ready_write)
            listener.close()
        relays = [
            self._relay(process.stdout),
            self._relay(process.stderr),
        ]
        environment = _Environment(process, port, relays)
        with self._lock:
            self._environments.append(environment)
        try:
            init_error = self._wait_ready(ready_read, process)
        except RunnerError:
            self._forget(environment)
            raise
        finally:
            os.close(ready_read)
        if init_error is not None:
            logger.error(
                "%s: init failed (%s: %s); each invocation retries the import",
                self.function_name,
                init_error.get("errorType"),
                init_error.get("errorMessage"),
            )
        return environment

    def _wait_ready(self, ready_fd: int, process: subprocess.Popen[bytes]) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.init_timeout
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunnerError(
                    f"{self.function_name}: the function host did not finish its init phase "
                    f"within {self.init_timeout:.0f} s (handler {self.handler})"
                )
            readable, _, _ = select.select([ready_fd], [], [], min(remaining, 0.2))
            if readable:
                chunk = os.read(ready_fd, 4096)
                if not chunk:
                    code = process.wait(timeout=STOP_TIMEOUT)
                    raise RunnerError(
                        f"{self.function_name}: the function host exited with code {code} "
                        f"before it was ready; its output above says why"
                    )
                buffer += chunk
        message = json.loads(buffer.split(b"\n", 1)[0])
        init_error: dict[str, Any] | None = message.get("init_error")
        return init_error

    def _relay(self, pipe: IO[bytes] | None) -> threading.Thread:
        def pump() -> None:
            assert pipe is not None
            with pipe:
                for raw_line in pipe:
                    self.output(self.function_name, raw_line.decode(errors="replace").rstrip())

        thread = threading.Thread(target=pump, name=f"relay-{self.function_name}", daemon=True)
        thread.start()
        return thread


def function_arn(function_name: str) -> str:
    return f"arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{function_name}"
