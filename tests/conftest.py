"""Shared fixtures: where the real sample data lives, and a scratch folder.

The real Pléiades crops, DEMs and RPC fixtures are never copied into the
repository: they are read from ``$EOCHAIN_SHARED_DATA`` or ``../shared/data``
beside the checkout, and tests that need them skip with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parents[1]

# Property tests judge correctness, not speed: no per-example deadline (timing lives in
# benchmarks/), and a fixed example budget so the suite's length stays predictable.
settings.register_profile("eochain", deadline=None, max_examples=60, print_blob=True)
settings.load_profile("eochain")


def shared_data_dir() -> Path | None:
    """The shared sample-data folder, or None when this machine has none."""
    env = os.environ.get("EOCHAIN_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real sample data folder; skips the test with the reason where absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real sample data not found: set EOCHAIN_SHARED_DATA or place it at "
            f"{REPO.parent / 'shared' / 'data'}"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll_until(what: str, fn: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    """``fn()`` until it returns something truthy, or fail naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last!r}")


@dataclass(frozen=True)
class PrometheusApi:
    """A real Prometheus's HTTP API at ``url``: raw GETs and instant queries."""

    url: str

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
                doc = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: HTTP {exc.code} {exc.read()!r}") from exc
        if doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: {doc}")
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/v1/query", query=expr)["result"]
        return result


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (never a service's default)."""
    return _free_port()


@contextlib.contextmanager
def job_server_head(ray_cli: Path, env: dict[str, str], token: str, *,
                    timeout_s: float = 90.0) -> Iterator[str]:
    """A one-CPU Ray head started with ``ray_cli`` on free loopback ports; yields its job
    server address once it answers, then stops the whole process group (TERM, then KILL)."""
    dash = free_port()
    temp = tempfile.mkdtemp(prefix="eoj")  # short: Ray's socket paths must stay < 108 chars
    cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={free_port()}", "--num-cpus=1", "--object-store-memory=80000000",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--dashboard-agent-listen-port={free_port()}",
           f"--dashboard-agent-grpc-port={free_port()}",
           f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    address = f"http://127.0.0.1:{dash}"
    log = (Path(temp) / "head.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=temp, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            req = urllib.request.Request(f"{address}/api/version",
                                         headers={"Authorization": f"Bearer {token}"})
            try:
                urllib.request.urlopen(req, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Ray head ({ray_cli}) did not serve {address} within "
                                f"{timeout_s:.0f} s; see {temp}/head.log")
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # Ray's daemons left in the group
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def aws_environment(endpoint: str) -> Iterator[None]:
    """boto3's and GDAL's AWS variables pointing at the S3 server ``endpoint`` (restored after).

    Environment variables only: GDAL reads them at each request, and nothing is left in its
    global config for the next test module's server.
    """
    port = int(endpoint.rsplit(":", 1)[1])
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                           "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE",
                           "AWS_S3_ENDPOINT": f"127.0.0.1:{port}"}.items():
            mp.setenv(key, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3/EC2 server over real HTTP on a free 127.0.0.1 port, one per test module.

    ``$EOCHAIN_MOTO_ENDPOINT`` names an already running server instead.
    """
    env = os.environ.get("EOCHAIN_MOTO_ENDPOINT")
    if env:
        yield env
        return
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        pytest.skip(f"moto_server not found at {exe}; install moto[server]")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path_factory.mktemp("moto") / "moto.log").open("w") as log:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"moto_server did not answer on {url} within 30 s")
                    time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)
