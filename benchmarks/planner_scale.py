"""Planner at scale: a 1,000,000-task campaign, time per stage, memory, live bytes vs breadth-first.

Run: ``python -m benchmarks.planner_scale`` (``--tasks 1000000``). Writes the
same table to ``benchmarks/results/planner_scale.json``.

Inputs: a survey campaign of Pléiades-like stereo pairs (20 km scenes, 0.5 m
ortho of both views, 1 m DSM, 4096 px tiles with a 64 px margin; the survey
generator wraps over its box, so pairs repeat footprints), with as many
pairs as it takes to reach ``--tasks`` DAG nodes (stereo + DSM + ortho tiles),
the example campaign's compute section (2 regions, 8 families, spot and
on-demand, quotas) and the shipped price catalog and calibration.

Stages timed (the "state machine" measured is :func:`planner.planning`'s
pipeline, run stage by stage): DAG build from the operations' declarations,
depth-first order, problem summary (stages, offers, critical path), Pareto
frontier (MILPs), and live-bytes profiles. Memory: the process's peak RSS
growth over the DAG build (``ru_maxrss``), which is what "fits in memory"
means on this machine.

Baselines and ratios: the issue's targets (DAG build 60 s; plan = DAG +
problem + frontier 30 s; ratio = measured / target, below 1 meets it) and
breadth-first order for live intermediate bytes (ratio = depth-first peak /
breadth-first peak; the goal is at most 0.25).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.catalog import load_catalog
from planner.estimate import campaign_dag
from planner.frontier import build_problem, pareto_frontier
from planner.order import breadth_first_order, depth_first_order, live_bytes_profile

REPO = Path(__file__).resolve().parents[1]
TASKS_PER_PAIR_GUESS = 294  # stereo 25 + dsm 25 + ortho 2 x ~122 at 4096 px tiles


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _campaign(pairs: int) -> Any:
    doc = yaml.safe_load((REPO / "examples" / "campaign.yaml").read_text())
    doc["name"] = f"scale-{pairs}-pairs"
    doc["inputs"]["survey"]["pairs"] = pairs
    doc["deadline_h"] = 24 * 14
    doc["quotas"] = {"on_demand_vcpus": 4096, "spot_vcpus": 8192, "max_instances_per_type": 64}
    doc.pop("budget_usd", None)
    return parse_campaign(doc, "benchmarks/planner_scale")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    pairs = max(1, round(args.tasks / TASKS_PER_PAIR_GUESS))
    catalog, calibration = load_catalog(), load_calibration()
    campaign = _campaign(pairs)
    rss0 = _rss_gib()
    t = time.perf_counter()
    graph = campaign_dag(campaign, calibration, catalog.families)
    dag_s = time.perf_counter() - t
    rss_dag = _rss_gib() - rss0
    t = time.perf_counter()
    order = depth_first_order(graph)
    order_s = time.perf_counter() - t
    t = time.perf_counter()
    problem = build_problem(graph, campaign, catalog, order=order)
    problem_s = time.perf_counter() - t
    t = time.perf_counter()
    frontier = pareto_frontier(problem, campaign.deadline_h)
    frontier_s = time.perf_counter() - t
    t = time.perf_counter()
    dfo = live_bytes_profile(graph, order)
    bfo = live_bytes_profile(graph, breadth_first_order(graph))
    live_s = time.perf_counter() - t
    plan_s = dag_s + problem_s + frontier_s
    n_tiles = {s.name: s.n_tasks for s in problem.stages}
    rows = [
        ("DAG build (s)", dag_s, 60.0),
        ("plan: DAG + problem + frontier (s)", plan_s, 30.0),
        ("plan incl. depth-first order (s)", plan_s + order_s, 30.0),
        ("peak live bytes, depth-first vs breadth-first (GiB)", dfo.peak_bytes / 2**30,
         bfo.peak_bytes / 2**30),
    ]
    print(f"planner_scale: {graph.number_of_nodes():,} tasks ({', '.join(f'{k} {v:,}' for k, v in n_tiles.items())}), "
          f"{graph.number_of_edges():,} edges, {pairs} pairs; "
          f"{platform.machine()} x{os.cpu_count()}, Python {sys.version.split()[0]}")
    print(f"{'measure':<52} {'eochain':>10} {'baseline':>10} {'ratio':>7}")
    for name, value, base in rows:
        print(f"{name:<52} {value:>10.2f} {base:>10.2f} {value / base:>7.3f}")
    print(f"stage times (s): dag {dag_s:.2f}, order {order_s:.2f}, problem {problem_s:.2f}, "
          f"frontier {frontier_s:.2f} ({len(frontier.points)} points), live-bytes "
          f"profiles {live_s:.2f}")
    print(f"memory: peak RSS +{rss_dag:.2f} GiB over the DAG build ({_rss_gib():.2f} GiB total)")
    result = {
        "state": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                  "python": sys.version.split()[0], "platform": platform.platform(),
                  "load_avg_1min": os.getloadavg()[0],
                  "inputs": f"survey campaign from examples/campaign.yaml with {pairs} pairs, "
                            "4096 px tiles, shipped catalog and calibration"},
        "tasks": graph.number_of_nodes(), "edges": graph.number_of_edges(),
        "tasks_per_stage": n_tiles, "pairs": pairs,
        "stage_s": {"dag": dag_s, "order": order_s, "problem": problem_s,
                    "frontier": frontier_s, "live_profiles": live_s},
        "plan_s": plan_s,
        "frontier_points": len(frontier.points),
        "dag_rss_gib": rss_dag, "peak_rss_gib": _rss_gib(),
        "live_bytes": {"depth_first_peak": dfo.peak_bytes, "breadth_first_peak": bfo.peak_bytes,
                       "ratio": dfo.peak_bytes / bfo.peak_bytes},
        "table": [{"measure": n, "eochain": v, "baseline": b, "ratio": v / b}
                  for n, v, b in rows],
    }
    out = REPO / "benchmarks" / "results" / "planner_scale.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
