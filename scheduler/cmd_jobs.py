"""``eochain submit|status|logs|stop``: a campaign as a Ray job on a (remote) cluster.

    eochain submit campaign.yaml --address http://127.0.0.1:8265 --plan plan.json -- --dem s3://...
    eochain status JOB_ID; eochain logs JOB_ID --follow; eochain stop JOB_ID

``--address`` defaults to ``$EOCHAIN_RAY_ADDRESS`` or http://127.0.0.1:8265 (the
head's dashboard, bound to 127.0.0.1, reached through ``ray dashboard``).
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from scheduler.cloud.errors import CloudError
from scheduler.jobs import build_job, connect, follow_logs, job_logs, job_state, stop_job, submit

ADDRESS = click.option("--address", envvar="EOCHAIN_RAY_ADDRESS",
                       default="http://127.0.0.1:8265", show_default=True,
                       help="Ray job server (the head's dashboard).")


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
def submit_cmd(campaign_path: Path, run_args: tuple[str, ...], address: str,
               plan_path: Path | None, env: tuple[str, ...], job_id: str | None,
               entrypoint: str | None, wait: bool) -> None:
    """Submit CAMPAIGN as a Ray job; RUN_ARGS go to `eochain run` (e.g. --dem, --out)."""
    try:
        spec = build_job(campaign_path, plan_path=plan_path, run_args=run_args,
                         env_vars=_env_pairs(env), submission_id=job_id, entrypoint=entrypoint)
        client = connect(address)
        submitted = submit(client, spec)
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
def status_cmd(job_id: str, address: str) -> None:
    """Show a job's status, times and campaign."""
    try:
        state = job_state(connect(address), job_id)
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
def logs_cmd(job_id: str, address: str, follow: bool) -> None:
    """Print a job's logs."""
    try:
        client = connect(address)
        if follow:
            follow_logs(client, job_id, lambda chunk: click.echo(chunk, nl=False))
        else:
            click.echo(job_logs(client, job_id), nl=False)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command(name="stop")
@click.argument("job_id")
@ADDRESS
def stop_cmd(job_id: str, address: str) -> None:
    """Stop a running job."""
    try:
        stopped = stop_job(connect(address), job_id)
    except CloudError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{job_id}: {'stop requested' if stopped else 'already ended'}")
