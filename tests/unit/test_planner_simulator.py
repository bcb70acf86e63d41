"""The campaign simulator: seeded, every task done, lost work redone after interruptions."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import networkx as nx
import pytest

from planner.catalog import InstanceType, Offer
from planner.dag import TaskCost
from planner.errors import PlannerError
from planner.order import depth_first_order
from planner.placement import FleetEntry, PlacementPlan, PlacementProblem, Stage
from planner.simulator import CampaignSimulator, RunJob, RunPool

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
        g.add_node(("stereo", "x", 0, i), cost=COST)
        g.add_node(("dsm", "x", 0, i), cost=COST)
        g.add_edge(("stereo", "x", 0, i), ("dsm", "x", 0, i), bytes=10)
    g.graph["operations"] = ("stereo", "dsm")
    return g


def _offer(lam: float) -> Offer:
    return Offer(InstanceType("t", "f0", 2, 8.0, "x86_64", "general"), "r", "spot", 0.36, lam,
                 "<5%")


def _setup(lam: float, n: int = 20) -> tuple[CampaignSimulator, PlacementPlan]:
    g = _chain_graph(n)
    stages = (Stage("stereo", n, {"f0": 600.0}, 1, 1.0, 0.0), Stage("dsm", n, {"f0": 600.0}, 1, 1.0, 0.0))
    offer = _offer(lam)
    problem = PlacementProblem(stages, (offer,), 60.0, 1200.0, 10, {"spot": 100}, {})
    plan = PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0,
                         (FleetEntry(offer, 3, {"stereo": n, "dsm": n}, 3.0),), "test")
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
                           (FleetEntry(plan.fleet[0].offer, 2, {"stereo": 20}, 1.0),), "test")
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


def _pool_setup(lam: float, reclaim_share: float, n: int = 20,
                instances: int = 4) -> tuple[CampaignSimulator, PlacementPlan]:
    from planner.spot import SpotModel

    g = _chain_graph(n)
    stages = (Stage("stereo", n, {"f0": 600.0}, 1, 1.0, 0.0), Stage("dsm", n, {"f0": 600.0}, 1, 1.0, 0.0))
    offer = _offer(lam)
    problem = PlacementProblem(stages, (offer,), 60.0, 1200.0, 10, {"spot": 100}, {})
    plan = PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0,
                         (FleetEntry(offer, instances, {"stereo": n, "dsm": n}, 3.0),), "test")
    spot = SpotModel(mean_instance_lifetime_h=24.0, reclaim_share=reclaim_share,
                     capacity_outage_mean_s=0.0)
    return CampaignSimulator(g, depth_first_order(g), problem, spot=spot), plan


def test_reclaims_are_correlated_within_a_pool_and_spreading_decorrelates() -> None:
    """Same marginal hazard; one pool loses instances together, three zones do not."""
    sim, plan = _pool_setup(0.5, reclaim_share=1.0, instances=6)
    together = [sim.run(plan, seed=s, zones=1) for s in range(40)]
    spread = [sim.run(plan, seed=s, zones=3) for s in range(40)]
    per_event_1 = [r.interruptions for r in together if r.interruptions]
    per_event_3 = [r.interruptions for r in spread if r.interruptions]
    # with a reclaim share of 1 a single-zone pool loses all running instances at once
    assert max(per_event_1) >= 4
    assert sum(per_event_3) / len(per_event_3) < sum(per_event_1) / len(per_event_1)


def test_outputs_lost_with_a_node_are_redone() -> None:
    """a_i's output lives on the node that ran it: a reclaim before b_i starts redoes a_i."""
    sim, plan = _pool_setup(4.0, reclaim_share=1.0, instances=2)
    runs = [sim.run(plan, seed=s) for s in range(30)]
    hit = [r for r in runs if r.interruptions]
    assert hit
    # more tasks redone than were running when reclaimed (2 instances x 2 vCPUs = 4 at most
    # per event): lost intermediates count too
    assert any(r.redone_tasks > 4 * r.interruptions / 2 for r in hit)
    for r in runs:  # and every task still completes exactly once in the end
        assert r.makespan_s > 0


def test_runtime_error_spreads_makespan() -> None:
    sim, plan = _setup(0.0)
    exact = {sim.run(plan, seed=s, runtime_sigma=0.0).makespan_s for s in range(10)}
    noisy = [sim.run(plan, seed=s, runtime_sigma=0.0, runtime_error=0.3).makespan_s
             for s in range(10)]
    assert max(noisy) > max(exact) and min(noisy) < min(exact)


def test_overheads_are_counted_per_item() -> None:
    from planner.overheads import Overheads

    g = _chain_graph(10)
    stages = (Stage("stereo", 10, {"f0": 600.0}, 1, 1.0, 0.0), Stage("dsm", 10, {"f0": 600.0}, 1, 1.0, 0.0))
    offer = _offer(0.0)
    problem = PlacementProblem(stages, (offer,), 60.0, 1200.0, 10, {"spot": 100}, {})
    plan = PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0,
                         (FleetEntry(offer, 2, {"stereo": 10, "dsm": 10}, 3.0),), "test")
    o = Overheads()
    sim = CampaignSimulator(g, depth_first_order(g), problem, overheads=o,
                            head_usd_per_h={"r": 0.2})
    one = sim.run(plan, seed=0, runtime_sigma=0.0, zones=1)
    three = sim.run(plan, seed=0, runtime_sigma=0.0, zones=3)
    h = one.makespan_s / 3600
    assert one.overheads_usd["head"] == pytest.approx(0.2 * h)
    # the workers' volumes and the head's, for the makespan
    assert one.overheads_usd["volumes"] == pytest.approx(
        o.ebs_usd_per_node_h * (one.node_s / 3600 + h))
    assert one.overheads_usd["network"] == pytest.approx(
        (o.nat_gateway_usd_per_h
         + o.interface_endpoints * o.interface_endpoint_zones * o.interface_endpoint_usd_per_h) * h
        + o.nat_usd_per_gb * o.setup_gb_through_nat_per_node * one.instances_launched)
    assert one.overheads_usd["inter_az"] == 0.0 and one.inter_az_bytes == 0.0
    # the bytes that crossed zones, priced (which ones crossed: the next test)
    assert three.inter_az_bytes % 10 == 0 and three.inter_az_bytes <= 100
    assert three.overheads_usd["inter_az"] == pytest.approx(
        o.inter_az_usd_per_gb * three.inter_az_bytes / 1e9)
    # each node is billed through the idle timeout after it leaves (none was reclaimed)
    assert one.idle_usd == pytest.approx(
        one.instances_launched * o.idle_timeout_s / 3600 * offer.price_usd_per_h)
    assert sim.run(plan, seed=0, runtime_sigma=0.0, idle_timeout_s=0.0).idle_usd == 0.0
    assert one.cost_usd == pytest.approx(one.compute_usd + one.idle_usd + one.transfer_usd
                                         + sum(one.overheads_usd.values()))


def test_inter_zone_bytes_are_the_inputs_read_from_another_zone() -> None:
    r"""Two nodes in two zones run four stereo tiles; the dsm task reads two across zones.

        a0  a1  a2  a3     10 bytes each; node 0 (zone 0) runs a0 a1, node 1 (zone 1) a2 a3
          \  \  /  /
             d             runs on one of them: 20 bytes cross zones
    """
    from planner.overheads import Overheads

    g = nx.DiGraph()
    sink = ("dsm", "x", 0, 0)
    g.add_node(sink, cost=COST)
    for i in range(4):
        g.add_node(("stereo", "x", 0, i), cost=COST)
        g.add_edge(("stereo", "x", 0, i), sink, bytes=10)
    g.graph["operations"] = ("stereo", "dsm")
    stages = (Stage("stereo", 4, {"f0": 600.0}, 1, 1.0, 0.0),
              Stage("dsm", 1, {"f0": 600.0}, 1, 1.0, 0.0))
    offer = _offer(0.0)
    problem = PlacementProblem(stages, (offer,), 60.0, 1200.0, 10, {"spot": 100}, {})

    def plan(instances: int) -> PlacementPlan:
        return PlacementPlan(1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, (
            FleetEntry(offer, instances, {"stereo": 4, "dsm": 1}, 1.0),), "test")

    o = Overheads()
    sim = CampaignSimulator(g, depth_first_order(g), problem, overheads=o)
    spread = sim.run(plan(2), seed=0, runtime_sigma=0.0, zones=3)
    assert spread.inter_az_bytes == 20
    assert spread.overheads_usd["inter_az"] == pytest.approx(o.inter_az_usd_per_gb * 20e-9)
    # one zone, or one node however many zones: nothing crosses
    assert sim.run(plan(2), seed=0, runtime_sigma=0.0, zones=1).inter_az_bytes == 0
    assert sim.run(plan(1), seed=0, runtime_sigma=0.0, zones=3).inter_az_bytes == 0


def _one_node(sim: CampaignSimulator, n: int, instances: int) -> PlacementPlan:
    offer = sim.problem.offers[0]
    return PlacementPlan(2.0, 2.0, 1.0, 1.0, 0.0, 0.0, 1.0, (
        FleetEntry(offer, instances, {"stereo": n, "dsm": n}, 3.0),), "test")


def test_a_replanned_run_adds_nodes_and_keeps_the_deadline_the_static_plan_misses() -> None:
    """80 tasks of 600 s, twice slower than calibrated, on one 2-vCPU node: 13.3 h > 8 h."""
    from planner.replan import RunProgress, replan

    sim, _ = _setup(0.0, n=40)
    plan = _one_node(sim, 40, 1)
    deadline_s = 8 * 3600
    static = sim.run(plan, seed=0, runtime_sigma=0.0, slowdown=2.0)
    assert static.makespan_s > deadline_s and static.replans == 0
    seen: list[RunProgress] = []

    def replanner(progress: RunProgress) -> PlacementPlan | None:
        seen.append(progress)
        return replan(sim.problem, progress, deadline_s).plan

    live = sim.run(plan, seed=0, runtime_sigma=0.0, slowdown=2.0, replanner=replanner,
                   replan_every_s=1800)
    assert live.makespan_s <= deadline_s < static.makespan_s
    assert live.replans >= 1 and live.instances_launched > 1
    first = seen[0]
    assert first.elapsed_s == 1800
    # what the run measured: tasks twice as long as calibrated, the tasks not done yet
    assert first.measured_task_s["stereo"] == pytest.approx(2 * first.calibrated_task_s["stereo"])
    assert 0 < sum(first.tasks_left.values()) < 80
    assert sum(seen[-1].tasks_left.values()) < sum(first.tasks_left.values())


def test_a_replan_to_fewer_nodes_retires_the_surplus() -> None:
    """Three nodes, then a re-plan to one at 30 min: the run ends later and costs less."""
    sim, _ = _setup(0.0, n=40)
    three, one = _one_node(sim, 40, 3), _one_node(sim, 40, 1)
    kept = sim.run(three, seed=0, runtime_sigma=0.0)
    shrunk = sim.run(three, seed=0, runtime_sigma=0.0, replanner=lambda progress: one,
                     replan_every_s=1800)
    assert shrunk.replans >= 1 and shrunk.instances_launched == 3
    assert shrunk.makespan_s > kept.makespan_s
    # two nodes stop after ~30 min instead of running to the end
    assert shrunk.node_s < kept.node_s


def test_the_event_loop_repeats_the_reference_figures_to_the_last_digit() -> None:
    # Figures of the simulator before its event loop was tuned (commit 78b6683), on a
    # stormy pool over two zones: a faster loop must not change a single result.
    sim, plan = _setup(3.0, 40)
    runs = [sim.run(plan, seed, runtime_error=0.2, zones=2) for seed in (0, 2)]
    assert [(r.cost_usd, r.makespan_s, r.interruptions, r.redone_tasks, r.inter_az_bytes)
            for r in runs] == [(3.5886721126222145, 21320.328002308877, 17, 41, 20.0),
                               (4.458943056399625, 29816.800227230542, 21, 63, 40.0)]


def test_runs_in_forked_workers_equal_runs_in_this_process() -> None:
    sim, plan = _setup(3.0)
    here = sim.simulate(plan, 4, seed=3, runtime_error=0.2, zones=2)
    forked = sim.simulate(plan, 4, seed=3, runtime_error=0.2, zones=2, workers=2)
    assert forked.runs == here.runs
    assert sum(r.interruptions for r in here.runs) > 0
    with pytest.raises(PlannerError, match="workers = 0"):
        sim.simulate(plan, 2, workers=0)



def _ignore(signum: int, frame: object) -> None:
    """A SIGTERM handler that returns."""


def test_a_pool_s_workers_die_on_sigterm_whatever_handler_their_parent_has() -> None:
    """Terminating the pool kills its workers by SIGTERM's default action even where this
    process handles SIGTERM (``eochain run`` raises SystemExit, which in a busy worker would
    run the parent's exit code; a handler that returns would leave it alive)."""
    sim, plan = _setup(0.5)
    before = signal.signal(signal.SIGTERM, _ignore)
    try:
        with RunPool(sim, 2) as pool:
            assert pool._pool is not None
            in_worker = pool._pool.apply(signal.getsignal, (signal.SIGTERM,))
            assert pool.map([RunJob(plan, 1), RunJob(plan, 2)]) == [
                sim.run(plan, 1), sim.run(plan, 2)]
    finally:
        signal.signal(signal.SIGTERM, before)
    assert in_worker == signal.SIG_DFL
    assert not multiprocessing.active_children()


def _exit(signum: int, frame: object) -> None:
    """A SIGTERM handler that raises, as ``eochain run``'s and Ray's drivers' do."""
    raise SystemExit(128 + signum)


def _hung(signum: int, frame: object) -> None:
    raise AssertionError("pools made and closed took over 60 s: a pool's join hung")


#: While true, every process this one forks sends itself SIGTERM as it starts.
_TERM_AT_FORK = [False]


def _term_at_fork() -> None:
    if _TERM_AT_FORK[0]:
        os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_child=_term_at_fork)


def test_a_pool_worker_signalled_as_it_forks_dies_and_never_runs_its_parent_s_code(
        tmp_path: Path) -> None:
    """A pool closed at once (a planning budget already spent) signals workers that may not
    have reached their worker loop yet. Each such worker dies; none runs on in its parent's
    stack. Before the fix, the parent's SIGTERM handler raised in ``multiprocessing``'s
    fork code, whose ``finally`` then failed, and the child went on running its parent's
    caller (here, this test). The signal is sent by each child to itself as it is
    forked, the earliest it can come."""
    sim, _ = _setup(0.5)
    parent = os.getpid()
    escaped = tmp_path / "escaped"
    before = signal.signal(signal.SIGTERM, _exit)
    # an escaped worker leaves its parent joining it for good: fail instead (a fork does
    # not inherit the alarm)
    alarm_before = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)
    _TERM_AT_FORK[0] = True
    try:
        for _ in range(10):
            try:
                with RunPool(sim, 2):
                    pass  # terminated as soon as made
            finally:
                if os.getpid() != parent:  # a worker got here: say so, and stop it now
                    escaped.write_text(str(os.getpid()))
                    os._exit(0)
    finally:
        _TERM_AT_FORK[0] = False
        signal.alarm(0)
        signal.signal(signal.SIGALRM, alarm_before)
        signal.signal(signal.SIGTERM, before)
    assert not escaped.exists(), "a pool worker ran on in its parent's code"
    assert not multiprocessing.active_children()


def test_the_compiled_run_equals_the_python_loop_to_the_last_digit() -> None:
    """A run without a replanner goes to the numba kernel (:mod:`planner.run_kernel`); one
    with a replanner that never changes the plan stays in the Python loop. On stormy spot
    pools (reclaims, lost outputs redone, replacements past the kernel's first room for
    nodes), over one and three zones, both give the same result, field for field."""
    import dataclasses

    from planner.calibration import load_calibration
    from planner.campaign import parse_campaign
    from planner.catalog import load_catalog
    from planner.estimate import campaign_dag
    from planner.frontier import build_problem
    from planner.placement import price_fleet, solve_placement
    from planner.spot import SpotModel

    catalog = load_catalog()
    campaign = parse_campaign({
        "name": "storm",
        "inputs": {"survey": {"pairs": 2, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 8}},
        "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
        "tiling": {"tile_px": 2048, "margin_px": 64},
        "data": {"region": "eu-west-3", "bucket": "b"}, "deadline_h": 3,
        "compute": {"regions": ["eu-west-3"], "families": ["m7g", "c7g"]}})
    g = campaign_dag(campaign, load_calibration(), catalog.families)
    problem = build_problem(g, campaign, catalog)
    spot = sorted((o for o in problem.offers if o.market == "spot"),
                  key=lambda o: (o.instance.family, o.instance.vcpus))
    c7g = [o for o in spot if o.instance.family == "c7g"]
    m7g = [o for o in spot if o.instance.family == "m7g"]
    two = price_fleet(problem, 1.0, [(c7g[0], 3, {"stereo": 20, "dsm": 10, "ortho": 100}),
                                     (m7g[1], 2, {"stereo": 14, "dsm": 24, "ortho": 196})], "test")

    def stormy(plan: PlacementPlan, per_h: float) -> PlacementPlan:
        return dataclasses.replace(plan, fleet=tuple(
            dataclasses.replace(e, offer=dataclasses.replace(e.offer, interruptions_per_h=per_h))
            for e in plan.fleet))

    sim = CampaignSimulator(g, depth_first_order(g), problem, overheads=catalog.overheads,
                            spot=SpotModel(reclaim_share=0.7, capacity_outage_mean_s=120.0))
    runs = []
    for plan in (stormy(solve_placement(problem, 0.2), 40.0), stormy(two, 20.0)):
        for seed in range(6):
            for zones in (1, 3):
                compiled = sim.run(plan, seed, runtime_error=0.3, zones=zones)
                looped = sim.run(plan, seed, runtime_error=0.3, zones=zones,
                                 replanner=lambda _: None)
                assert compiled == looped, (seed, zones)
                runs.append((plan, compiled))
    assert sum(r.redone_tasks for _, r in runs) > 0
    assert any(r.inter_az_bytes > 0 for _, r in runs)
    # more nodes than the kernel first makes room for (2 per planned node + 16): run again
    assert any(r.instances_launched > 2 * sum(e.instances for e in p.fleet) + len(p.fleet) + 16
               for p, r in runs)
