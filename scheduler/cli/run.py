"""``eochain run CAMPAIGN``: run a campaign's products on Ray, depth-first, resumably.

The scenes come from the campaign file (each needs a ``uri``, relative paths
are taken from the campaign file's folder); a DSM per ``inputs.pairs`` entry
when ``products.dsm`` is asked, an ortho per scene when ``products.ortho``
is, at their ``gsd_m``; ``--dem`` is the ortho's DEM and stereo's initial one;
``--heights`` the DSMs' vertical reference (``geoid``: EGM96 heights, with ``--geoid``).
Products go to ``--out`` (a folder or ``s3://bucket/prefix``). A progress bar shows tiles done/total, throughput,
ETA and the cost so far (the run's ledger: node-seconds of the nodes that ran
x their price, at the prices of ``--plan plan.json``; the metrics and the
cost report show the same figure); a summary follows:
products written, already done (manifest), failures by scene with the reason, and cost. The exit
status is 1 when some product failed, 0 otherwise. Running the same command
again after an interruption recomputes only the products the manifest lacks
or that fail verification (:mod:`scheduler.products.manifest`); two commands
on the same ``--out`` share the work through product leases. ``--out``,
``--dem`` and ``--geoid`` are checked (writable, present) before Ray starts;
``--address`` of a cluster that does not answer fails within seconds;
SIGTERM and Ctrl-C stop the local Ray processes the command started.

The run enacts the plan. With ``--plan``, each stage's tasks (stereo, dsm,
fusion, ortho, with their products' plan and writer tasks) run on the node
types the plan's fleet entries place that stage on (their ``tasks``), see
:func:`plan_placement` and :mod:`scheduler.runtime.placement`; the plan's
fleet is asked of Ray's autoscaler, per (type, market) following the tasks
left of every stage placed there, and a spot pool that keeps being
interrupted is replaced, for the stages it carried, by the plan's fallback
(:mod:`scheduler.fleet.autoscaling`). ``--replan`` lets the live re-planner
(:mod:`scheduler.fleet.replanning`) change that request from the task
times measured. Without ``--plan`` the run plans for the cluster it has:
the nodes there are its fleet (nothing is asked of an autoscaler), every
stage may run on every node, and nodes cost 0 in the ledger (no prices).

While it runs, the campaign's Prometheus metrics are served on 127.0.0.1
(``--metrics-port``, 0 picks a free port; the URL is printed): tasks by
operation and state, durations by operation and instance type, tiles
remaining, nodes, cost and projections (:mod:`scheduler.observe.metrics`). At the
end a cost report (planned vs actual per instance type and stage) is printed
and written next to the outputs when ``--out`` is a folder
(``cost-report.txt``, ``cost-report.png``, ``cost-ledger.json``; in the
current folder for an ``s3://`` destination).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from planner.calibration import load_calibration
from planner.campaign import Campaign, campaign_name
from planner.catalog import load_catalog
from planner.errors import PlanError, PlannerError
from planner.plan_document import PlanDocument, read_plan
from scheduler.cli.guards import allow_large_option
from scheduler.cli.output_path import check_input_exists
from scheduler.cli.progress import run_with_progress, summary
from scheduler.cli.scene_survey import load_surveyed_campaign
from scheduler.cloud.errors import ClusterConfigError
from scheduler.errors import SchedulerError
from scheduler.fleet.autoscaling import fleet_bundles
from scheduler.fleet.replanning import LiveReplanner
from scheduler.observe.errors import MetricsError
from scheduler.observe.metrics import PlanTargets
from scheduler.observe.metrics_hooks import observe_campaign, prices_from_plan
from scheduler.products import kernels
from scheduler.products.driver import Driver
from scheduler.products.flow import Flow, SceneInput
from scheduler.products.store import open_store
from scheduler.products.survey import SURVEY_TIMEOUT_S
from scheduler.ray_private import use_loopback
from scheduler.runtime.dispatch import DispatchOptions

__all__ = ["metrics_plan", "plan_placement", "run", "summary"]


def plan_placement(plan: PlanDocument) -> dict[str, tuple[str, ...]]:
    """Stage -> the Ray resources (``"type:market"``) of the fleet entries placing tasks of it."""
    placement: dict[str, set[str]] = {}
    for e in plan.fleet:
        for stage, n in e.tasks.items():
            if n > 0 and e.instances > 0:
                placement.setdefault(stage, set()).add(f"{e.instance_type}:{e.market}")
    return {stage: tuple(sorted(tags)) for stage, tags in sorted(placement.items())}


def metrics_plan(plan: PlanDocument | None) -> PlanDocument | None:
    """The plan when it has what metrics and the cost report need, else ``None``.

    That is ``total_cost_usd``, ``makespan_s``, ``deadline_s`` and a fleet whose
    entries name ``instance_type``, ``market`` and ``price_usd_per_h``
    (``eochain plan`` writes all of them); a partial plan (typed by hand) runs
    without plan targets and prices, its nodes then cost 0 in the ledger.
    """
    if plan is None:
        return None
    try:
        PlanTargets.from_plan(plan)
        prices_from_plan(plan)
    except PlanError:
        return None
    return plan


def say_err(message: str) -> None:
    """The run's messages (fleet, fallback, re-plans) on standard error."""
    click.echo(message, err=True)


def stop_on_sigterm() -> None:
    """Exit on SIGTERM as on Ctrl-C: the exit handlers run, and Ray's shuts down the
    local Ray processes this command started (GCS, raylet, their agents)."""
    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def campaign_flow(campaign: Campaign, campaign_path: Path, driver: Driver, *, dem: str,
                  geoid: str | None, tile_px: int | None, dest: str | None,
                  placement: Mapping[str, tuple[str, ...]], heights: str = "ellipsoid") -> Flow:
    """The flow of a campaign file: a DSM per stereo pair and per group of three or more
    views (``products.dsm.views``), and an ortho per scene, as asked,
    each stage's tasks on the resources ``placement`` gives it (none: anywhere)."""
    missing = [s.id for s in campaign.scenes if not s.uri]
    if missing:
        raise click.ClickException(
            f"{campaign_path}: scenes {missing[:5]} have no 'uri'; `eochain run` needs the "
            "image of every scene (inputs.scenes[].uri)"
        )
    ortho, dsm = campaign.product("ortho"), campaign.product("dsm")
    stereo = bool(campaign.pairs or campaign.view_groups)
    if ortho is None and (dsm is None or not stereo):
        raise click.ClickException(
            f"{campaign_path}: nothing to run; expected products.ortho, or products.dsm with "
            "inputs.pairs or products.dsm.views"
        )
    base = campaign_path.parent
    scenes = [
        SceneInput(s.id, s.uri if "://" in s.uri or Path(s.uri).is_absolute()
                   else str((base / s.uri).resolve()))
        for s in campaign.scenes
    ]
    tile = tile_px or campaign.tiling.tile_px
    flow = driver.get_flow(scenes).place(placement)
    if dsm is not None and stereo:
        flow = flow.dsm([(p.left, p.right) for p in campaign.pairs], dem=dem, geoid=geoid,
                        gsd_m=dsm.gsd_m, tile_px=max(tile, 64), heights=heights,
                        views=campaign.view_groups)
    if ortho is not None:
        flow = flow.ortho(dem=dem, geoid=geoid, gsd_m=ortho.gsd_m, tile_px=tile)
    return flow.write(dest or f"{campaign.name}-output")


@click.command(name="run")
@click.argument("campaign_path", metavar="CAMPAIGN", type=click.Path(exists=True, dir_okay=False,
                                                                     path_type=Path))
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="plan.json from `eochain plan`: each stage runs on the types it "
                                "places it on, its fleet is asked of the autoscaler, its prices "
                                "cost the run.")
@click.option("--dem", required=True,
              help="DEM file or folder of tiles (the ortho's heights, stereo's initial DEM).")
@click.option("--geoid", default=None, help="Geoid grid when DEM heights are above the geoid.")
@click.option("--heights", type=click.Choice(["ellipsoid", "geoid"]), default="ellipsoid",
              show_default=True,
              help="Vertical reference of the DSMs' heights (geoid: EGM96, needs --geoid).")
@click.option("--out", "dest", default=None,
              help="Output folder or s3://bucket/prefix (default: ./<campaign name>-output).")
@click.option("--address", default=None, help="Ray cluster address (default: a local Ray).")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="CPUs of the local Ray instance (default: all).")
@click.option("--tile-size", "tile_px", type=click.IntRange(16, 8192), default=None,
              help="Output tile size in pixels (default: the campaign's tiling.tile_px).")
@click.option("--max-inflight-mib", type=click.IntRange(1, 1 << 20), default=1024,
              show_default=True, help="Bound on intermediate bytes in flight.")
@click.option("--object-store-mib", type=click.IntRange(80, 1 << 30), default=None,
              help="Object store of the local Ray this command starts (no --address); default: "
                   "room for --max-inflight-mib (its share OBJECT_STORE_SHARE = 0.7 of the "
                   "store), at most Ray's own default (0.3 of the memory).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the Prometheus exporter on 127.0.0.1 (0: a free port).")
@click.option("--survey-timeout", "survey_timeout_s", type=click.FloatRange(1, 86400),
              default=SURVEY_TIMEOUT_S, show_default=True,
              help="Seconds one scene's survey (header, RPC, DEM reads) may take before it is "
                   "reported as failed and the others go on.")
@click.option("--replan/--no-replan", default=False, show_default=True,
              help="Re-plan the fleet from the task times measured while the run goes on "
                   "(needs --plan).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@allow_large_option
def run(
    campaign_path: Path, plan_path: Path | None, dem: str, geoid: str | None, heights: str,
    dest: str | None,
    address: str | None, workers: int | None, tile_px: int | None, max_inflight_mib: int,
    object_store_mib: int | None,
    metrics_port: int, survey_timeout_s: float, replan: bool, quiet: bool, allow_large: bool,
) -> None:
    """Run CAMPAIGN's DSM and ortho products tile by tile on Ray, resumably."""
    use_loopback()
    check_input_exists(dem, "--dem")
    check_input_exists(geoid, "--geoid")
    if heights == "geoid" and geoid is None:
        raise click.BadParameter("--heights geoid needs --geoid", param_hint="--heights")
    if replan and plan_path is None:
        raise click.UsageError("--replan re-plans the run's plan: give it with --plan plan.json")
    placement: dict[str, tuple[str, ...]] = {}
    plan_doc: PlanDocument | None = None
    fleet_plan: dict[str, Any] | None = None
    if plan_path is not None:
        try:
            plan_doc = read_plan(plan_path)
            fleet_plan = plan_doc.to_dict()  # what the fleet helpers read
            placement = plan_placement(plan_doc)
            # its fleet is asked of the autoscaler during the run: checked now
            fleet_bundles(fleet_plan, source=str(plan_path))
        except (PlanError, ClusterConfigError) as exc:
            raise click.ClickException(str(exc)) from exc
    options = DispatchOptions(max_bytes_in_flight=max_inflight_mib * 2**20)
    if object_store_mib is not None and address is not None:
        raise click.UsageError("--object-store-mib sizes the local Ray this command starts: "
                               "without --address (a cluster's nodes set their own stores)")
    driver = Driver(address=address, num_cpus=workers, options=options, plan=fleet_plan,
                    say=say_err, survey_timeout_s=survey_timeout_s,
                    object_store_bytes=None if object_store_mib is None
                    else object_store_mib * 2**20)
    try:
        name = campaign_name(campaign_path)
        out = dest or f"{name}-output"
        open_store(out).check_writable()  # before Ray starts and any scene is read
        report_dir = Path(".") if "://" in out else Path(out)
        stop_on_sigterm()
        # Ray and the actors start now: the actors import the kernels (every flow's tasks)
        # while this process reads the scenes (its first RPC call sets up numba's typing)
        # and surveys the products, before the metrics (the fleet watcher reads Ray's nodes)
        driver.warm((kernels.__name__,))
        campaign = load_surveyed_campaign(campaign_path, allow_large=allow_large)
        flow = campaign_flow(campaign, campaign_path, driver, dem=dem, geoid=geoid,
                             tile_px=tile_px, dest=dest, placement=placement, heights=heights)
        driver.warm(flow.worker_imports())  # what the flow's tasks load besides (stereo)
        if replan and plan_doc is not None:
            driver.replanner = LiveReplanner.from_plan(
                plan_doc, campaign, load_catalog(), load_calibration(), say=say_err)
    except (PlannerError, SchedulerError, OSError) as exc:
        driver.cool()
        raise click.ClickException(str(exc)) from exc
    try:
        with observe_campaign(name, metrics_plan(plan_doc), port=metrics_port,
                              report_dir=report_dir, echo=click.echo) as obs:
            click.echo(f"metrics: {obs.exporter.url}", err=True)
            driver.metrics = obs.metrics
            try:
                report = run_with_progress(flow, obs.metrics, quiet)
            finally:
                driver.cool()
    except (SchedulerError, MetricsError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not report.ok:
        sys.exit(1)
