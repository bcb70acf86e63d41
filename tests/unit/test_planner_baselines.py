"""Reference placements: every task placed once, never cheaper than the LP's optimum."""

from __future__ import annotations

import pytest

from planner.baselines import all_on_demand, all_spot_cheapest, greedy_per_task
from planner.catalog import load_catalog
from planner.errors import InfeasiblePlanError
from planner.placement import PlacementProblem, Stage, solve_placement

pytestmark = pytest.mark.unit


def _problem(cap: int = 8, quota: int = 512) -> PlacementProblem:
    offers = tuple(load_catalog().offers(["eu-west-3", "eu-west-1"], ["c7g", "m7g", "m7i"]))
    stages = (Stage("stereo", 800, {"c7g": 1500.0, "m7g": 1540.0, "m7i": 1700.0}, 4, 11.0, 7e8),
              Stage("ortho", 6000, {"c7g": 55.0, "m7g": 56.0, "m7i": 61.0}, 1, 1.0, 1e8))
    return PlacementProblem(stages, offers, 180.0, 600.0, cap,
                            {"spot": quota, "on-demand": quota // 2},
                            {"eu-west-3": 0.0, "eu-west-1": 0.02})


@pytest.mark.parametrize("makespan_h", [4.0, 12.0])
def test_baselines_place_every_task_and_cost_at_least_the_lp(makespan_h: float) -> None:
    p = _problem()
    lp = solve_placement(p, makespan_h)
    for plan in (all_on_demand(p, makespan_h, "eu-west-3"),
                 all_spot_cheapest(p, makespan_h, "eu-west-3"), greedy_per_task(p, makespan_h)):
        for s in p.stages:
            assert plan.tasks_of(s.name) == s.n_tasks
        assert plan.cost_usd >= lp.relaxed_cost_usd * (1 - 1e-6)
    (od,) = all_on_demand(p, makespan_h, "eu-west-3").fleet
    assert od.offer.market == "on-demand" and od.offer.region == "eu-west-3"
    (spot,) = all_spot_cheapest(p, makespan_h, "eu-west-3").fleet
    assert spot.offer.market == "spot"


def test_greedy_respects_limits_or_says_so() -> None:
    p = _problem(cap=1, quota=16)
    with pytest.raises(InfeasiblePlanError, match="greedy placement leaves"):
        greedy_per_task(p, 2.0)


def _chains(n: int) -> tuple[PlacementProblem, object, list[object]]:
    """n independent chains stereo -> dsm, 1 h each task, one offer of 4 one-task slots::

        stereo:x:0_i -> dsm:x:0_i      (i = 0 .. n-1)
    """
    import networkx as nx

    from planner.dag import TaskCost
    from planner.order import depth_first_order
    from tests.unit.test_planner_placement import _offer

    cost = TaskCost({"f0": 3600.0}, 1, 1.0, 0)
    g = nx.DiGraph()
    for i in range(n):
        g.add_node(("stereo", "x", 0, i), cost=cost)
        g.add_node(("dsm", "x", 0, i), cost=cost)
        g.add_edge(("stereo", "x", 0, i), ("dsm", "x", 0, i), bytes=0)
    stages = (Stage("stereo", n, {"f0": 3600.0}, 1, 1.0, 0.0),
              Stage("dsm", n, {"f0": 3600.0}, 1, 1.0, 0.0))
    offer = _offer("four", "f0", 4, 16.0, 0.2)
    problem = PlacementProblem(stages, (offer,), 0.0, 7200.0, 50, {"spot": 1000}, {})
    return problem, g, depth_first_order(g)


def test_list_scheduler_places_every_task_and_rents_for_the_deadline() -> None:
    """8 chains of two 1 h tasks: 2 h needs 8 parallel slots, 8 h needs 2."""
    from planner.baselines import list_schedule

    problem, g, order = _chains(8)
    tight = list_schedule(problem, g, order, 2.0, "r1")
    loose = list_schedule(problem, g, order, 8.0, "r1")
    for plan in (tight, loose):
        assert plan.tasks_of("stereo") == 8 and plan.tasks_of("dsm") == 8
    assert sum(e.instances for e in tight.fleet) == 4  # 2 for stereo, 2 for dsm, 4 slots each
    assert sum(e.instances for e in loose.fleet) == 2  # one per stage: each holds 8 h of work


def test_baselines_take_the_larger_of_equally_priced_types() -> None:
    """Same price per vCPU, the larger size a shade riskier: a user takes the larger one."""
    from planner.placement import ClusterCosts
    from tests.unit.test_planner_placement import _offer

    small = _offer("f0.xlarge", "f0", 4, 16.0, 0.04, lam=0.001)
    large = _offer("f0.16xlarge", "f0", 64, 256.0, 0.64, lam=0.003)
    stage = Stage("ortho", 640, {"f0": 600.0}, 1, 1.0, 0.0)
    p = PlacementProblem((stage,), (small, large), 180.0, 600.0, 100, {"spot": 10_000}, {},
                         cluster=ClusterCosts(node_usd_per_h=0.011, launch_usd=0.045))
    for plan in (greedy_per_task(p, 4.0), all_spot_cheapest(p, 4.0, "r1")):
        assert [e.offer.instance.name for e in plan.fleet] == ["f0.16xlarge"]
        # costed with every item, though chosen by instance price
        assert plan.overheads_usd == pytest.approx(
            0.011 * (plan.fleet[0].busy_h + plan.fleet[0].instances * 180 / 3600)
            + 0.045 * plan.fleet[0].instances)
