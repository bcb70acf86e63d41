"""``eochain submit|status|logs|stop``: a campaign as a Ray job on a (remote) cluster.

    eochain submit campaign.yaml --address http://127.0.0.1:8265 --plan plan.json -- --dem s3://...
    eochain status JOB_ID; eochain logs JOB_ID --follow; eochain stop JOB_ID
    eochain jobs list

``--address`` defaults to ``$EOCHAIN_RAY_ADDRESS``, ``$RAY_API_SERVER_ADDRESS``,
an http(s) ``$RAY_ADDRESS``, else http://127.0.0.1:8265 (the head's dashboard,
bound to 127.0.0.1, reached through an SSM port forward or ``ray dashboard``).
Every call to the job server gives up after ``--timeout`` seconds.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from scheduler.cloud.errors import CloudError
from scheduler.cloud.jobs import (
    CALL_TIMEOUT_S,
    build_job,
    connect,
    follow_logs,
    job_logs,
    job_server_address,
    job_state,
    list_jobs,
    stop_job,
    submit,
)

REPO = Path(__file__).resolve().parents[2]


def _address_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1, max=3600),
                      default=CALL_TIMEOUT_S, show_default=True,
                      help="Seconds any one call to the job server may take.")(fn)
    return click.option("--address", default=None,
                        help="Ray job server (the head's dashboard); default: "
                        "$EOCHAIN_RAY_ADDRESS, $RAY_API_SERVER_ADDRESS, an http $RAY_ADDRESS, "
                        "else http://127.0.0.1:8265.")(fn)


ADDRESS = _address_options


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _env_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r}, expected NAME=VALUE", param_hint="--env")
        out[name] = value
    return out


@click.command(name="submit", context_settings={"ignore_unknown_options": True})
@click.argument("campaign_path", metavar="CAMPAIGN",
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
@ADDRESS
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="plan.json to run the campaign with.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE",
              help="Environment variable for the job (never credentials).")
@click.option("--job-id", default=None, help="Submission id (default: Ray picks one).")
@click.option("--entrypoint", default=None,
              help="Run this command instead of `eochain run` (for checks and debugging).")
@click.option("--wait/--no-wait", default=False, help="Wait for the job to end; exit 1 unless it "
              "succeeded.")
@click.option("--install", type=click.Choice(["modules", "wheel"]), default="modules",
              show_default=True,
              help="modules: ship this checkout's packages (nodes set up by cluster-config have "
              "their dependencies); wheel: install this checkout's wheel with its pinned "
              "dependencies in the job's environment (nodes without eochain).")
@click.option("--wheel", "wheel_path", default=None,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --install wheel: this wheel instead of one built from the checkout.")
def submit_cmd(campaign_path: Path, run_args: tuple[str, ...], address: str | None,
               timeout_s: float, plan_path: Path | None, env: tuple[str, ...],
               job_id: str | None, entrypoint: str | None, wait: bool, install: str,
               wheel_path: Path | None) -> None:
    """Submit CAMPAIGN as a Ray job; RUN_ARGS go to `eochain run` (e.g. --dem, --out)."""
    address = address or job_server_address()
    try:
        with tempfile.TemporaryDirectory(prefix="eochain-dist-") as dist:
            bundle = None
            if install == "wheel":
                from scheduler.cloud.bundle import build_bundle, bundle_from_wheel

                bundle = (bundle_from_wheel(wheel_path, REPO / "constraints.txt", Path(dist))
                          if wheel_path else build_bundle(REPO, Path(dist)))
            spec = build_job(campaign_path, plan_path=plan_path, run_args=run_args,
                             env_vars=_env_pairs(env), submission_id=job_id,
                             entrypoint=entrypoint, bundle=bundle)
            client = connect(address, timeout_s)
            submitted = submit(client, spec, timeout_s)
        click.echo(submitted)
        if wait:
            while not (state := job_state(client, submitted)).terminal:
                time.sleep(1.0)
            click.echo(f"{submitted}: {state.status} {state.message}", err=True)
            if state.status != "SUCCEEDED":
                raise SystemExit(1)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="status")
@click.argument("job_id")
@ADDRESS
def status_cmd(job_id: str, address: str | None, timeout_s: float) -> None:
    """Show a job's status, times and campaign."""
    try:
        state = job_state(connect(address or job_server_address(), timeout_s), job_id)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"job        {state.submission_id}\n"
               f"status     {state.status}\n"
               f"message    {state.message}\n"
               f"campaign   {state.metadata.get('eochain_campaign', '-')}\n"
               f"started    {_when(state.start_time_ms)}\n"
               f"ended      {_when(state.end_time_ms)}\n"
               f"entrypoint {state.entrypoint}")


@click.command(name="logs")
@click.argument("job_id")
@ADDRESS
@click.option("-f", "--follow", is_flag=True, help="Stream until the job ends.")
def logs_cmd(job_id: str, address: str | None, timeout_s: float, follow: bool) -> None:
    """Print a job's logs."""
    try:
        client = connect(address or job_server_address(), timeout_s)
        if follow:
            follow_logs(client, job_id, lambda chunk: click.echo(chunk, nl=False))
        else:
            click.echo(job_logs(client, job_id), nl=False)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="stop")
@click.argument("job_id")
@ADDRESS
def stop_cmd(job_id: str, address: str | None, timeout_s: float) -> None:
    """Stop a running job."""
    try:
        stopped = stop_job(connect(address or job_server_address(), timeout_s), job_id)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{job_id}: {'stop requested' if stopped else 'already ended'}")


@click.group(name="jobs")
def jobs_group() -> None:
    """Campaign jobs on a cluster's job server."""


@jobs_group.command(name="list")
@ADDRESS
def list_cmd(address: str | None, timeout_s: float) -> None:
    """List the jobs of the cluster, newest first: id, status, campaign, start time."""
    try:
        states = list_jobs(connect(address or job_server_address(), timeout_s), timeout_s)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{'JOB':<28} {'STATUS':<10} {'CAMPAIGN':<24} STARTED")
    for s in states:
        click.echo(f"{s.submission_id:<28} {s.status:<10} "
                   f"{s.metadata.get('eochain_campaign', '-'):<24} {_when(s.start_time_ms)}")
