"""A progress bar and a summary around a flow run: what ``eochain run`` and the demo show.

The bar counts tiles done of the campaign's total (tqdm adds the rate and
the ETA) and shows products done and the cost so far: the fleet's price per
hour (from the plan) times the elapsed time. The summary lists products
written, already done (manifest) and failed, the tasks' effort (runs,
retries, recomputations, peak bytes in flight), each failure with its scene
and reason, and the cost.
"""

from __future__ import annotations

import click

from scheduler.runtime.dispatch import Progress
from scheduler.runtime.flow import Flow, FlowReport


def run_with_progress(flow: Flow, price_usd_per_h: float = 0.0, quiet: bool = False) -> FlowReport:
    """Run a flow under a progress bar (tiles done/total, rate, ETA, cost), then print a summary.

    What ``eochain run`` does after reading the campaign; ``eochain demo`` calls it too.
    """
    from tqdm import tqdm

    with tqdm(unit="tile", desc="run", disable=quiet, dynamic_ncols=True) as bar:
        def progress(p: Progress) -> None:
            bar.total = p.tiles_total
            bar.n = p.tiles_done
            bar.set_postfix(products=f"{p.products_done}/{p.products_total}",
                            cost=f"${p.elapsed_s / 3600 * price_usd_per_h:.4f}", refresh=False)
            bar.refresh()

        report = flow.run(progress=progress)
    click.echo(summary(report, report.wall_s / 3600 * price_usd_per_h))
    return report


def summary(report: FlowReport, cost_usd: float) -> str:
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
    if report.by_other_run:
        lines.append(f"computed by another run on the same output: "
                     f"{', '.join(report.by_other_run)}")
    for why in report.rebuilt:
        lines.append(f"rebuilt {why}")
    for why in report.items_rewritten:
        lines.append(f"STAC item rewritten {why}")
    for f in report.failures:
        lines.append(f"FAILED {f.label or f.key}: {f.error}")
    lines.append(f"cost so far: ${cost_usd:.4f}")
    return "\n".join(lines)
