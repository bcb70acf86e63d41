"""``eochain submit|status|logs|stop`` against a real local Ray head with its job server.

The head runs with Ray's token authentication (``RAY_AUTH_MODE=token``) and
its dashboard on 127.0.0.1; every command runs as a user would run it, in a
subprocess whose environment carries the same token.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, job_server_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
AWS_SECRET = "eochain/test/secret/not/for/job/metadata0"
AWS_KEY_ID = "AKIAEOCHAINTEST00000"


@dataclass(frozen=True)
class Head:
    address: str
    token: str

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        # as a user with the virtualenv activated: `python` in entrypoints is the venv's
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token,
                   RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", **extra)
        return env


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    if not RAY.exists():
        pytest.skip(f"ray CLI not found at {RAY}")
    token = secrets.token_hex(16)
    env = Head("", token).env()
    with job_server_head(RAY, env, token) as address:
        yield Head(address, token)


def _eochain(command: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    name = f"eochain jobs {command}" if command == "list" else f"eochain {command}"
    code = f"from scheduler.cli.jobs import {command}_cmd as c; c(prog_name={name!r})"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture
def campaign(tmp_path: Path) -> Path:
    """A valid campaign whose one scene is a relative STAC file's item (shipped with the job)."""
    (tmp_path / "stac").mkdir()
    (tmp_path / "stac" / "items.json").write_text(json.dumps({
        "type": "FeatureCollection", "features": [{
            "type": "Feature", "id": "s1", "bbox": [5.0, 44.0, 5.1, 44.1],
            "properties": {"proj:shape": [1000, 1000]},
            "assets": {"image": {"href": "s3://raw/s1.tif"}}}]}))
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump({"name": "job-test", "inputs": {"stac": "stac/items.json"},
                                    "products": {"ortho": {"gsd_m": 0.5}}}))
    return path


def _job_json(head: Head, job_id: str) -> str:
    req = urllib.request.Request(f"{head.address}/api/jobs/{job_id}",
                                 headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(resp.read().decode())


def _wait_status(head: Head, job_id: str, wanted: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        status = str(json.loads(_job_json(head, job_id))["status"])
        if status in wanted:
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status} after {timeout_s} s, wanted {wanted}")
        time.sleep(0.5)


def test_submit_status_logs(head: Head, campaign: Path) -> None:
    env = head.env(AWS_SECRET_ACCESS_KEY=AWS_SECRET, AWS_ACCESS_KEY_ID=AWS_KEY_ID)
    probe = ("python -c \"import planner.catalog, ops, scheduler.cloud.jobs; "
             "print('eochain-job-ok', open('campaign.yaml').read().count('job-test'), "
             "open('stac/items.json').read().count('s3://raw/s1.tif'))\"")
    result = _eochain("submit", str(campaign), "--address", head.address, "--entrypoint",
                      probe, "--job-id", "eochain-probe-1", "--wait", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "eochain-probe-1"
    status = _eochain("status", "eochain-probe-1", "--address", head.address, env=env)
    assert status.returncode == 0, status.stderr
    assert "SUCCEEDED" in status.stdout and "job-test" in status.stdout
    logs = _eochain("logs", "eochain-probe-1", "--address", head.address, env=env)
    assert "eochain-job-ok 1 1" in logs.stdout  # the relative STAC file travelled
    listed = _eochain("list", "--address", head.address, env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "eochain-probe-1" in line)
    assert "SUCCEEDED" in row and "job-test" in row
    by_ray_address = _eochain("status", "eochain-probe-1", env={**env, "RAY_ADDRESS": head.address})
    assert by_ray_address.returncode == 0 and "SUCCEEDED" in by_ray_address.stdout
    stored = _job_json(head, "eochain-probe-1")
    for secret in (AWS_SECRET, AWS_KEY_ID, head.token):
        assert secret not in stored
    assert json.loads(stored)["metadata"]["eochain_campaign"] == "job-test"


def test_default_entrypoint_runs_eochain_run(head: Head, campaign: Path) -> None:
    result = _eochain("submit", str(campaign), "--address", head.address, "--job-id",
                      "eochain-run-help", "--wait", "--", "--help", env=head.env())
    assert result.returncode == 0, result.stderr
    logs = _eochain("logs", "eochain-run-help", "--address", head.address, "--follow",
                    env=head.env())
    assert "--plan" in logs.stdout and "--dem" in logs.stdout  # `eochain run --help` ran
    info = json.loads(_job_json(head, "eochain-run-help"))
    assert info["entrypoint"].startswith("python -m scheduler.cli.main run campaign.yaml --address auto")


def test_stop_a_running_job(head: Head, campaign: Path) -> None:
    result = _eochain("submit", str(campaign), "--address", head.address, "--entrypoint",
                      "python -c 'import time; time.sleep(600)'", "--job-id", "eochain-long",
                      env=head.env())
    assert result.returncode == 0, result.stderr
    _wait_status(head, "eochain-long", {"RUNNING"})
    stopped = _eochain("stop", "eochain-long", "--address", head.address, env=head.env())
    assert stopped.returncode == 0 and "stop requested" in stopped.stdout
    assert _wait_status(head, "eochain-long", {"STOPPED", "FAILED"}) == "STOPPED"


def test_credentials_are_refused_before_submission(head: Head, campaign: Path) -> None:
    result = _eochain("submit", str(campaign), "--address", head.address,
                      "--env", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", env=head.env())
    assert result.returncode == 1
    assert "AWS_SECRET_ACCESS_KEY looks like a credential" in result.stderr
    assert AWS_SECRET not in result.stderr + result.stdout
    result = _eochain("submit", str(campaign), "--address", head.address,
                      "--env", f"NOTE=key {AWS_KEY_ID}", env=head.env())
    assert result.returncode == 1 and "AWS access key id" in result.stderr


def test_bad_addresses_and_ids(head: Head, campaign: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = _eochain("status", "x", "--address", dead, env=head.env())
    assert result.returncode == 1
    assert f"cannot reach the Ray job server at {dead}" in result.stderr
    result = _eochain("status", "no-such-job", "--address", head.address, env=head.env())
    assert result.returncode == 1 and "no-such-job" in result.stderr
    result = _eochain("submit", str(campaign), "--address", "127.0.0.1:8265", env=head.env())
    assert result.returncode == 1 and "expected http://HOST:8265" in result.stderr


def test_missing_token_is_a_clear_error(head: Head, campaign: Path, tmp_path: Path) -> None:
    env = head.env()
    del env["RAY_AUTH_TOKEN"]
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    result = _eochain("status", "eochain-probe-1", "--address", head.address, env=env)
    assert result.returncode == 1
    assert "RAY_AUTH_TOKEN" in result.stderr
