"""Campaigns as Ray jobs: submit, follow, stop (Ray's ``JobSubmissionClient``).

``submit`` stages the campaign file (and ``plan.json`` when given) in a
small working directory, ships the project's packages (``planner``, ``ops``,
``scheduler``) as ``py_modules`` of the job's runtime environment, and runs
``python -m scheduler.cli run campaign.yaml --address auto ...`` on the
cluster. The job's metadata names the campaign and the eochain version.

Security: the runtime environment and the metadata are stored by Ray and
shown by its dashboard, so no credential may enter them. Nodes take AWS
credentials from their instance profile; :func:`check_no_credentials` refuses
an environment variable whose name or value looks like a secret, and nothing
is copied from the submitting shell's environment. Ray's own token
(``RAY_AUTH_TOKEN``, with ``RAY_AUTH_MODE=token``) is read by Ray's client
from the environment and sent as a header, never stored with the job.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from scheduler.cloud.errors import JobSubmissionError

PACKAGES = ("planner", "ops", "scheduler")
REPO = Path(__file__).resolve().parents[1]
EXCLUDES = ["__pycache__", "*.pyc", "*.nbi", "*.nbc", ".mypy_cache", ".pytest_cache"]

_SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE_KEY|ACCESS_KEY|"
                          r"SESSION_KEY|API_KEY)", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")  # AWS access key ids


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What ``submit`` sends: entrypoint, runtime environment, metadata."""

    submission_id: str | None
    entrypoint: str
    runtime_env: Mapping[str, Any]
    metadata: Mapping[str, str]
    staging_dir: Path


@dataclass(frozen=True, slots=True)
class JobState:
    submission_id: str
    status: str
    message: str
    entrypoint: str
    start_time_ms: int | None
    end_time_ms: int | None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")


def _version() -> str:
    try:
        return metadata.version("eochain")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def check_no_credentials(env_vars: Mapping[str, str], where: str = "--env") -> None:
    """Raise when a variable's name or value looks like a credential."""
    for name, value in env_vars.items():
        if _SECRET_NAME.search(name) or (name.startswith("AWS_")
                                         and name not in ("AWS_DEFAULT_REGION", "AWS_REGION")):
            raise JobSubmissionError(
                f"{where}: {name} looks like a credential and would be stored in the job's "
                "runtime environment; nodes take AWS credentials from their instance profile")
        if _SECRET_VALUE.search(value):
            raise JobSubmissionError(
                f"{where}: the value of {name} contains an AWS access key id; credentials "
                "must not travel with the job")


def build_job(campaign_path: Path, *, plan_path: Path | None = None,
              run_args: Sequence[str] = (), env_vars: Mapping[str, str] | None = None,
              submission_id: str | None = None, entrypoint: str | None = None) -> JobSpec:
    """Stage the campaign and describe the job (no network)."""
    try:
        doc = yaml.safe_load(campaign_path.read_text())
    except OSError as exc:
        raise JobSubmissionError(f"campaign {str(campaign_path)!r} cannot be read: {exc}"
                                 ) from exc
    except yaml.YAMLError as exc:
        raise JobSubmissionError(f"campaign {str(campaign_path)!r} is not YAML: {exc}") from exc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("name"), str):
        raise JobSubmissionError(
            f"campaign {str(campaign_path)!r}: expected a mapping with a 'name' string")
    env = dict(env_vars or {})
    check_no_credentials(env)
    staging = Path(tempfile.mkdtemp(prefix="eochain-job-"))
    shutil.copy(campaign_path, staging / "campaign.yaml")
    args = ["campaign.yaml", "--address", "auto"]
    if plan_path is not None:
        if not plan_path.is_file():
            raise JobSubmissionError(f"--plan {str(plan_path)!r} is not a file")
        shutil.copy(plan_path, staging / "plan.json")
        args += ["--plan", "plan.json"]
    command = entrypoint or " ".join(["python", "-m", "scheduler.cli", "run", *args,
                                      *(shlex.quote(a) for a in run_args)])
    runtime_env: dict[str, Any] = {
        "working_dir": str(staging),
        "py_modules": [str(REPO / p) for p in PACKAGES],
        "excludes": list(EXCLUDES),
        "env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env},
    }
    meta = {"eochain_campaign": str(doc["name"]), "eochain_version": _version(),
            "submitted_by": "eochain submit"}
    return JobSpec(submission_id, command, runtime_env, meta, staging)


def connect(address: str) -> Any:
    """A ``JobSubmissionClient`` for ``address``; an unreachable head is a clear error."""
    if not re.match(r"^(https?|ray)://", address):
        raise JobSubmissionError(
            f"--address {address!r}: expected http://HOST:8265 (the head's dashboard address)")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or requests' errors
        raise JobSubmissionError(
            f"cannot reach the Ray job server at {address}: {_first_line(exc)}; is the head "
            "up and its dashboard reachable (`ray dashboard cluster.yaml` tunnels to it)? With "
            "token authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN as on the head"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def submit(client: Any, spec: JobSpec) -> str:
    try:
        job_id: str = client.submit_job(entrypoint=spec.entrypoint,
                                        runtime_env=dict(spec.runtime_env),
                                        metadata=dict(spec.metadata),
                                        submission_id=spec.submission_id)
    except Exception as exc:
        raise JobSubmissionError(f"submitting campaign {spec.metadata['eochain_campaign']!r} "
                                 f"failed: {_first_line(exc)}") from exc
    finally:
        shutil.rmtree(spec.staging_dir, ignore_errors=True)
    return job_id


def _call(what: str, job_id: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        msg = _first_line(exc)
        if "does not exist" in msg or "404" in msg or "not found" in msg.lower():
            raise JobSubmissionError(f"job {job_id!r} not found: {msg}") from exc
        raise JobSubmissionError(f"{what} of job {job_id!r} failed: {msg}") from exc


def job_state(client: Any, job_id: str) -> JobState:
    info = _call("status", job_id, lambda: client.get_job_info(job_id))
    return JobState(str(info.submission_id or job_id), str(info.status.value),
                    str(info.message or ""), str(info.entrypoint),
                    info.start_time, info.end_time, dict(info.metadata or {}))


def job_logs(client: Any, job_id: str) -> str:
    return str(_call("logs", job_id, lambda: client.get_job_logs(job_id)))


def follow_logs(client: Any, job_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's logs until it ends."""
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    _call("logs", job_id, lambda: asyncio.run(tail()))


def stop_job(client: Any, job_id: str) -> bool:
    """Ask Ray to stop the job; False when it had already ended."""
    return bool(_call("stop", job_id, lambda: client.stop_job(job_id)))
