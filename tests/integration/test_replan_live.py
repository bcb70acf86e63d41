"""Re-planning while it runs: tasks turn slower than calibrated, the run grows its fleet.

The workload is ``N_FAST + N_SLOW`` tasks of the ``ortho`` stage
(:class:`OrthoNap`: each waits for its input's duration; waiting, not
computing, so that each 1-CPU node adds real throughput on this 2-core
machine). The plan's calibration says ``CAL_S`` seconds a task; the first
``N_FAST`` take that, the rest ``SLOWDOWN`` times as long: mid-run the tasks
are genuinely slower than calibrated. The deadline, ``DEADLINE_S``, counts
from the dispatch's start::

    static plan (calibrated):   1 node, 316 x 0.075 s = 24 s of work
                                + a 15 s start-up                     -> fits 75 s
    at the speed measured:      1 node, 16 x 0.075 + 300 x 0.225 s
                                = 69 s + a 15 s start-up              -> misses 75 s

(``SLOWDOWN`` stays below the re-planner's bound of 4 with room for the
overhead a task's measured time carries, so the re-plan sees the speed the
simulator is given.)

The cluster is Ray's ``fake_multinode`` provider, its head without CPU and
one node type, ``c7g.xlarge`` spot, of 1 CPU, up to ``CAP`` nodes
(:func:`~scheduler.fleet.cluster_config.render_fake_multinode_config`); the
placement problem states that type with the 1 vCPU its nodes have. The
driver (a subprocess, as ``eochain run`` is) first waits for the plan's node
to be up, so how long this machine takes to start the first node is not
part of the run, then runs the workload through
``Driver(plan=...).dispatch(..., replanner=LiveReplanner(...))``.

Checked:

1. live: the re-planner, fed each task's time by the runtime, measures the
   slowdown (a wait never ends early: at least ``SLOWDOWN`` x the
   calibration), asks for more nodes than the plan's one, and
   the autoscaler brings them up while the run goes on; every task completes;
2. the deadline, through the simulator (:class:`~planner.simulator.CampaignSimulator`)
   on the task times the run measured: the static plan misses ``DEADLINE_S``
   in every simulated run; the re-plan made where the live run made it (its
   elapsed time and tasks left; recomputed here with the pure
   :func:`~planner.replan.replan`, and equal to what the run asked for)
   finishes the rest within the deadline in every simulated run, each of its
   nodes paying a start-up (the one already up too).

The run's wall times are printed, not asserted (timing lives in benchmarks/).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from planner.catalog import InstanceType, Offer, load_catalog
from planner.dag import TaskCost
from planner.order import depth_first_order
from planner.placement import PlacementPlan, PlacementProblem, Stage, solve_placement
from planner.replan import RunProgress, fleet_counts, replan
from planner.simulator import CampaignSimulator, SimulationSummary
from scheduler.fleet.cluster_config import fleet_from_plan
from scheduler.fleet.replanning import LiveReplanner
from scheduler.runtime.state import Task, TaskGraph
from tests.conftest import fake_cluster_env, fake_multinode_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CAL_S = 0.075
SLOWDOWN = 3.0
N_FAST, N_SLOW = 16, 320
DEADLINE_S = 75.0
STARTUP_S = 10.0   # a node's start-up as the plan assumes it (a fake node on this machine)
CAP = 4            # nodes of the type at most: the cluster config's and the problem's
TYPE, MARKET, REGION = "c7g.xlarge", "spot", "eu-west-3"
RESOURCE = f"{TYPE}:{MARKET}"
SIM_RUNS = 10


class OrthoNap:
    """A task of the ``ortho`` stage (``ortho_nap``) that waits ``seconds``: its input's weight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, ctx: object) -> float:
        time.sleep(self.seconds)
        return self.seconds


def workload() -> TaskGraph:
    """``N_FAST`` tasks as calibrated, then ``N_SLOW`` ``SLOWDOWN`` times slower (in order)."""
    seconds = [CAL_S] * N_FAST + [CAL_S * SLOWDOWN] * N_SLOW
    return TaskGraph.build([Task(f"ortho:nap:0_{i}", OrthoNap(s), stage="ortho")
                            for i, s in enumerate(seconds)])


def problem() -> PlacementProblem:
    """The run's placement problem: the ortho stage on 1-vCPU spot nodes, at the calibration."""
    node = InstanceType(TYPE, "c7g", 1, 8.0, "arm64", "compute")
    offer = Offer(node, REGION, MARKET, 0.0725, 0.0, "<5%")
    return PlacementProblem((Stage("ortho", N_FAST + N_SLOW, {"c7g": CAL_S}, 1, 0.5, 0.0),),
                            (offer,), STARTUP_S, CAL_S, CAP, {MARKET: 64}, {})


def static_plan() -> PlacementPlan:
    return solve_placement(problem(), DEADLINE_S / 3600)


def plan_document() -> dict[str, Any]:
    """The static plan as ``plan.json`` holds it (what the runtime asks the autoscaler for)."""
    return {"format": "eochain-plan/1", "deadline_s": DEADLINE_S, "fleet": [
        {"instance_type": e.offer.instance.name, "region": e.offer.region,
         "market": e.offer.market, "instances": e.instances, "tasks": dict(e.tasks)}
        for e in static_plan().fleet]}


def replanner(say: Any) -> LiveReplanner:
    """Re-plans every 5 tasks measured and 5 s at most, on the last 5 tasks' mean."""
    return LiveReplanner(problem(), DEADLINE_S, fleet_counts(static_plan()), {"ortho": CAL_S},
                         window=5, min_tasks=5, min_interval_s=5.0, say=say)


DRIVER = r"""
import json, sys, time
import ray
from ray.autoscaler.sdk import request_resources
from scheduler.runtime.dispatch import DispatchOptions
from scheduler.products.driver import Driver
from tests.integration.test_replan_live import RESOURCE, plan_document, replanner, workload

said = []
driver = Driver(address=sys.argv[1], plan=plan_document(), say=said.append,
                options=DispatchOptions(no_worker_timeout_s=120.0))
driver.connect()
request_resources(bundles=[{RESOURCE: 1.0}])  # the plan's node, before the run
deadline = time.monotonic() + 150
while ray.cluster_resources().get(RESOURCE, 0) < 1:
    if time.monotonic() > deadline:
        sys.exit("the plan's node did not come up within 150 s")
    time.sleep(0.5)
live = replanner(said.append)
nodes = []

def watch(p):
    nodes.append(int(ray.cluster_resources().get(RESOURCE, 0)))

start = time.monotonic()
report = driver.dispatch(workload(), watch, lambda key, value: None, replanner=live)
events = [{"elapsed_s": e.elapsed_s, "tasks_left": dict(e.progress.tasks_left),
           "measured_task_s": dict(e.progress.measured_task_s),
           "asked": None if e.fleet is None else sorted([list(p), n] for p, n in e.fleet.items()),
           "replanned": e.decision is not None and e.decision.plan is not None,
           "reason": e.reason} for e in live.history]
print("RUN", json.dumps({"ok": report.ok, "results": len(report.results),
                         "failures": [str(f) for f in report.failures][:3],
                         "wall_s": time.monotonic() - start, "nodes": nodes,
                         "events": events, "said": said}), flush=True)
"""


def _graph(task_s: list[float]) -> nx.DiGraph:
    """Independent ortho tasks of the given wall seconds, for the simulator."""
    g = nx.DiGraph()
    costs = {s: TaskCost({"c7g": s}, 1, 0.5, 0) for s in set(task_s)}
    for i, s in enumerate(task_s):
        g.add_node(("ortho", "nap", 0, i), cost=costs[s])
    return g


def _simulate(plan: PlacementPlan, task_s: list[float], deadline_s: float) -> SimulationSummary:
    """``SIM_RUNS`` seeded runs of ``plan`` over tasks of ``task_s`` seconds."""
    g = _graph(task_s)
    sim = CampaignSimulator(g, depth_first_order(g), problem())
    return sim.simulate(plan, SIM_RUNS, seed=0, deadline_s=deadline_s)


def test_tasks_slower_than_calibrated_grow_the_fleet_and_the_replan_keeps_the_deadline() -> None:
    static = static_plan()
    assert fleet_counts(static) == {(TYPE, MARKET): 1}  # the calibration: one node suffices
    fleet = fleet_from_plan({"format": "eochain-plan/1", "fleet": [
        {"instance_type": TYPE, "region": REGION, "market": MARKET, "instances": CAP}]},
        REGION, load_catalog())
    env = fake_cluster_env()
    with fake_multinode_head(fleet, "eol", env) as (address, _):
        driver = subprocess.run([sys.executable, "-c", DRIVER, address], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=300, check=False)
    assert driver.returncode == 0, driver.stdout[-3000:] + driver.stderr[-3000:]
    run = json.loads(next(line[4:] for line in driver.stdout.splitlines()
                          if line.startswith("RUN ")))
    print(f"live run: {run['wall_s']:.1f} s wall, nodes of {RESOURCE} seen per step "
          f"{sorted(set(run['nodes']))}; re-plans: " + " | ".join(run["said"]))

    # 1. live: every task ran; the slowdown was measured; more nodes were asked for and came
    assert run["ok"] and run["results"] == N_FAST + N_SLOW, run["failures"]
    slow = [i for i, e in enumerate(run["events"]) if e["replanned"]
            and e["measured_task_s"].get("ortho", 0.0) >= CAL_S * SLOWDOWN]
    assert slow, run["events"]
    first = run["events"][slow[0]]
    # the fleet the run held after that re-plan: the last one asked for until then
    held = {(TYPE, MARKET): 1}
    for e in run["events"][:slow[0] + 1]:
        if e["asked"] is not None:
            held = {tuple(pool): n for pool, n in e["asked"]}
    assert held[(TYPE, MARKET)] > 1, run["events"]
    assert max(run["nodes"]) > 1, run["nodes"]  # the autoscaler brought them up mid-run

    # 2. the deadline, simulated on the measured speed of the slow tasks
    slow_s = first["measured_task_s"]["ortho"]
    missed = _simulate(static, [CAL_S] * N_FAST + [slow_s] * N_SLOW, DEADLINE_S)
    assert missed.deadline_hit_rate == 0.0
    left = first["tasks_left"]["ortho"]
    progress = RunProgress(first["elapsed_s"], {"ortho": left}, {"ortho": slow_s},
                           {"ortho": CAL_S})
    again = replan(problem(), progress, DEADLINE_S, safety=0.1)
    assert again.plan is not None and not again.on_demand_only, again.reason
    assert fleet_counts(again.plan) == held, again.reason  # what the run asked for
    kept = _simulate(again.plan, [slow_s] * left, DEADLINE_S - first["elapsed_s"])
    print(f"simulated at {slow_s:.3f} s a slow task: static plan p95 {missed.p95_makespan_s:.1f} s;"
          f" re-planned at {first['elapsed_s']:.1f} s, {first['elapsed_s']:.1f} + "
          f"{kept.p95_makespan_s:.1f} s (deadline {DEADLINE_S:.0f} s)")
    assert kept.deadline_hit_rate == 1.0, (first, again.reason)
