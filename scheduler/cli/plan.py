"""``eochain plan CAMPAIGN``: the fleet, its cost, makespan and risk; Pareto PNG; plan.json.

Thin shell over :func:`planner.planning.plan_campaign`: it loads the
campaign (scenes given by ``uri`` only are read from their files,
:mod:`scheduler.cli.scene_survey`, footprints through ``--dem`` when given), the
price catalog and the calibration, estimates the work
(:mod:`planner.workload`, refused beyond its limits without
``--allow-large``), prints a table (or, with ``--json``, the plan document
for machines), and writes ``plan.json`` and ``pareto.png`` into ``--out``.

The plan of a run is its DAG: when every scene is a local file and ``--dem``
is given, the products are surveyed as ``eochain run`` surveys them (the
same flow, :func:`scheduler.cli.run.campaign_flow`, RPCs and DEM, nothing
written) and the planner costs exactly the tasks the run will dispatch
(:func:`surveyed_graph`); otherwise it costs tasks on grids estimated from
the footprints (:mod:`planner.estimate`), and says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import click
import networkx as nx

from planner.calibration import Calibration, load_calibration
from planner.campaign import DEFAULTS, Campaign
from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.estimate import surveyed_dag
from planner.plan_document import plan_document_from_dict, write_plan
from planner.planning import CampaignPlan, plan_to_dict
from scheduler.cli.guards import NON_NEGATIVE_FINITE, POSITIVE_FINITE, allow_large_option
from scheduler.cli.scene_survey import load_surveyed_campaign


def surveyed_graph(campaign: Campaign, campaign_file: Path, dem: str | None,
                   geoid: str | None, calibration: Calibration, families: tuple[str, ...]
                   ) -> nx.DiGraph | None:
    """The run's own task DAG, costed, or None where the run's products cannot be surveyed
    here (scenes not all local files, or no ``--dem``: the run needs one)."""
    from scheduler.cli.run import campaign_flow
    from scheduler.products.driver import Driver

    if dem is None or not campaign.scenes or any(
            not s.uri or "://" in s.uri for s in campaign.scenes):
        return None
    flow = campaign_flow(campaign, campaign_file, Driver(address="serial"), dem=dem,
                         geoid=geoid, tile_px=None, dest=None, placement={})
    products, failures = flow.survey()
    if failures:
        raise click.ClickException(
            "cannot survey the run's products: " + "; ".join(
                f"{f.label}: {f.error}" for f in failures))
    missing = sorted({"+".join(g) for g in campaign.view_groups} - {p.label for p in products})
    if missing:
        raise click.ClickException(
            f"{campaign_file}: products.dsm.views {missing} are not among the run's products "
            f"({', '.join(p.label for p in products)}); expected `eochain run` to make them")
    return surveyed_dag([p.surveyed for p in products], calibration, families)


def check_out_dir(out_dir: Path) -> None:
    """Create ``--out`` and check it is writable, before any planning."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(
            f"--out {str(out_dir)!r}: cannot create the folder ({exc.strerror or exc}); "
            "expected a writable folder") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise click.ClickException(f"--out {str(out_dir)!r} is not writable; expected a "
                                   "writable folder")


def defaults_line(campaign: Campaign) -> str:
    """What the file left to defaults, or an empty string."""
    return "; ".join(f"{k}: {DEFAULTS[k]}" for k in campaign.defaults_used)


def write_pareto_png(cp: CampaignPlan, path: Path) -> None:
    """Cost against makespan for the frontier, the chosen plan marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = cp.frontier.points
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    ax.plot([p.makespan_h for p in pts], [p.cost_usd for p in pts], "o-", label="Pareto frontier")
    ax.plot([cp.chosen.makespan_h], [cp.chosen.cost_usd], "r*", markersize=14, label="chosen")
    ax.axvline(cp.deadline_h, color="grey", linestyle="--", label=f"deadline {cp.deadline_h:g} h")
    if cp.budget_usd is not None:
        ax.axhline(cp.budget_usd, color="grey", linestyle=":",
                   label=f"budget {cp.budget_usd:g} USD")
    ax.set_xlabel("makespan (h)")
    ax.set_ylabel("cost (USD)")
    ax.set_title(f"{cp.campaign.name}: {cp.n_tasks} tasks")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_table(doc: dict[str, object], cp: CampaignPlan) -> str:
    lines = [f"campaign {cp.campaign.name}: {cp.n_tasks} tasks, {cp.n_edges} edges; "
             f"objective {cp.campaign.objective}, deadline {cp.deadline_h:g} h"
             + (f", budget {cp.budget_usd:g} USD" if cp.budget_usd is not None else ""),
             f"prices {cp.catalog_date} (catalog), calibration {cp.calibration_status}", ""]
    head = f"{'instance type':<14} {'market':<9} {'region':<10} {'n':>3} {'USD/h':>7}  tasks"
    lines += [head, "-" * len(head)]
    for e in cp.chosen.fleet:
        tasks = ", ".join(f"{k} {v}" for k, v in e.tasks.items())
        lines.append(f"{e.offer.instance.name:<14} {e.offer.market:<9} {e.offer.region:<10} "
                     f"{e.instances:>3} {e.offer.price_usd_per_h:>7.4f}  {tasks}")
    p = cp.chosen
    sim = cp.simulation
    breakdown = cast("dict[str, float]", doc["cost_breakdown_usd"])  # plan_to_dict's own
    items = ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items())
    if sim is not None:
        lines += [
            "",
            (f"cost      {sim.mean_cost_usd:10.2f} USD simulated mean ({items}); "
             f"p95 {sim.p95_cost_usd:.2f} USD"),
            (f"makespan  {sim.p95_makespan_s / 3600:10.2f} h simulated p95 (critical path "
             f"{cp.problem.critical_path_s / 3600:.2f} h); {cp.zones} zone(s)"),
            (f"risk      {100 * sim.deadline_hit_rate:9.0f} % of {len(sim.runs)} simulated runs "
             f"meet the deadline with task times +/- {100 * cp.runtime_error:.0f} %; "
             f"{sim.mean_interruptions:.1f} spot interruptions per run"),
            (f"lp        {p.cost_usd:10.2f} USD, {p.makespan_h:.2f} h (fluid model: no "
             "idle time, no dependency; cluster and requests priced)"),
        ]
        effort = cp.effort
        if effort is not None and effort.limited:
            lines.append(
                f"note      fewer runs to keep the {effort.budget_s:g} s planning budget "
                f"(a run takes {effort.first_run_s:.1f} s): {effort.final_runs} of "
                f"{effort.requested_final_runs} fresh runs of the chosen plan, "
                f"{effort.screening_runs} of {effort.requested_screening_runs} screening runs "
                f"on {effort.pairs_screened} of {effort.pairs_available} candidates")
    else:
        lines += [
            "",
            f"cost      {p.cost_usd:10.2f} USD LP, not simulated ({items})",
            (f"makespan  {p.makespan_h:10.2f} h LP, not simulated (critical path "
             f"{cp.problem.critical_path_s / 3600:.2f} h)"),
        ]
    lines.append(f"frontier  {len(cp.frontier.points)} LP points from "
                 f"{cp.frontier.points[0].makespan_h:.2f} h / "
                 f"{cp.frontier.points[0].cost_usd:.2f} USD to "
                 f"{cp.frontier.points[-1].makespan_h:.2f} h / "
                 f"{cp.frontier.points[-1].cost_usd:.2f} USD")
    return "\n".join(lines)


@click.command("plan")
@click.argument("campaign_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--deadline", "deadline_h", type=POSITIVE_FINITE, default=None,
              help="Deadline in hours (overrides the file's deadline_h).")
@click.option("--budget", "budget_usd", type=NON_NEGATIVE_FINITE, default=None,
              help="Budget in USD (overrides the file's budget_usd).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON for machines.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Where plan.json and pareto.png go.")
@click.option("--catalog", "catalog_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Price catalog JSON (default: the shipped one).")
@click.option("--calibration", "calibration_path",
              type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Calibration JSON (default: the shipped one).")
@click.option("--dem", "dem_path", default=None,
              help="DEM for the footprints of scenes given by uri only (default: the RPC's "
                   "height range).")
@click.option("--geoid", "geoid_path", default=None,
              help="Geoid grid when the DEM's heights are above the geoid.")
@allow_large_option
@click.option("--runs", type=click.IntRange(0, 100_000), default=20, show_default=True,
              help="Simulated runs of the chosen plan; each frontier candidate is screened "
                   "with runs/5 (0: no simulation, the LP's choice).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
def plan(campaign_file: Path, deadline_h: float | None, budget_usd: float | None, as_json: bool,
         out_dir: Path, catalog_path: Path | None, calibration_path: Path | None,
         dem_path: str | None, geoid_path: str | None, allow_large: bool, runs: int,
         seed: int) -> None:
    """Plan a campaign: fleet, cost, makespan and risk, Pareto frontier, plan.json."""
    from planner.planning import plan_campaign

    check_out_dir(out_dir)
    try:
        campaign = load_surveyed_campaign(campaign_file, dem=dem_path, geoid=geoid_path,
                                          allow_large=allow_large)
        if campaign.defaults_used:
            click.echo(f"defaults: {defaults_line(campaign)}", err=True)
        catalog, calibration = load_catalog(catalog_path), load_calibration(calibration_path)
        graph = surveyed_graph(campaign, campaign_file, dem_path, geoid_path, calibration,
                               catalog.families)
        click.echo("tasks: " + ("the run's, on the products' surveyed grids" if graph is not None
                                else "estimated from the footprints (pass --dem with scenes "
                                     "given by local files to plan the run's exact tasks)"),
                   err=True)
        cp = plan_campaign(campaign, catalog, calibration, deadline_h=deadline_h,
                           budget_usd=budget_usd, simulate_runs=runs, seed=seed, graph=graph)
    except PlannerError as exc:
        raise click.ClickException(str(exc)) from exc
    doc = plan_to_dict(cp)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_plan(out_dir / "plan.json", plan_document_from_dict(doc))
    write_pareto_png(cp, out_dir / "pareto.png")
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_table(doc, cp))
        click.echo(f"\nwrote {out_dir / 'plan.json'} and {out_dir / 'pareto.png'}")
