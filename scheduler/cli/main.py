"""The ``eochain`` command line.

Sub-commands live in their own modules and are imported only when invoked,
so ``eochain --help`` stays fast and a broken optional dependency of one
command cannot take the others down.

No user error ends in a traceback. The group runs every sub-command under
:func:`classify`: an error of one of the project's roots (planner, ops,
runtime, cloud) or a ``ValueError``/``OSError`` (a bad file, a bad value, a
missing folder) is a user error: exit 1 with its message, cut to
:data:`MAX_MESSAGE_CHARS`. Anything else is an internal error (exit
:data:`INTERNAL_EXIT`): the message says it is a bug and where to report it,
and the traceback goes to a log file under :func:`log_dir` whose path is
printed.
"""

from __future__ import annotations

import datetime as dt
import gc
import importlib
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import click

#: Exit status of an internal error (EX_SOFTWARE): not the user's fault.
INTERNAL_EXIT = 70
#: Longest user-error message printed, in characters.
MAX_MESSAGE_CHARS = 2000
REPORT_TO = "the eochain issue tracker (the repository's Issues page)"
_LONG_WORD = re.compile(r"\S{240,}")

#: name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "cluster-config": "scheduler.cli.cluster:cluster_config",
    "demo": "scheduler.cli.demo:demo",
    "jobs": "scheduler.cli.jobs:jobs_group",
    "logs": "scheduler.cli.jobs:logs_cmd",
    "dsm": "scheduler.cli.dsm:dsm",
    "ortho": "scheduler.cli.ortho:ortho",
    "plan": "scheduler.cli.plan:plan",
    "run": "scheduler.cli.run:run",
    "status": "scheduler.cli.jobs:status_cmd",
    "stop": "scheduler.cli.jobs:stop_cmd",
    "submit": "scheduler.cli.jobs:submit_cmd",
}

HELP = {
    "cluster-config": "Render a Ray cluster launcher YAML for AWS from plan.json + Terraform outputs.",
    "jobs": "List the campaign jobs of a cluster (`eochain jobs list`).",
    "logs": "Print the logs of a submitted campaign job.",
    "status": "Show the status of a submitted campaign job.",
    "stop": "Stop a submitted campaign job.",
    "submit": "Submit a campaign as a Ray job to a cluster's job server.",
    "demo": "Run the sample campaign end to end on an embedded synthetic scene.",
    "dsm": "Turn a stereo pair (RPC + DEM) into a digital surface model (COG).",
    "ortho": "Orthorectify one raw scene (RPC + DEM) into a Cloud-Optimized GeoTIFF.",
    "plan": "Plan a campaign: fleet, cost, makespan, Pareto frontier, plan.json.",
    "run": "Run a campaign on a Ray cluster, with progress, summary and manifest.",
}


def _version() -> str:
    # only --version and an internal error's log read the distribution's metadata (2-3 ms)
    from importlib import metadata

    try:
        return metadata.version("eochain")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: click's version_option, with the version looked up only when asked."""
    if value and not ctx.resilient_parsing:
        click.echo(f"eochain, version {_version()}")
        ctx.exit()


def log_dir() -> Path:
    """Where internal-error logs go: $EOCHAIN_LOG_DIR, else $XDG_STATE_HOME/eochain/logs."""
    if os.environ.get("EOCHAIN_LOG_DIR"):
        return Path(os.environ["EOCHAIN_LOG_DIR"])
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eochain" / "logs"


def _user_error_types() -> tuple[type[BaseException], ...]:
    from ops.errors import OpsError
    from planner.errors import PlannerError
    from scheduler.errors import SchedulerError

    return (PlannerError, OpsError, SchedulerError, ValueError, OSError)


class InternalError(click.ClickException):
    """An unexpected exception: a bug, reported with the path of its traceback log."""

    exit_code = INTERNAL_EXIT


def _write_log(exc: BaseException, argv: list[str]) -> Path | None:
    text = (f"eochain {_version()} {' '.join(argv)}\n"
            + "".join(traceback.format_exception(exc)))
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"eochain-{stamp}-{os.getpid()}.log"
    for folder in (log_dir(), Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text)
            return path
        except OSError:
            continue
    return None


def _short(message: str) -> str:
    """``message`` with every very long word cut (a pasted value), at most MAX_MESSAGE_CHARS."""
    message = _LONG_WORD.sub(lambda m: f"{m.group()[:60]}...({len(m.group())} chars)",
                             message.strip()) or "(no message)"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    return message


def classify(exc: Exception, argv: list[str]) -> click.ClickException:
    """The click exception to exit with for ``exc`` (module docstring)."""
    if isinstance(exc, _user_error_types()):
        text = str(exc)
        if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
            text = f"{exc.filename}: {text}"
        return click.ClickException(_short(text))
    log = _write_log(exc, argv)
    where = f"the traceback is in {log}" if log else "no log could be written"
    return InternalError(
        f"internal error ({type(exc).__name__}: {_short(str(exc))[:200]}); this is a bug in "
        f"eochain, not in your input: please report it to {REPORT_TO} with the command "
        f"line; {where}")


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use, run under :func:`classify`."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as exc:
            if _short(exc.message) == exc.message:
                raise
            raise click.UsageError(_short(exc.format_message()), exc.ctx) from exc
        except click.exceptions.ClickException as exc:
            if _short(exc.message) == exc.message:
                raise
            raise click.ClickException(_short(exc.format_message())) from exc
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            raise classify(exc, sys.argv[1:]) from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        # The import's objects (numba, rasterio, ...) live as long as the process: no
        # cyclic collection walks them while they load.
        gc.disable()
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name)
        finally:
            gc.enable()
        command = getattr(module, attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str) -> click.Command:
    @click.command(name=name, help=HELP.get(name, ""))
    def missing() -> None:
        raise click.ClickException(f"'eochain {name}' is not available in this build")

    return missing


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")
def cli() -> None:
    """eochain: cost-aware batch processing of Earth-observation imagery.

    Plan a campaign of orthoimages and DSMs over spot and on-demand cloud
    instances, run it tile by tile on Ray, and watch its cost.
    """


def main() -> None:
    try:
        cli(prog_name="eochain")
    finally:
        # The process ends here: the collection at interpreter exit would walk every
        # object left (0.1-0.3 s after numba has loaded) only to free what the OS frees.
        gc.freeze()


if __name__ == "__main__":
    main()
