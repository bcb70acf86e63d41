"""eochain's plan vs three reference placements, all judged by the campaign simulator.

Run: ``python -m benchmarks.planner_baselines`` (``--runs 20``). Writes the
same tables to ``benchmarks/results/planner_baselines.json``.

Campaigns (the "state machine" measured is :func:`planner.planning.plan_campaign`
then :class:`planner.simulator.CampaignSimulator`): the example campaign
(``examples/campaign.yaml``: Pléiades pairs, ortho 0.5 m + DSM 1 m, data in
eu-west-3, spot and on-demand in eu-west-3 and eu-west-1, quotas) with 200
pairs and a 24 h deadline, and the same with an 8 h deadline, where quotas
and the per-type instance limit bind.

Strategies, each sized for the makespan eochain's chosen plan targets
(``makespan_limit_h``), then simulated ``--runs`` times with the same seeds
(spot interruptions at each type's rate, lost work redone, start-up delays):

- eochain: the plan ``eochain plan`` chooses (Pareto frontier, simulated choice);
- (a) all on-demand on the cheapest adequate type (:func:`planner.baselines.all_on_demand`);
- (b) all spot on the single cheapest type per vCPU-hour (``all_spot_cheapest``);
- (c) greedy cheapest-per-task placement under the same limits (``greedy_per_task``).

"plan USD" is each strategy's own fluid estimate (work + start-ups), "mean"
and "p95" the simulated figures, which add idle time (instances waiting for
inputs, tails). Ratio = eochain's mean simulated cost / the baseline's (below 1: eochain is
cheaper; goals: <= 0.40 vs (a), <= 0.90 vs (b) and (c), with >= 95 % of
eochain's runs meeting the deadline).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from planner.baselines import all_on_demand, all_spot_cheapest, greedy_per_task
from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.catalog import load_catalog
from planner.errors import InfeasiblePlanError
from planner.estimate import campaign_dag
from planner.order import depth_first_order
from planner.placement import PlacementPlan
from planner.planning import plan_campaign
from planner.simulator import CampaignSimulator

REPO = Path(__file__).resolve().parents[1]


def _campaign(pairs: int, deadline_h: float) -> Any:
    doc = yaml.safe_load((REPO / "examples" / "campaign.yaml").read_text())
    doc["name"] = f"{pairs}-pairs-{deadline_h:g}h"
    doc["inputs"]["survey"]["pairs"] = pairs
    doc["deadline_h"] = deadline_h
    doc.pop("budget_usd", None)
    return parse_campaign(doc, "benchmarks/planner_baselines")


def _fleet(plan: PlacementPlan) -> str:
    return ", ".join(f"{e.instances}x {e.offer.instance.name} {e.offer.market} {e.offer.region}"
                     for e in plan.fleet)


def run_campaign(pairs: int, deadline_h: float, runs: int, seed: int) -> dict[str, Any]:
    catalog, calibration = load_catalog(), load_calibration()
    campaign = _campaign(pairs, deadline_h)
    t = time.perf_counter()
    cp = plan_campaign(campaign, catalog, calibration, simulate_runs=runs, seed=seed)
    plan_s = time.perf_counter() - t
    graph = campaign_dag(campaign, calibration, catalog.families)
    sim = CampaignSimulator(graph, depth_first_order(graph), cp.problem)
    horizon_h = cp.chosen.makespan_limit_h
    plans: dict[str, PlacementPlan | str] = {"eochain": cp.chosen}
    builders: dict[str, Callable[[], PlacementPlan]] = {
        "(a) all on-demand, cheapest adequate type":
            lambda: all_on_demand(cp.problem, horizon_h, campaign.data_region),
        "(b) all spot, single cheapest type":
            lambda: all_spot_cheapest(cp.problem, horizon_h, campaign.data_region),
        "(c) greedy cheapest per task": lambda: greedy_per_task(cp.problem, horizon_h),
    }
    for name, build in builders.items():
        try:
            plans[name] = build()
        except InfeasiblePlanError as exc:
            plans[name] = f"infeasible: {exc}"
    rows: list[dict[str, Any]] = []
    eo: dict[str, Any] | None = None
    for name, plan in plans.items():
        if isinstance(plan, str):
            rows.append({"strategy": name, "error": plan})
            continue
        s = sim.simulate(plan, runs, seed=seed, deadline_s=deadline_h * 3600)
        row: dict[str, Any] = {"strategy": name, "planned_cost_usd": plan.cost_usd,
               "mean_cost_usd": s.mean_cost_usd, "p95_cost_usd": s.p95_cost_usd,
               "mean_makespan_h": s.mean_makespan_s / 3600,
               "p95_makespan_h": s.p95_makespan_s / 3600,
               "deadline_hit_rate": s.deadline_hit_rate,
               "mean_interruptions": s.mean_interruptions, "fleet": _fleet(plan)}
        if name == "eochain":
            eo = row
        rows.append(row)
    for row in rows:
        if eo is not None and "mean_cost_usd" in row:
            row["eochain_cost_ratio"] = eo["mean_cost_usd"] / row["mean_cost_usd"]
    return {"campaign": campaign.name, "pairs": pairs, "deadline_h": deadline_h,
            "tasks": cp.n_tasks, "plan_s": plan_s, "horizon_h": horizon_h,
            "frontier_points": len(cp.frontier.points), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--deadlines", type=float, nargs="+", default=[24.0, 8.0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    results = []
    print(f"planner_baselines: {platform.machine()} x{os.cpu_count()}, Python "
          f"{sys.version.split()[0]}; {args.runs} simulated runs per strategy, seed {args.seed}")
    for deadline in args.deadlines:
        res = run_campaign(args.pairs, deadline, args.runs, args.seed)
        results.append(res)
        print(f"\ncampaign {res['campaign']}: {res['tasks']} tasks, deadline {deadline:g} h, "
              f"fleets sized for {res['horizon_h']:.2f} h; plan took {res['plan_s']:.1f} s")
        print(f"{'strategy':<44} {'plan USD':>9} {'mean USD':>9} {'p95 USD':>9} {'p95 h':>6} "
              f"{'hit':>5} {'ratio':>6}")
        for row in res["rows"]:
            if "error" in row:
                print(f"{row['strategy']:<44} {row['error']}")
                continue
            print(f"{row['strategy']:<44} {row['planned_cost_usd']:>9.2f} "
                  f"{row['mean_cost_usd']:>9.2f} "
                  f"{row['p95_cost_usd']:>9.2f} {row['p95_makespan_h']:>6.2f} "
                  f"{100 * row['deadline_hit_rate']:>4.0f}% {row['eochain_cost_ratio']:>6.3f}")
        for row in res["rows"]:
            if "fleet" in row:
                print(f"  {row['strategy']}: {row['fleet']}")
    doc = {"state": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                     "python": sys.version.split()[0], "platform": platform.platform(),
                     "inputs": "examples/campaign.yaml survey with --pairs pairs; shipped "
                               "catalog (prices as of its date) and provisional calibration",
                     "runs": args.runs, "seed": args.seed},
           "campaigns": results}
    out = REPO / "benchmarks" / "results" / "planner_baselines.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
