"""The ``eochain`` command line.

Sub-commands live in their own modules and are imported only when invoked,
so ``eochain --help`` stays fast and a broken optional dependency of one
command cannot take the others down.
"""

from __future__ import annotations

import importlib
import sys
from importlib import metadata

import click

#: name -> "module:attribute" of a click command.
COMMANDS: dict[str, str] = {
    "cluster-config": "scheduler.cmd_cluster:cluster_config",
    "demo": "scheduler.demo:demo",
    "logs": "scheduler.cmd_jobs:logs_cmd",
    "dsm": "scheduler.cmd_dsm:dsm",
    "ortho": "scheduler.cmd_ortho:ortho",
    "plan": "scheduler.cmd_plan:plan",
    "run": "scheduler.cmd_run:run",
    "status": "scheduler.cmd_jobs:status_cmd",
    "stop": "scheduler.cmd_jobs:stop_cmd",
    "submit": "scheduler.cmd_jobs:submit_cmd",
}

HELP = {
    "cluster-config": "Render a Ray cluster launcher YAML for AWS from plan.json + Terraform outputs.",
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
    try:
        return metadata.version("eochain")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            return _unavailable(cmd_name)
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
@click.version_option(_version(), prog_name="eochain")
def cli() -> None:
    """eochain: cost-aware batch processing of Earth-observation imagery.

    Plan a campaign of orthoimages and DSMs over spot and on-demand cloud
    instances, run it tile by tile on Ray, and watch its cost.
    """


def main() -> None:
    cli(prog_name="eochain")


if __name__ == "__main__":
    sys.exit(main())
