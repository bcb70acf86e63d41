"""Campaigns as Ray jobs: submit, follow, stop (Ray's ``JobSubmissionClient``).

``submit`` validates the campaign (as ``eochain plan`` parses it, without
reading images), then stages a small working directory: the campaign file,
``plan.json`` when given, every local file the campaign references by a
relative path (its STAC ItemCollection, the STAC assets and scenes, with
their same-stem sidecars), and the local files named in the run arguments
(``--dem``, ``--geoid``, lists). Relative paths keep their place under the
working directory, so they resolve on the cluster as they did here. The
eochain build travels as a wheel (:mod:`scheduler.cloud.bundle`) that the
job's ``pip`` runtime environment installs under ``constraints.txt`` into a
virtualenv that inherits the node's packages: a node whose Python lacks
eochain (or has another build) runs this one. The entrypoint is ``python
-m scheduler.cli.main run campaign.yaml --address auto ...``; the metadata names
the campaign and the eochain version.

The job server's address is ``--address``, else ``$EOCHAIN_RAY_ADDRESS``,
``$RAY_API_SERVER_ADDRESS`` or an http(s) ``$RAY_ADDRESS`` (Ray's own
variables), else http://127.0.0.1:8265. Every call to the job server is
bounded by ``timeout_s`` (default :data:`CALL_TIMEOUT_S`): a head that
accepts connections and never answers is an error, not a hang.

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
import json
import os
import re
import shlex
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from scheduler.cloud.errors import JobSubmissionError

REPO = Path(__file__).resolve().parents[2]
EXCLUDES = ["__pycache__", "*.pyc", "*.nbi", "*.nbc", ".mypy_cache", ".pytest_cache"]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Where the job server's address is read from, first found wins.
ADDRESS_VARIABLES = ("EOCHAIN_RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
#: Seconds any one call to the job server may take (connect, submit, status, list, stop).
CALL_TIMEOUT_S = 30.0
#: Ray uploads the working directory through its GCS; keep well under its 512 MiB limit.
MAX_STAGED_BYTES = 256 * 2**20
WORKING_DIR_VAR = "${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}"
#: Run options naming where results go: their values are never shipped.
OUTPUT_OPTIONS = ("--out", "-o")

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


def job_server_address(env: Mapping[str, str] | None = None) -> str:
    """The job server: the first of :data:`ADDRESS_VARIABLES` set, else the local default.

    ``RAY_ADDRESS`` also names GCS addresses (``auto``, ``HOST:6379``) that
    are no job server: only an http(s) value of it is taken.
    """
    env = os.environ if env is None else env
    for name in ADDRESS_VARIABLES:
        value = env.get(name, "").strip()
        if value and (name != "RAY_ADDRESS" or re.match(r"^https?://", value)):
            return value
    return DEFAULT_ADDRESS


def _local_relative(value: object) -> str | None:
    """``value`` when it is a relative local path (no URL scheme), else None."""
    if not isinstance(value, str) or not value or "://" in value or value.startswith("/vsi"):
        return None
    return None if Path(value).is_absolute() else value


def referenced_files(doc: Mapping[str, Any], base_dir: Path) -> list[str]:
    """Relative local paths the campaign ``doc`` reads, relative to ``base_dir``.

    The STAC ItemCollection (``inputs.stac``), the hrefs of its items' assets,
    the ``uri`` of listed scenes, and beside every image the files sharing its
    stem (``.geom``, ``.RPB``, ``_rpc.txt`` sidecars). URLs and absolute paths
    are left to the cluster.
    """
    inputs = doc.get("inputs")
    if not isinstance(inputs, Mapping):
        return []
    images: list[str] = []
    out: list[str] = []
    stac = inputs.get("stac")
    href = stac.get("href") if isinstance(stac, Mapping) else stac
    if (rel := _local_relative(href)) is not None:
        out.append(rel)
        try:
            collection = json.loads((base_dir / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            collection = None  # the campaign check reports it
        features = collection.get("features") if isinstance(collection, Mapping) else None
        for item in features if isinstance(features, list) else []:
            assets = item.get("assets") if isinstance(item, Mapping) else None
            for asset in assets.values() if isinstance(assets, Mapping) else []:
                if isinstance(asset, Mapping) and (r := _local_relative(asset.get("href"))):
                    images.append(r)
    scenes = inputs.get("scenes")
    for scene in scenes if isinstance(scenes, list) else []:
        if isinstance(scene, Mapping) and (r := _local_relative(scene.get("uri"))):
            images.append(r)
    for image in images:
        path = base_dir / image
        siblings = sorted(path.parent.glob(glob_escape(path.stem) + "*")) if path.parent.is_dir() \
            else []
        out += [str(Path(image).parent / s.name) for s in siblings if s.is_file()] or [image]
    return list(dict.fromkeys(out))


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _stage(source: Path, staging: Path, rel: str, where: str) -> int:
    """Copy ``source`` to ``staging/rel`` (a file or a folder); the bytes copied."""
    target = (staging / rel).resolve()
    if not target.is_relative_to(staging.resolve()):
        raise JobSubmissionError(
            f"{where} {rel!r} leaves the campaign's folder ('..'); the job's working directory "
            "holds only files below it: move the file there or use s3://")
    if not source.exists():
        raise JobSubmissionError(f"{where} {rel!r}: {str(source)!r} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*EXCLUDES))
        return sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    shutil.copy2(source, target)
    return target.stat().st_size


def validate_campaign(campaign_path: Path) -> Mapping[str, Any]:
    """The campaign document, after the same checks ``eochain plan`` makes (no image read)."""
    from planner.campaign import check_campaign
    from planner.config_loader import load_yaml
    from planner.errors import PlannerError

    try:
        check_campaign(campaign_path)  # scenes by path are read on the cluster, by `run`
        doc = load_yaml(campaign_path, "campaign file")
    except PlannerError as exc:
        raise JobSubmissionError(str(exc)) from exc
    if not isinstance(doc, Mapping):
        raise JobSubmissionError(f"campaign {str(campaign_path)!r}: expected a mapping")
    return doc


def build_job(campaign_path: Path, *, plan_path: Path | None = None,
              run_args: Sequence[str] = (), env_vars: Mapping[str, str] | None = None,
              submission_id: str | None = None, entrypoint: str | None = None,
              bundle: Any = None, cwd: Path | None = None) -> JobSpec:
    """Validate the campaign, stage what it needs and describe the job (no network).

    ``bundle`` (:class:`scheduler.cloud.bundle.Bundle`) is the eochain build
    to install on the cluster; None ships the packages of this checkout as
    ``py_modules`` instead (nodes that already have eochain's dependencies).
    Local files in ``run_args`` are found relative to ``cwd`` (default: the
    current folder).
    """
    doc = validate_campaign(campaign_path)
    env = dict(env_vars or {})
    check_no_credentials(env)
    cwd = cwd or Path.cwd()
    staging = Path(tempfile.mkdtemp(prefix="eochain-job-"))
    try:
        shutil.copy(campaign_path, staging / "campaign.yaml")
        staged = (staging / "campaign.yaml").stat().st_size
        for rel in referenced_files(doc, campaign_path.parent):
            staged += _stage(campaign_path.parent / rel, staging, rel, "campaign file reference")
        args = ["campaign.yaml", "--address", "auto"]
        if plan_path is not None:
            if not plan_path.is_file():
                raise JobSubmissionError(f"--plan {str(plan_path)!r} is not a file")
            staged += _stage(plan_path, staging, "plan.json", "--plan")
            args += ["--plan", "plan.json"]
        for before, arg in zip(("", *run_args), run_args, strict=False):
            local = _local_relative(arg)
            if local is not None and before in OUTPUT_OPTIONS:
                raise JobSubmissionError(
                    f"{before} {arg!r}: a relative output would land in the job's temporary "
                    "working directory on the cluster; give s3://BUCKET/PREFIX (or an absolute "
                    "path every node shares)")
            if local is not None and before not in OUTPUT_OPTIONS \
                    and local not in ("campaign.yaml", "plan.json") and (cwd / local).exists():
                staged += _stage(cwd / local, staging, local, "run argument")
        if staged > MAX_STAGED_BYTES:
            raise JobSubmissionError(
                f"campaign {str(campaign_path)!r}: the files it references locally add up to "
                f"{staged / 2**20:.0f} MiB, more than the {MAX_STAGED_BYTES // 2**20} MiB a job "
                "may carry; put the imagery on s3:// and reference it there")
        runtime_env: dict[str, Any] = {
            "working_dir": str(staging),
            "excludes": list(EXCLUDES),
            "env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **env},
        }
        if bundle is not None:
            wheel = tagged_wheel_name(bundle.folder / bundle.wheel_name)
            shutil.copy2(bundle.folder / bundle.wheel_name, staging / wheel)
            shutil.copy2(bundle.folder / "constraints.txt", staging / "constraints.txt")
            runtime_env["pip"] = {"packages": [
                f"-c {WORKING_DIR_VAR}/constraints.txt",
                f"{WORKING_DIR_VAR}/{wheel}[runtime]"], "pip_check": False}
        else:
            runtime_env["py_modules"] = [str(REPO / p) for p in ("planner", "ops", "scheduler")]
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    command = entrypoint or " ".join(["python", "-m", "scheduler.cli.main", "run", *args,
                                      *(shlex.quote(a) for a in run_args)])
    meta = {"eochain_campaign": str(doc["name"]), "eochain_version": _version(),
            "submitted_by": "eochain submit"}
    return JobSpec(submission_id, command, runtime_env, meta, staging)


def tagged_wheel_name(wheel: Path) -> str:
    """The wheel's file name with a build tag from its content (``1`` + 12 hex digits).

    Ray caches a job's pip environment under a hash of the package strings;
    the tag makes another build of the same version a different string, so
    a node never reuses an environment holding an older build.
    """
    import hashlib

    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()[:12]
    parts = wheel.name.removesuffix(".whl").split("-")
    if len(parts) not in (5, 6):
        raise JobSubmissionError(
            f"wheel {wheel.name!r}: expected NAME-VERSION[-BUILD]-PY-ABI-PLATFORM.whl")
    name, version, *tags = parts
    return "-".join([name, version, f"1{digest}", *tags[-3:]]) + ".whl"


def _bounded(what: str, fn: Callable[[], Any], timeout_s: float) -> Any:
    """``fn()``, or a :class:`JobSubmissionError` once ``timeout_s`` has passed.

    The call runs in a daemon thread: a server that never answers leaves that
    thread blocked, never the command or its exit.
    """
    result: list[Any] = []
    error: list[Exception] = []

    def target() -> None:
        try:
            result.append(fn())
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(exc)

    worker = threading.Thread(target=target, name=f"eochain-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise JobSubmissionError(
            f"{what}: the Ray job server gave no answer within {timeout_s:g} s; is the address "
            "the head's dashboard (port 8265) and is the tunnel to it up?")
    if error:
        raise error[0]
    return result[0] if result else None


def connect(address: str, timeout_s: float = CALL_TIMEOUT_S) -> Any:
    """A ``JobSubmissionClient`` for ``address``; an unreachable head is a clear error."""
    if not re.match(r"^(https?|ray)://", address):
        raise JobSubmissionError(
            f"--address {address!r}: expected http://HOST:8265 (the head's dashboard address)")
    from ray.job_submission import JobSubmissionClient

    try:
        return _bounded(f"connecting to {address}", lambda: JobSubmissionClient(address),
                        timeout_s)
    except JobSubmissionError:
        raise
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or requests' errors
        raise JobSubmissionError(
            f"cannot reach the Ray job server at {address}: {_first_line(exc)}; is the head "
            "up and its dashboard reachable (`ray dashboard cluster.yaml` tunnels to it)? With "
            "token authentication set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN as on the head"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def submit(client: Any, spec: JobSpec, timeout_s: float = CALL_TIMEOUT_S) -> str:
    """Upload the staged folder and submit; the staging folder is removed either way.

    The working directory and wheel upload through the job server: allow
    ``timeout_s`` plus a second per MiB staged.
    """
    staged = sum(f.stat().st_size for f in spec.staging_dir.rglob("*") if f.is_file())
    try:
        job_id: str = _bounded("submit", lambda: client.submit_job(
            entrypoint=spec.entrypoint, runtime_env=dict(spec.runtime_env),
            metadata=dict(spec.metadata), submission_id=spec.submission_id),
            timeout_s + staged / 2**20)
    except JobSubmissionError:
        raise
    except Exception as exc:
        raise JobSubmissionError(f"submitting campaign {spec.metadata['eochain_campaign']!r} "
                                 f"failed: {_first_line(exc)}") from exc
    finally:
        shutil.rmtree(spec.staging_dir, ignore_errors=True)
    return job_id


def _call(what: str, job_id: str, fn: Callable[[], Any],
          timeout_s: float | None = CALL_TIMEOUT_S) -> Any:
    try:
        return fn() if timeout_s is None else _bounded(f"{what} of job {job_id!r}", fn, timeout_s)
    except JobSubmissionError:
        raise
    except Exception as exc:
        msg = _first_line(exc)
        if "does not exist" in msg or "404" in msg or "not found" in msg.lower():
            raise JobSubmissionError(f"job {job_id!r} not found: {msg}") from exc
        raise JobSubmissionError(f"{what} of job {job_id!r} failed: {msg}") from exc


def _state(info: Any, job_id: str | None = None) -> JobState:
    return JobState(str(info.submission_id or job_id or info.job_id), str(info.status.value),
                    str(info.message or ""), str(info.entrypoint),
                    info.start_time, info.end_time, dict(info.metadata or {}))


def job_state(client: Any, job_id: str) -> JobState:
    return _state(_call("status", job_id, lambda: client.get_job_info(job_id)), job_id)


def list_jobs(client: Any, timeout_s: float = CALL_TIMEOUT_S) -> list[JobState]:
    """Every job the server knows, newest first (by start time)."""
    try:
        infos = _bounded("list", client.list_jobs, timeout_s)
    except JobSubmissionError:
        raise
    except Exception as exc:
        raise JobSubmissionError(f"listing jobs failed: {_first_line(exc)}") from exc
    states = [_state(i) for i in infos]
    return sorted(states, key=lambda s: s.start_time_ms or 0, reverse=True)


def job_logs(client: Any, job_id: str) -> str:
    return str(_call("logs", job_id, lambda: client.get_job_logs(job_id)))


def follow_logs(client: Any, job_id: str, write: Callable[[str], None]) -> None:
    """Stream the job's logs until it ends."""
    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    # a stream with no end of its own: only the connection is bounded (see connect)
    _call("logs", job_id, lambda: asyncio.run(tail()), timeout_s=None)


def stop_job(client: Any, job_id: str) -> bool:
    """Ask Ray to stop the job; False when it had already ended."""
    return bool(_call("stop", job_id, lambda: client.stop_job(job_id)))
