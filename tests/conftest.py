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


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1: all are held open until all are chosen,
    so the kernel cannot hand one out twice (one-at-a-time choices can collide, and a Ray
    head whose agent and metrics exporter got the same port dies)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


@contextlib.contextmanager
def job_server_head(ray_cli: Path, env: dict[str, str], token: str, *,
                    timeout_s: float = 90.0) -> Iterator[str]:
    """A one-CPU Ray head started with ``ray_cli`` on free loopback ports; yields its job
    server address once it answers, then stops the whole process group (TERM, then KILL)."""
    dash, gcs, agent, agent_grpc, runtime_env, metrics = free_ports(6)
    temp = tempfile.mkdtemp(prefix="eoj")  # short: Ray's socket paths must stay < 108 chars
    cmd = [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
           f"--port={gcs}", "--num-cpus=1", "--object-store-memory=80000000",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
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
        stop_group(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """TERM, then KILL, the process group of a `ray start` a test launched (Ray's daemons
    stay in the group)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


#: The `ray` command of this venv (the fake_multinode heads are started with it).
RAY_CLI = Path(sys.executable).with_name("ray")


def fake_cluster_env() -> dict[str, str]:
    """Environment of a fake_multinode head and its drivers: no token auth, the fake
    provider, a 1 s autoscaler loop, this checkout importable by the simulated nodes."""
    return dict(os.environ, RAY_AUTH_MODE="disabled", RAY_FAKE_CLUSTER="1",
                AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                         os.environ.get("PYTHONPATH")])))


def _wait_for_gcs(head: subprocess.Popen[bytes], port: int, log: Path,
                  timeout_s: float = 60.0) -> None:
    """Return once the head's GCS accepts connections on ``port``; fail if it exits or times out.

    ``ray start --block`` returns nothing when the head is up, and a driver started at once
    may find the port still closed (the CLI's reachability check then fails at once, as it
    should for a user's wrong address).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}: "
                        f"{log.read_text(errors='replace')[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the Ray head's GCS did not listen on 127.0.0.1:{port} within "
                            f"{timeout_s:g} s: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)


@contextlib.contextmanager
def fake_multinode_head(fleet: Any, prefix: str, env: dict[str, str],
                        **config: Any) -> Iterator[tuple[str, Path]]:
    """A Ray head with no CPU of its own whose autoscaler launches ``fleet``'s node types
    as simulated nodes (Ray's fake_multinode provider; ``config``: options of
    :func:`~scheduler.fleet.cluster_config.render_fake_multinode_config`), on free
    loopback ports. Yields its address and a scratch folder; stops the process group."""
    from scheduler.fleet.cluster_config import render_fake_multinode_config

    if not RAY_CLI.exists():
        pytest.skip(f"ray CLI not found at {RAY_CLI}")
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp = Path(tempfile.mkdtemp(prefix=prefix))  # short: Ray's socket paths stay < 108 chars
    autoscaler = temp / "autoscaler.json"
    autoscaler.write_text(json.dumps(render_fake_multinode_config(fleet, address, **config)))
    log = (temp / "head.log").open("w")
    head = subprocess.Popen(
        [str(RAY_CLI), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=0", "--object-store-memory=80000000",
         "--include-dashboard=false", f"--autoscaling-config={autoscaler}",
         f"--temp-dir={temp / 't'}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_gcs(head, port, temp / "head.log")
        yield address, temp
    finally:
        stop_group(head)
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
