"""The state file that lets other commands find a running ``orders dev``.

``orders dev`` writes ``dev-stack.json`` into its data folder once everything is up and
removes it when it stops. It contains the process id, the API's URL, moto's endpoint and
the URL of every template queue, so ``orders saga retry`` can reach the saga queue::

    {"pid": 4242, "stack_name": "orders-local", "api_url": "http://127.0.0.1:3000",
     "moto_endpoint_url": "http://127.0.0.1:40123", "region": "us-east-1",
     "queue_urls": {"SagaQueue": "http://127.0.0.1:40123/123456789012/SagaQueue", ...}}
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE_NAME = "dev-stack.json"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / ".orders-data"
MAX_STATE_BYTES = 64 * 1024


class DevStateError(RuntimeError):
    """Error raised when the state file names no running dev stack."""


@dataclass(frozen=True)
class DevState:
    pid: int
    stack_name: str
    api_url: str
    moto_endpoint_url: str
    region: str
    queue_urls: dict[str, str] = field(default_factory=dict)
    dynamodb_endpoint_url: str = ""
    table_names: dict[str, str] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        """Write atomically, so a reader never sees half a file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(asdict(self), indent=2) + "\n")
        partial.replace(path)


def remove(path: Path, pid: int) -> None:
    """Remove the state file if it still describes process ``pid`` (not a newer stack)."""
    try:
        state = read(path)
    except DevStateError:
        return
    if state.pid == pid:
        path.unlink(missing_ok=True)


def read(path: Path) -> DevState:
    """Read the state file; raise DevStateError saying what is missing or wrong."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        raise DevStateError(
            f"no dev stack is running: {path} does not exist. Start one with `orders dev` "
            "(or pass --data-dir if it keeps its data elsewhere)"
        ) from None
    except OSError as error:
        raise DevStateError(f"cannot read the dev stack's state file {path}: {error}") from None
    if len(raw) > MAX_STATE_BYTES:
        raise DevStateError(f"{path} is over {MAX_STATE_BYTES} bytes; it is not a state file")
    try:
        data: Any = json.loads(raw)
        return DevState(
            pid=int(data["pid"]),
            stack_name=str(data["stack_name"]),
            api_url=str(data["api_url"]),
            moto_endpoint_url=str(data["moto_endpoint_url"]),
            region=str(data["region"]),
            queue_urls={str(key): str(value) for key, value in data["queue_urls"].items()},
            dynamodb_endpoint_url=str(data.get("dynamodb_endpoint_url", "")),
            table_names={
                str(key): str(value) for key, value in data.get("table_names", {}).items()
            },
        )
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DevStateError(
            f"{path} is not a valid dev stack state file ({error!r}); delete it and restart "
            "`orders dev`"
        ) from None


def read_running(path: Path) -> DevState:
    """Read the state file and check that the process which wrote it is still alive."""
    state = read(path)
    if not _process_alive(state.pid):
        raise DevStateError(
            f"no dev stack is running: {path} names process {state.pid}, which has exited "
            "(the file is left over from a stack that was killed). Start one with `orders dev`"
        )
    return state


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
