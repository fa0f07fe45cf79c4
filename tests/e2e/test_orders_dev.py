"""`orders dev` as a developer runs it: a process that gets ready, serves, and stops cleanly."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from infra.local.dev_state import STATE_FILE_NAME
from infra.local.dynamodb_local import free_port

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0
EXIT_TIMEOUT = 30.0


class DevProcess:
    """`orders dev` in a subprocess, with its output read line by line in the background."""

    def __init__(self, *arguments: str) -> None:
        # A Stripe key in the shell would make the stack use Stripe's API instead of the fake.
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("PORT", "STRIPE_API_KEY")
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "infra.local.cli", "dev", *arguments],
            cwd=PROJECT_ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip())

    def wait_for_line(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if needle in line:
                return line
        raise AssertionError(
            f"no line with {needle!r} within {timeout} s; output so far:\n"
            + "\n".join(self.output)
        )

    def rest_of_output(self) -> str:
        while True:
            try:
                self.output.append(self.lines.get(timeout=0.5))
            except queue.Empty:
                return "\n".join(self.output)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=EXIT_TIMEOUT)


@pytest.fixture
def dev_process() -> Iterator[list[DevProcess]]:
    started: list[DevProcess] = []
    yield started
    for dev in started:
        dev.stop()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_orders_dev_stops_every_child_on_signal(
    dev_process: list[DevProcess], stop_signal: signal.Signals, tmp_path: Path
) -> None:
    port = free_port()
    dev = DevProcess("--in-memory", "--port", str(port), "--data-dir", str(tmp_path))
    dev_process.append(dev)
    state_file = tmp_path / STATE_FILE_NAME

    ready = dev.wait_for_line("orders dev: ready on", READY_TIMEOUT)
    assert f"http://127.0.0.1:{port}" in ready
    assert json.loads(state_file.read_text())["pid"] == dev.process.pid

    response = requests.get(f"http://127.0.0.1:{port}/no/such/route", timeout=10)
    assert response.status_code == 404

    children = descendants(dev.process.pid)
    # DynamoDB Local plus one runner per template function.
    assert len(children) >= 3

    dev.process.send_signal(stop_signal)
    code = dev.process.wait(timeout=EXIT_TIMEOUT)
    assert code == 0, dev.rest_of_output()

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid in children):
        time.sleep(0.05)
    assert [pid for pid in children if alive(pid)] == []
    assert not state_file.exists()


def test_orders_dev_reports_taken_port(dev_process: list[DevProcess], tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dev = DevProcess("--in-memory", "--port", str(port), "--data-dir", str(tmp_path))
        dev_process.append(dev)

        code = dev.process.wait(timeout=EXIT_TIMEOUT)
        output = dev.rest_of_output()

    assert code == 2
    assert f"port {port}" in output
    assert "--port" in output
    assert "PORT=" in output
