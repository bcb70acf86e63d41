"""A progress bar and a summary around a flow run: what ``eochain run`` and the demo show.

The bar counts tiles done of the campaign's total (tqdm adds the rate and
the ETA) and shows products done and the cost so far. The summary lists
products written, already done (manifest) and failed, the tasks' effort
(runs, retries, recomputations, peak bytes in flight), the nodes that left
by cause (interruption, scale-down, drain, failure: :mod:`scheduler.fleet.departures`),
each failure with its scene and reason, and the cost.

The cost is the run's ledger (:meth:`scheduler.observe.metrics.CampaignMetrics.ledger`:
node-seconds of the nodes that ran x their price), the figure the metrics
and the cost report show too; the run's end stops its billing
(``CampaignMetrics.finish``), so the summary and the report agree to the cent.
Without metrics there is no ledger, and no cost is shown.
"""

from __future__ import annotations

import click

from scheduler.observe.metrics import CampaignMetrics
from scheduler.products.flow import Flow, FlowReport
from scheduler.runtime.dispatch import Progress


def run_with_progress(flow: Flow, metrics: CampaignMetrics | None = None,
                      quiet: bool = False) -> FlowReport:
    """Run a flow under a progress bar (tiles done/total, rate, ETA, cost), then print a summary.

    What ``eochain run`` does after reading the campaign; ``eochain demo`` calls it too.
    ``metrics`` is the run's ledger of cost (none: no cost shown).
    """
    from tqdm import tqdm

    with tqdm(unit="tile", desc="run", disable=quiet, dynamic_ncols=True) as bar:
        def progress(p: Progress) -> None:
            bar.total = p.tiles_total
            bar.n = p.tiles_done
            postfix = {"products": f"{p.products_done}/{p.products_total}"}
            if metrics is not None:
                postfix["cost"] = f"${metrics.accrued_usd:.4f}"
            bar.set_postfix(postfix, refresh=False)
            bar.refresh()

        report = flow.run(progress=progress)
    if metrics is not None:
        metrics.finish()
    click.echo(summary(report, None if metrics is None else metrics.accrued_usd))
    return report


def summary(report: FlowReport, cost_usd: float | None) -> str:
    """The end-of-run text; ``cost_usd`` is the ledger's cost (``None``: not measured)."""
    lines = [
        (f"products: {len(report.written)} written, {len(report.skipped)} already done, "
        f"{len({f.label for f in report.failures})} failed, of {report.products_total}"),
    ]
    if report.dispatch is not None:
        d = report.dispatch
        lines.append(
            f"tasks: {d.task_runs} runs, {d.retries} retried, {d.recomputed} recomputed, "
            f"peak {d.peak_bytes_in_flight / 2**20:.1f} MiB in flight, {report.wall_s:.1f} s"
        )
        if d.cross_zone_tasks or d.cross_zone_bytes:
            lines.append(f"across zones: {d.cross_zone_tasks} tasks ran outside their inputs' "
                         f"zone, {d.cross_zone_bytes / 2**20:.2f} MiB of inputs read from "
                         "another zone")
        if d.departures:
            causes: dict[str, int] = {}
            for dep in d.departures:
                causes[dep.cause.value] = causes.get(dep.cause.value, 0) + 1
            lines.append("nodes left: " + ", ".join(
                f"{n} {cause}" for cause, n in sorted(causes.items())))
            for dep in d.departures:
                if dep.held:  # why a lost node counted as busy (an interruption, if spot)
                    lines.append(f"  {dep.instance_type or 'untyped'} {dep.market} node "
                                 f"{dep.node_id[:12]} left ({dep.cause.value}) with "
                                 f"{dep.held}")
    if report.by_other_run:
        lines.append(f"computed by another run on the same output: "
                     f"{', '.join(report.by_other_run)}")
    for why in report.rebuilt:
        lines.append(f"rebuilt {why}")
    for why in report.items_rewritten:
        lines.append(f"STAC item rewritten {why}")
    for f in report.failures:
        lines.append(f"FAILED {f.label or f.key}: {f.error}")
    if cost_usd is not None:
        lines.append(f"cost so far: ${cost_usd:.4f} (node-seconds x price, the run's ledger)")
    return "\n".join(lines)
