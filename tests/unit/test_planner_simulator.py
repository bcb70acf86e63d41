"""The campaign simulator: seeded, every task done, lost work redone after interruptions."""

from __future__ import annotations

import networkx as nx
import pytest

from planner.catalog import InstanceType, Offer
from planner.dag import TaskCost
from planner.errors import PlannerError
from planner.order import depth_first_order
from planner.placement import FleetEntry, PlacementPlan, PlacementProblem, Stage
from planner.simulator import CampaignSimulator

pytestmark = pytest.mark.unit

COST = TaskCost({"f0": 600.0}, 1, 1.0, 10)


def _chain_graph(n: int) -> nx.DiGraph:
    """
        a0  a1  a2 ...        each b_i reads a_i
        |   |   |
        b0  b1  b2 ...
    """
    g = nx.DiGraph()
    for i in range(n):
        g.add_node(("a", "x", 0, i), cost=COST)
        g.add_node(("b", "x", 0, i), cost=COST)
        g.add_edge(("a", "x", 0, i), ("b", "x", 0, i), bytes=10)
    g.graph["operations"] = ("a", "b")
    return g


def _offer(lam: float) -> Offer:
    return Offer(InstanceType("t", "f0", 2, 8.0, "x86_64", "general"), "r", "spot", 0.36, lam,
                 "<5%")


def _setup(lam: float, n: int = 20) -> tuple[CampaignSimulator, PlacementPlan]:
    g = _chain_graph(n)
    stages = (Stage("a", n, {"f0": 600.0}, 1, 1.0, 0.0), Stage("b", n, {"f0": 600.0}, 1, 1.0, 0.0))
    offer = _offer(lam)
    problem = PlacementProblem(stages, (offer,), 60.0, 1200.0, 10, {"spot": 100}, {})
    plan = PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0,
                         (FleetEntry(offer, 3, {"a": n, "b": n}, 3.0),), "test")
    return CampaignSimulator(g, depth_first_order(g), problem), plan


def test_no_interruptions_gives_the_work_bound() -> None:
    sim, plan = _setup(0.0)
    r = sim.run(plan, seed=1, runtime_sigma=0.0)
    # 40 tasks of 600 s on 3 instances x 2 vCPUs: at least 7 waves of 600 s after start-up
    assert r.interruptions == 0 and r.redone_tasks == 0 and r.instances_launched == 3
    assert r.makespan_s >= 45 + 4 * 600
    assert r.cost_usd > 0
    # billing: never more than 3 instances for the whole makespan
    assert r.cost_usd <= 3 * 0.36 * r.makespan_s / 3600 + 1e-9


def test_seeded_runs_repeat() -> None:
    sim, plan = _setup(0.5)
    assert sim.run(plan, seed=7) == sim.run(plan, seed=7)


def test_interruptions_redo_work_and_cost_more() -> None:
    sim, plan = _setup(3.0)
    calm, calm_plan = _setup(0.0)
    stormy = sim.simulate(plan, 20, seed=0, deadline_s=4 * 3600)
    quiet = calm.simulate(calm_plan, 20, seed=0, deadline_s=4 * 3600)
    assert stormy.mean_interruptions > 1
    assert sum(r.redone_tasks for r in stormy.runs) > 0
    assert stormy.mean_makespan_s > quiet.mean_makespan_s
    assert all(r.instances_launched > 3 for r in stormy.runs if r.interruptions)
    assert 0.0 <= stormy.deadline_hit_rate <= 1.0 and quiet.deadline_hit_rate == 1.0


def test_fleet_that_cannot_run_a_stage_stalls_loudly() -> None:
    sim, plan = _setup(0.0)
    only_a = PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0,
                           (FleetEntry(plan.fleet[0].offer, 2, {"a": 20}, 1.0),), "test")
    with pytest.raises(PlannerError, match="stalled with 20 of 40 tasks undone"):
        sim.run(only_a, seed=0)


def test_interruption_scale_raises_rework_in_lp_and_simulator() -> None:
    """A stress campaign (hazard x 30000, about 1 per hour) costs more in the LP and gets interrupted in simulation."""
    from planner.calibration import load_calibration
    from planner.campaign import parse_campaign
    from planner.catalog import load_catalog
    from planner.estimate import campaign_dag
    from planner.frontier import build_problem
    from planner.placement import solve_placement

    plans = []
    for scale in (1.0, 30000.0):
        c = parse_campaign({
            "name": "stress",
            "inputs": {"survey": {"pairs": 2, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
            "products": {"dsm": {"gsd_m": 1.0}},
            "tiling": {"tile_px": 2048, "margin_px": 64},
            "data": {"region": "eu-west-3", "bucket": "b"}, "deadline_h": 6,
            "compute": {"regions": ["eu-west-3"], "families": ["m7g"], "markets": ["spot"],
                        "interruption_scale": scale}})
        cat = load_catalog()
        g = campaign_dag(c, load_calibration(), cat.families)
        problem = build_problem(g, c, cat)
        plan = solve_placement(problem, 6.0)
        sim = CampaignSimulator(g, depth_first_order(g), problem)
        plans.append((plan, sim.simulate(plan, 20, seed=3)))
    (calm, calm_sim), (stormy, stormy_sim) = plans
    assert stormy.expected_interruptions > 100 * calm.expected_interruptions
    assert stormy.cost_usd > calm.cost_usd
    assert stormy_sim.mean_interruptions > calm_sim.mean_interruptions
