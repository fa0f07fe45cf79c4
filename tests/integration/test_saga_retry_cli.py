"""`orders saga retry`: finding the dev stack's saga queue and sending the retry command."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local import dev_state, moto_server
from infra.local.cli import main

ORDER_ID = "0b6f3a52-8d4e-4f0e-9d55-5a3f2c9e6b41"


@pytest.fixture(scope="module")
def moto() -> Iterator[moto_server.MotoServer]:
    with moto_server.start() as server:
        yield server


@pytest.fixture
def saga_queue(moto: moto_server.MotoServer) -> str:
    sqs = moto_server.client("sqs", moto.endpoint_url)
    return str(sqs.create_queue(QueueName=f"cli{uuid.uuid4().hex[:8]}-SagaQueue")["QueueUrl"])


def write_state(data_dir: Path, moto: moto_server.MotoServer, queue_url: str, pid: int) -> None:
    dev_state.DevState(
        pid=pid,
        stack_name="orders-local",
        api_url="http://127.0.0.1:3000",
        moto_endpoint_url=moto.endpoint_url,
        region="us-east-1",
        queue_urls={"SagaQueue": queue_url},
    ).write(data_dir / dev_state.STATE_FILE_NAME)


def received(moto: moto_server.MotoServer, queue_url: str) -> list[dict[str, Any]]:
    sqs = moto_server.client("sqs", moto.endpoint_url)
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_retry_reaches_the_running_stack_s_saga_queue(
    tmp_path: Path, moto: moto_server.MotoServer, saga_queue: str
) -> None:
    write_state(tmp_path, moto, saga_queue, os.getpid())

    code = main(["saga", "retry", ORDER_ID, "--data-dir", str(tmp_path)])

    assert code == 0
    assert received(moto, saga_queue) == [{"action": "retry", "order_id": ORDER_ID}]


def test_missing_state_file_reports_no_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["saga", "retry", ORDER_ID, "--data-dir", str(tmp_path)])

    assert code == 1
    assert "no dev stack is running" in capsys.readouterr().err


def test_state_file_of_an_exited_stack_is_reported(
    tmp_path: Path,
    moto: moto_server.MotoServer,
    saga_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    exited = find_unused_pid()
    write_state(tmp_path, moto, saga_queue, exited)

    code = main(["saga", "retry", ORDER_ID, "--data-dir", str(tmp_path)])

    assert code == 1
    assert f"process {exited}, which has exited" in capsys.readouterr().err


def test_order_id_must_be_a_uuid(
    tmp_path: Path,
    moto: moto_server.MotoServer,
    saga_queue: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_state(tmp_path, moto, saga_queue, os.getpid())

    code = main(["saga", "retry", "order-1", "--data-dir", str(tmp_path)])

    assert code == 1
    assert "'order-1' is not an order id" in capsys.readouterr().err
    assert received(moto, saga_queue) == []


def test_queue_url_must_be_an_sqs_url(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["saga", "retry", ORDER_ID, "--queue-url", "http://127.0.0.1:1/queue"])

    assert code == 1
    assert "is not an SQS queue URL" in capsys.readouterr().err


def test_state_file_removed_by_owner_only(
    tmp_path: Path, moto: moto_server.MotoServer, saga_queue: str
) -> None:
    write_state(tmp_path, moto, saga_queue, os.getpid())
    path = tmp_path / dev_state.STATE_FILE_NAME

    dev_state.remove(path, os.getpid() + 1)
    exists_after_other_stack = path.exists()
    dev_state.remove(path, os.getpid())

    assert exists_after_other_stack
    assert not path.exists()


def find_unused_pid() -> int:
    for pid in range(4_000_000, 3_000_000, -1):
        if not Path(f"/proc/{pid}").exists():
            return pid
    raise AssertionError("no unused process id found")
