"""Re-planning mid-run: measured slowness re-sizes the fleet; no slack left means on demand."""

from __future__ import annotations

import networkx as nx
import pytest

from planner.catalog import InstanceType, Offer
from planner.dag import TaskCost
from planner.order import depth_first_order
from planner.placement import PlacementProblem, Stage, solve_placement
from planner.replan import RunProgress, observed_hazards, replan, slowdowns
from planner.simulator import CampaignSimulator

pytestmark = pytest.mark.unit

TASK_S = 600.0


def _graph(n: int, task_s: float) -> nx.DiGraph:
    cost = TaskCost({"f0": task_s}, 1, 1.0, 10)
    g = nx.DiGraph()
    for i in range(n):
        g.add_node(("a", "x", 0, i), cost=cost)
        g.add_node(("b", "x", 0, i), cost=cost)
        g.add_edge(("a", "x", 0, i), ("b", "x", 0, i), bytes=10)
    g.graph["operations"] = ("a", "b")
    return g


def _problem(n: int) -> PlacementProblem:
    it = InstanceType("t", "f0", 4, 16.0, "x86_64", "general")
    offers = (Offer(it, "r", "spot", 0.1, 0.0, "<5%"), Offer(it, "r", "on-demand", 0.3, 0.0, "none"))
    stages = (Stage("a", n, {"f0": TASK_S}, 1, 1.0, 0.0), Stage("b", n, {"f0": TASK_S}, 1, 1.0, 0.0))
    return PlacementProblem(stages, offers, 60.0, 2 * TASK_S, 50, {"spot": 1000,
                                                                  "on-demand": 1000}, {})


def test_measured_slowness_resizes_the_fleet_and_keeps_the_deadline() -> None:
    """Tasks 1.3x slower than calibrated: the static plan misses, the re-plan does not."""
    n, deadline_s = 120, 3 * 3600.0
    problem = _problem(n)
    static = solve_placement(problem, deadline_s / 3600)
    slow_graph = _graph(n, TASK_S * 1.3)
    sim = CampaignSimulator(slow_graph, depth_first_order(slow_graph), problem)
    missed = sim.simulate(static, 10, seed=0, deadline_s=deadline_s)
    assert missed.deadline_hit_rate < 0.5
    # a few minutes in, the runtime has measured the first tasks
    progress = RunProgress(elapsed_s=0.0, tasks_left={"a": n, "b": n},
                           measured_task_s={"a": TASK_S * 1.3}, calibrated_task_s={"a": TASK_S})
    re = replan(problem, progress, deadline_s)
    assert re.slowdown == {"a": pytest.approx(1.3), "b": pytest.approx(1.3)}  # b takes a's
    assert re.plan is not None and not re.on_demand_only
    assert sum(e.instances for e in re.plan.fleet) > sum(e.instances for e in static.fleet)
    kept = sim.simulate(re.plan, 10, seed=0, deadline_s=deadline_s)
    assert kept.deadline_hit_rate == 1.0


def test_no_slack_for_a_spot_loss_means_on_demand() -> None:
    problem = _problem(40)
    progress = RunProgress(elapsed_s=2.5 * 3600, tasks_left={"a": 0, "b": 40},
                           measured_task_s={"b": TASK_S}, calibrated_task_s={"b": TASK_S})
    re = replan(problem, progress, deadline_s=2.5 * 3600 + 2 * TASK_S + 60 + 300)
    assert re.on_demand_only and re.plan is not None
    assert {e.offer.market for e in re.plan.fleet} == {"on-demand"}


def test_interruptions_seen_raise_the_hazard_and_nothing_left_is_no_plan() -> None:
    problem = _problem(10)
    seen = RunProgress(0.0, {"a": 10, "b": 10}, {}, {}, interruptions={"t/r/spot": 6},
                       instance_h={"t/r/spot": 4.0})
    assert slowdowns(seen, problem.stages) == {"a": 1.0, "b": 1.0}
    spot, on_demand = observed_hazards(problem.offers, seen)
    assert spot.interruptions_per_h == pytest.approx(6 / (4.0 + 24.0))
    assert on_demand.interruptions_per_h == 0.0
    done = replan(problem, RunProgress(100.0, {"a": 0, "b": 0}, {}, {}), 3600)
    assert done.plan is None and done.reason == "nothing left to run"
