"""A campaign job runs on a Ray head whose Python has Ray and nothing of eochain.

The head runs from a bare virtualenv (``.services/ray-bare-venv``: Ray at the
client's version, made once with pip, git-ignored). ``eochain submit
--install wheel`` builds this checkout's wheel, ships it with
``constraints.txt`` and the campaign's relative STAC file in the job's
working directory, and the job's ``pip`` environment installs it with its
pinned dependencies. The job plans the campaign (reading the STAC file by
its relative path) and reports where ``scheduler`` and ``prometheus_client``
came from: the job's environment, not the checkout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import job_server_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BARE = REPO / ".services" / "ray-bare-venv"


def _bare_python() -> Path:
    """The bare venv's Python, made on first use (Ray at the client's version, no eochain)."""
    import ray

    python = BARE / "bin" / "python"
    if (BARE / "bin" / "ray").exists():  # written last by pip: the venv is complete
        return python
    shutil.rmtree(BARE, ignore_errors=True)
    base = Path(sys.base_prefix) / "bin" / "python3"
    made = subprocess.run(
        f"{base} -m venv {BARE} && {BARE}/bin/pip install -q -c {REPO}/constraints.txt "
        f"'ray[default]=={ray.__version__}'", shell=True, capture_output=True, text=True,
        timeout=900, check=False)
    if made.returncode != 0:
        shutil.rmtree(BARE, ignore_errors=True)
        pytest.skip(f"cannot make the bare Ray venv (no package index?): {made.stderr[-500:]}")
    return python


def _env(token: str) -> dict[str, str]:
    """This process's environment with Ray's token authentication and nothing else of Ray's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "PYTHON"))}
    return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}


@pytest.fixture(scope="module")
def bare_head() -> Iterator[tuple[str, str]]:
    """The job server address of a head running from the bare venv, and its token."""
    python = _bare_python()
    lacks = subprocess.run([str(python), "-c", "import scheduler"], capture_output=True,
                           cwd="/", check=False)
    assert lacks.returncode != 0, "the bare venv must not import eochain"
    token = secrets.token_hex(16)
    env = _env(token)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    with job_server_head(python.parent / "ray", env, token, timeout_s=120) as address:
        yield address, token


def test_a_job_installs_eochain_where_the_workers_lack_it(bare_head: tuple[str, str],
                                                          tmp_path: Path) -> None:
    address, token = bare_head
    (tmp_path / "stac").mkdir()
    (tmp_path / "stac" / "items.json").write_text(json.dumps({
        "type": "FeatureCollection", "features": [{
            "type": "Feature", "id": f"s{k}", "bbox": [5.0 + k / 10, 44.0, 5.1 + k / 10, 44.1],
            "properties": {"proj:shape": [20000, 20000], "datetime": "2024-06-01T10:00:00Z"},
            "assets": {"image": {"href": f"s3://raw/s{k}.tif"}}} for k in range(2)]}))
    campaign = tmp_path / "campaign.yaml"
    campaign.write_text(yaml.safe_dump({
        "name": "bare-worker", "inputs": {"stac": "stac/items.json"},
        "products": {"ortho": {"gsd_m": 0.5}}, "data": {"region": "eu-west-3"},
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"]}}))
    probe = ("python -m scheduler.cli.main plan campaign.yaml --runs 0 --out planned && "
             "python -c \"import json, scheduler, prometheus_client; "
             "print('eochain-from', scheduler.__file__); "
             "p = json.load(open('planned/plan.json')); "
             "print('planned', p['campaign'], p['dag']['tasks'] > 0)\"")
    env = _env(token)
    code = "from scheduler.cli.jobs import submit_cmd as c; c(prog_name='eochain submit')"
    submitted = subprocess.run(
        [sys.executable, "-c", code, str(campaign), "--address", address, "--install",
         "wheel", "--entrypoint", probe, "--job-id", "bare-1", "--wait", "--timeout", "120"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500, check=False)
    logs = subprocess.run(
        [sys.executable, "-c", "from scheduler.cli.jobs import logs_cmd as c; c()", "bare-1",
         "--address", address], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False).stdout
    assert submitted.returncode == 0, submitted.stderr[-3000:] + logs[-3000:]
    origin = next(line for line in logs.splitlines() if line.startswith("eochain-from"))
    assert str(REPO) not in origin and "site-packages/scheduler" in origin, origin
    assert "planned bare-worker True" in logs, logs[-2000:]
