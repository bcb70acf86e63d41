"""Placement LP: equals a brute-force oracle on small problems (one region per plan), names the
binding constraint."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.catalog import InstanceType, Offer, load_catalog
from planner.errors import InfeasiblePlanError
from planner.placement import PlacementProblem, Stage, coefficients, solve_placement

pytestmark = pytest.mark.unit


def _offer(name: str, family: str, vcpus: int, mem: float, price: float, lam: float = 0.0,
           region: str = "r1", market: str = "spot") -> Offer:
    return Offer(InstanceType(name, family, vcpus, mem, "x86_64", "general"), region, market,
                 price, lam, "none" if lam == 0 else "<5%")


def _problem(stages: list[Stage], offers: list[Offer], *, startup_s: float = 0.0,
             cap: int = 100, quota: int = 10_000, cp_s: float = 0.0,
             transfer: dict[str, float] | None = None) -> PlacementProblem:
    return PlacementProblem(tuple(stages), tuple(offers), startup_s, cp_s, cap,
                            {"spot": quota, "on-demand": quota}, transfer or {})


def oracle(problem: PlacementProblem, makespan_h: float) -> float | None:
    """Least cost over every integer assignment of tasks to offers, minimal fleet for each."""
    work_h = makespan_h - problem.startup_s / 3600
    per_stage = []
    for s in problem.stages:
        ok = [j for j, o in enumerate(problem.offers)
              if (c := coefficients(s, o, problem)).slots > 0 and c.effective_s <= work_h * 3600]
        per_stage.append(list(itertools.combinations_with_replacement(ok, s.n_tasks)))
    best = None
    for assignment in itertools.product(*per_stage):
        load = [0.0] * len(problem.offers)
        cost = 0.0
        for s, combo in zip(problem.stages, assignment):
            for j in combo:
                c = coefficients(s, problem.offers[j], problem)
                load[j] += c.inst_h_per_task
                cost += c.usd_per_task
        counts = [math.ceil(h / work_h - 1e-9) for h in load]
        if any(n > problem.max_instances_per_type for n in counts):
            continue
        if len({o.region for n, o in zip(counts, problem.offers) if n}) > 1:
            continue  # one region per plan (one cluster)
        quota_use: dict[tuple[str, str], int] = {}
        for n, o in zip(counts, problem.offers):
            key = (o.region, o.market)
            quota_use[key] = quota_use.get(key, 0) + n * o.instance.vcpus
        if any(v > problem.vcpu_quota[m] for (_, m), v in quota_use.items()):
            continue
        cost += sum(n * o.price_usd_per_h * problem.startup_s / 3600
                    for n, o in zip(counts, problem.offers))
        best = cost if best is None else min(best, cost)
    return best


@st.composite
def small_problems(draw: st.DrawFn) -> tuple[PlacementProblem, float]:
    """2-4 offers, 1-2 stages of 1-5 tasks, each task a sizeable share of the window."""
    makespan_h = draw(st.floats(1.0, 8.0))
    startup_s = draw(st.sampled_from([0.0, 120.0, 600.0]))
    offers = []
    for j in range(draw(st.integers(2, 4))):
        offers.append(_offer(
            f"t{j}", draw(st.sampled_from(["f0", "f1"])), draw(st.sampled_from([2, 4, 8])),
            float(draw(st.sampled_from([4, 8, 16]))), draw(st.floats(0.05, 1.0)),
            draw(st.sampled_from([0.0, 0.01, 0.2])), draw(st.sampled_from(["r1", "r2"])),
            draw(st.sampled_from(["spot", "on-demand"]))))
    stages = []
    for i in range(draw(st.integers(1, 2))):
        threads = draw(st.sampled_from([1, 2]))
        cpu = (makespan_h * 3600 - startup_s) * threads * draw(st.floats(0.3, 0.95))
        stages.append(Stage(f"s{i}", draw(st.integers(1, 5)),
                            {"f0": cpu, "f1": cpu * draw(st.floats(0.7, 1.3))},
                            threads, draw(st.floats(1.5, 7.0)), draw(st.floats(0, 5e9))))
    problem = _problem(stages, offers, startup_s=startup_s, cap=draw(st.integers(1, 2)),
                       quota=draw(st.sampled_from([8, 16, 1000])),
                       transfer={"r1": 0.0, "r2": 0.02})
    return problem, makespan_h


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_lp_equals_brute_force_oracle(case: tuple[PlacementProblem, float]) -> None:
    problem, makespan_h = case
    expected = oracle(problem, makespan_h)
    if expected is None:
        with pytest.raises(InfeasiblePlanError):
            solve_placement(problem, makespan_h, gap_rel=1e-9)
        return
    plan = solve_placement(problem, makespan_h, gap_rel=1e-9)
    assert plan.cost_usd == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert plan.cost_usd >= 0 and plan.compute_usd >= 0 and plan.transfer_usd >= 0
    for s in problem.stages:
        assert plan.tasks_of(s.name) == s.n_tasks  # every task placed exactly once
    assert plan.cost_usd >= plan.relaxed_cost_usd - 1e-9


def test_coefficients_by_hand() -> None:
    """4 threads, 11 GiB per task on 16 vCPU / 32 GiB: memory allows 2 tasks side by side."""
    stage = Stage("stereo", 10, {"f0": 4000.0}, 4, 11.0, 1e9)
    offer = _offer("big", "f0", 16, 32.0, 0.36, lam=0.1, region="r2")
    c = coefficients(stage, offer, _problem([stage], [offer], startup_s=120.0,
                                            transfer={"r2": 0.02}))
    assert c.slots == 2 and c.task_s == 1000.0
    assert c.effective_s == pytest.approx(1000.0 * (1 + 0.1 * (500 + 120) / 3600))
    assert c.inst_h_per_task == pytest.approx(c.effective_s / 3600 / 2)
    assert c.usd_per_task == pytest.approx(0.36 * c.inst_h_per_task + 0.02)


def test_deadline_shorter_than_critical_path_is_named() -> None:
    stage = Stage("dsm", 4, {"f0": 3600.0}, 1, 1.0, 0.0)
    p = _problem([stage], [_offer("a", "f0", 4, 16.0, 0.1)], startup_s=0.0, cp_s=2.6 * 3600)
    with pytest.raises(InfeasiblePlanError,
                       match=r"deadline 2.00 h is shorter than the critical path, 2.60 h"):
        solve_placement(p, 2.0)


@pytest.mark.parametrize(
    ("cap", "quota", "fragment"),
    [(1, 10_000, "limit of 1 instances per type"), (100, 4, "vCPU quota")],
)
def test_binding_limit_is_named(cap: int, quota: int, fragment: str) -> None:
    stage = Stage("ortho", 64, {"f0": 3600.0}, 1, 1.0, 0.0)
    p = _problem([stage], [_offer("a", "f0", 4, 16.0, 0.1)], cap=cap, quota=quota)
    with pytest.raises(InfeasiblePlanError, match=fragment):
        solve_placement(p, 2.0)


def test_memory_binding_is_named() -> None:
    stage = Stage("stereo", 2, {"f0": 100.0}, 1, 64.0, 0.0)
    p = _problem([stage], [_offer("a", "f0", 4, 16.0, 0.1)])
    with pytest.raises(InfeasiblePlanError, match="needs 64.0 GiB"):
        solve_placement(p, 5.0)


def test_large_stage_rounds_to_whole_tasks_on_real_catalog() -> None:
    """Continuous task counts (above 500 tasks) are rounded: still every task exactly once."""
    offers = load_catalog().offers(["eu-west-3"], ["c7g", "m7g"])
    stages = [Stage("stereo", 1237, {"c7g": 1500.0, "m7g": 1540.0}, 4, 11.0, 7e8),
              Stage("ortho", 9871, {"c7g": 55.0, "m7g": 56.0}, 1, 1.0, 1e8)]
    p = _problem(stages, offers, startup_s=180.0, cap=8, quota=512)
    plan = solve_placement(p, 6.0)
    assert plan.tasks_of("stereo") == 1237 and plan.tasks_of("ortho") == 9871
    assert all(e.instances <= 8 for e in plan.fleet)
    # stereo needs 11 GiB per 4-thread task: never on c7g below 8xlarge, where it fits 2 per 16 vCPU
    for e in plan.fleet:
        if "stereo" in e.tasks:
            assert coefficients(stages[0], e.offer, p).slots > 0


def test_objectives_pick_their_frontier_point() -> None:
    from planner.frontier import Frontier, choose_plan
    from planner.placement import PlacementPlan

    def pt(h: float, usd: float) -> PlacementPlan:
        return PlacementPlan(h, h, usd, usd, 0.0, 0.0, usd, (), "test")

    f = Frontier((pt(2.0, 90.0), pt(4.0, 50.0), pt(8.0, 40.0), pt(12.0, 39.99)), 2.0, 12.0)
    assert choose_plan(f, "cheapest", 10.0, None, 0.0).makespan_h == 8.0
    # 12 h saves 0.01 USD (< 0.1 %): the faster 8 h plan wins the tie
    assert choose_plan(f, "cheapest", 24.0, None, 0.0).makespan_h == 8.0
    assert choose_plan(f, "fastest", 24.0, 60.0, 0.0).makespan_h == 4.0
    assert choose_plan(f, "weighted", 24.0, None, 5.0).makespan_h == 4.0  # 50+20 < 40+40
    with pytest.raises(InfeasiblePlanError, match="no plan meets the deadline of 1.00 h"):
        choose_plan(f, "cheapest", 1.0, None, 0.0)
    with pytest.raises(InfeasiblePlanError, match="budget 30.00 USD is below"):
        choose_plan(f, "fastest", 24.0, 30.0, 0.0)


def test_cluster_costs_favour_few_large_instances_and_are_counted() -> None:
    """Same price per vCPU: volumes and set-up downloads per node make one large node cheaper.

    8 tasks of 1 vCPU-hour each in 2 h: eight 1-vCPU nodes for 1 h, or one 8-vCPU node.
    """
    from planner.placement import ClusterCosts

    stage = Stage("ortho", 8, {"f0": 3600.0}, 1, 0.5, 0.0)
    small = _offer("small", "f0", 1, 4.0, 0.05)
    large = _offer("large", "f0", 8, 32.0, 0.40)
    bare = solve_placement(_problem([stage], [small, large]), 2.0)
    assert bare.overheads_usd == 0.0
    cluster = ClusterCosts(node_usd_per_h=0.01, launch_usd=0.05, fixed_usd_per_h={"r1": 0.3})
    p = PlacementProblem((stage,), (small, large), 0.0, 0.0, 100, {"spot": 1000}, {},
                         cluster=cluster)
    plan = solve_placement(p, 2.0)
    (entry,) = plan.fleet
    assert entry.offer.instance.name == "large" and entry.instances == 1
    # one node-hour of volume, one launch, and the fixed cost over the plan's 1 h
    assert plan.overheads_usd == pytest.approx(0.01 * 1.0 + 0.05 + 0.3 * plan.makespan_h)
    assert plan.cost_usd == pytest.approx(0.40 + plan.overheads_usd)


def test_the_campaigns_requests_are_counted_and_bound_by_the_budget() -> None:
    """The S3 requests (``S``) move no decision, but the plan's cost and its budget count them:
    8 vCPU-hours on one 8-vCPU node for $0.40, plus $2 of requests."""
    from planner.placement import ClusterCosts

    stage = Stage("ortho", 8, {"f0": 3600.0}, 1, 0.5, 0.0)
    large = _offer("large", "f0", 8, 32.0, 0.40)

    def problem(budget_usd: float | None) -> PlacementProblem:
        return PlacementProblem((stage,), (large,), 0.0, 0.0, 100, {"spot": 1000}, {},
                                budget_usd, cluster=ClusterCosts(store_usd=2.0))

    plan = solve_placement(problem(None), 2.0)
    assert plan.cost_usd == pytest.approx(0.40 + 2.0) and plan.overheads_usd == pytest.approx(2.0)
    assert solve_placement(problem(2.5), 2.0).fleet == plan.fleet
    with pytest.raises(InfeasiblePlanError, match="budget"):
        solve_placement(problem(1.0), 2.0)  # the workers alone would fit $1
