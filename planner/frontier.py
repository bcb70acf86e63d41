"""From a campaign's DAG to a placement problem, its cost/makespan Pareto frontier, and a choice.

The LP of :mod:`planner.placement` is solved for one makespan at a time. The
frontier sweeps makespans geometrically between

- ``T_min``: the shortest makespan the limits allow (bisection on the LP
  relaxation's feasibility, from the critical path up), and
- ``T_flat``: the shortest makespan already as cheap as the deadline's plan
  (bisection on the relaxation's cost less the cluster's fixed hourly cost,
  which only grows with ``T``, and its S3 requests, which no ``T`` changes):
  beyond it cost no longer falls,

and keeps the non-dominated integer plans. The campaign's objective then picks
one: ``cheapest`` (least cost within the deadline, the faster on a 0.1 % tie),
``fastest`` (least makespan within the budget) or ``weighted`` (least
``cost + weight_usd_per_h * makespan``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import pulp

from planner.campaign import Campaign
from planner.catalog import PriceCatalog
from planner.dag import TaskCost
from planner.errors import CampaignError, InfeasiblePlanError
from planner.overheads import DagTraffic, requests_usd
from planner.placement import (
    ClusterCosts,
    PlacementPlan,
    PlacementProblem,
    Stage,
    _build,
    _solve,
    coefficients,
    solve_placement,
)
from planner.stages import STAGES, stage_of


@dataclass
class _StageSum:
    n: int = 0
    threads: int = 1
    mem_gib: float = 0.0
    bytes: float = 0.0
    cpu: dict[str, float] | None = None


def summarise_stages(graph: nx.DiGraph) -> tuple[Stage, ...]:
    """Per stage (:mod:`planner.stages`): task count, mean CPU-s per family, max threads and
    memory, mean bytes.

    Bytes moved per task are its raw input, the outputs it reads from other
    tasks and its own output: what crosses regions when it runs away from the data.
    """
    by_cost: dict[tuple[str, int], tuple[TaskCost, list[int]]] = {}
    nodes = graph._node
    sums: dict[str, _StageSum] = {}
    stage_by_op: dict[str, str] = {}
    for key, attrs in nodes.items():
        cost: TaskCost = attrs["cost"]
        stage = stage_by_op.get(key[0])
        if stage is None:
            stage = stage_by_op[key[0]] = stage_of(key[0])
        slot = by_cost.get((stage, id(cost)))
        if slot is None:
            by_cost[stage, id(cost)] = (cost, [1])
        else:
            slot[1][0] += 1
    edge_bytes = graph.graph.get("edge_bytes_by_stage")
    if edge_bytes is None:  # a graph not made by build_dag
        edge_bytes = {}
        for (_, v), d in graph.edges.items():
            edge_bytes[stage_of(v[0])] = edge_bytes.get(stage_of(v[0]), 0) + d["bytes"]
    for op, nbytes in edge_bytes.items():
        sums.setdefault(op, _StageSum()).bytes += nbytes
    for (op, _), (cost, count_box) in by_cost.items():
        count = count_box[0]
        acc = sums.setdefault(op, _StageSum())
        acc.n += count
        acc.cpu = acc.cpu or {}
        for fam, v in cost.cpu_s.items():
            acc.cpu[fam] = acc.cpu.get(fam, 0.0) + v * count
        acc.threads = max(acc.threads, cost.threads)
        acc.mem_gib = max(acc.mem_gib, cost.peak_mem_gib)
        acc.bytes += (cost.input_bytes + cost.output_bytes) * count
    out = []
    for op in graph.graph.get("stages", [st for st in STAGES if st in sums]):
        got = sums.get(op)
        if got is None or got.n == 0:
            continue
        cpu = {f: v / got.n for f, v in (got.cpu or {}).items()}
        out.append(Stage(op, got.n, cpu, got.threads, got.mem_gib, got.bytes / got.n))
    return tuple(out)


def build_problem(graph: nx.DiGraph, campaign: Campaign, catalog: PriceCatalog,
                  *, budget_usd: float | None = None, stages: Sequence[Stage] | None = None,
                  order: Sequence[Any] | None = None) -> PlacementProblem:
    """The placement problem of a campaign's DAG on the offers its compute section allows."""
    cc = campaign.compute
    offers = tuple(replace(o, interruptions_per_h=o.interruptions_per_h * cc.interruption_scale)
                   for o in catalog.offers(cc.regions, cc.families, cc.markets))
    if not offers:
        raise CampaignError(f"{campaign.source}: compute allows no priced offer (regions "
                            f"{list(cc.regions)}, families {list(cc.families)}, markets "
                            f"{list(cc.markets)})")
    stages = tuple(stages) if stages is not None else summarise_stages(graph)
    base = PlacementProblem(stages, offers, cc.startup_s, 0.0,
                            campaign.quotas.max_instances_per_type,
                            {"spot": campaign.quotas.spot_vcpus,
                             "on-demand": campaign.quotas.on_demand_vcpus},
                            {r: catalog.transfer_usd_per_gb(campaign.data_region, r)
                             for r in cc.regions},
                            budget_usd)
    cp = critical_path_by_op(graph, fastest_family(base), order)
    return replace(base, critical_path_s=cp, cluster=cluster_costs(catalog, cc.regions, graph))


def cluster_costs(catalog: PriceCatalog, regions: Sequence[str],
                  graph: nx.DiGraph) -> ClusterCosts:
    """The catalog's overheads (:mod:`planner.overheads`) as the LP prices them, with the
    S3 requests of what ``graph``'s tasks declare they read and publish."""
    o = catalog.overheads
    traffic = DagTraffic(0.0, 0.0, graph.number_of_nodes(), 0,
                         graph.graph.get("window_rows", {}), graph.graph.get("published_bytes", ()))
    return ClusterCosts(
        node_usd_per_h=o.ebs_usd_per_node_h,
        launch_usd=o.nat_usd_per_gb * o.setup_gb_through_nat_per_node,
        idle_s=o.idle_timeout_s,
        # the head node, its volume, NAT and endpoints, for the whole makespan
        fixed_usd_per_h={r: catalog.head_usd_per_h(r) + o.ebs_usd_per_node_h + o.cluster_usd_per_h
                         for r in regions},
        store_usd=requests_usd(o, traffic))


def fastest_family(problem: PlacementProblem) -> dict[str, str]:
    """Per stage, the allowed family with the shortest task that fits in memory."""
    out: dict[str, str] = {}
    for s in problem.stages:
        fits = [o for o in problem.offers if coefficients(s, o, problem).slots > 0]
        if fits:
            best = min(fits, key=lambda o: s.cpu_s.get(o.instance.family, math.inf))
            out[s.name] = best.instance.family
    return out


def critical_path_by_op(graph: nx.DiGraph, family_of_op: dict[str, str],
                        order: Sequence[Any] | None = None) -> float:
    """Longest chain of task runtimes, each task on its operation's given family.

    ``order`` (any topological order, e.g. the depth-first one already
    computed) saves a topological sort.
    """
    finish: dict[Any, float] = {}
    pred = graph._pred
    nodes = graph._node
    runtime: dict[int, float] = {}
    best = 0.0
    for key in (order if order is not None else nx.topological_sort(graph)):
        p = pred[key]
        start = max([finish[q] for q in p]) if p else 0.0
        cost = nodes[key]["cost"]
        r = runtime.get(id(cost))
        if r is None:
            fam = family_of_op.get(stage_of(key[0]))
            r = cost.cpu_s[fam] / cost.threads if fam in cost.cpu_s else 0.0
            runtime[id(cost)] = r
        end = start + r
        finish[key] = end
        best = max(best, end)
    return best


def _relaxed(problem: PlacementProblem, makespan_h: float) -> float | None:
    """Cost of the LP relaxation at ``makespan_h``, or None when infeasible."""
    model = _build(problem, makespan_h, integer=False)
    status, _ = _solve(model, False, 1e-6)
    if status != "Optimal":
        return None
    return float(pulp.value(model.prob.objective) or 0.0)


def shortest_makespan_h(problem: PlacementProblem, upper_h: float, *, rel_tol: float = 0.01
                        ) -> float:
    """The least makespan the limits allow (bisection), or an error naming the binding limit."""
    floor_h = (problem.critical_path_s + problem.startup_s) / 3600
    if upper_h < floor_h or _relaxed(problem, upper_h) is None:
        solve_placement(problem, upper_h)  # raises InfeasiblePlanError with the diagnosis
    lo, hi = floor_h, upper_h
    if _relaxed(problem, lo * (1 + 1e-9)) is not None:
        return lo * (1 + 1e-9)
    while hi - lo > rel_tol * hi:
        mid = 0.5 * (lo + hi)
        if _relaxed(problem, mid) is None:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True, slots=True)
class Frontier:
    points: tuple[PlacementPlan, ...]  # fastest first, cost strictly decreasing
    shortest_h: float
    flat_h: float


def pareto_frontier(problem: PlacementProblem, deadline_h: float, *, n_points: int = 12
                    ) -> Frontier:
    """Non-dominated (cost, makespan) integer plans between T_min and T_flat (module doc)."""
    t_min = shortest_makespan_h(problem, deadline_h)
    # T_flat on the cost without the fixed hourly term, which only grows with T, and the
    # requests, which no T changes (they would blunt the relative tolerance below).
    variable = replace(problem, cluster=replace(problem.cluster, fixed_usd_per_h={},
                                                store_usd=0.0))
    cheapest = _relaxed(variable, deadline_h)
    if cheapest is None:  # pragma: no cover - shortest_makespan_h raised already
        raise InfeasiblePlanError(f"no plan within {deadline_h:.2f} h")
    lo, hi = t_min, deadline_h
    if (_relaxed(variable, t_min) or math.inf) <= cheapest * 1.0005:
        hi = t_min
    while hi - lo > 0.005 * hi:
        mid = 0.5 * (lo + hi)
        c = _relaxed(variable, mid)
        if c is not None and c <= cheapest * 1.0005:
            hi = mid
        else:
            lo = mid
    t_flat = hi
    if t_flat <= t_min * 1.0001:
        grid = [t_min, deadline_h] if deadline_h > t_min else [t_min]
    else:
        ratio = (t_flat / t_min) ** (1.0 / (n_points - 1))
        grid = [t_min * ratio**k for k in range(n_points)]
        if deadline_h > t_flat * 1.0001:
            grid.append(deadline_h)
    plans: dict[float, PlacementPlan] = {}

    def solve_at(ts: list[float]) -> None:
        for t in ts:
            if t in plans:
                continue
            try:
                plans[t] = solve_placement(problem, t)
            except InfeasiblePlanError:
                continue  # integer counts can be infeasible just above the relaxed T_min

    solve_at(grid)
    points = _non_dominated(list(plans.values()))
    # Small campaigns have few distinct integer fleets: refine the gaps between
    # neighbouring points (geometric midpoints) until enough points or no gain.
    for _ in range(4):
        if len(points) >= n_points:
            break
        mids = [math.sqrt(a.makespan_limit_h * b.makespan_limit_h)
                for a, b in itertools.pairwise(points)]
        mids += [math.sqrt(points[-1].makespan_limit_h * max(t_flat, deadline_h))]
        before = len(points)
        solve_at(mids)
        points = _non_dominated(list(plans.values()))
        if len(points) == before:
            break
    return Frontier(tuple(points), t_min, t_flat)


def _non_dominated(plans: list[PlacementPlan]) -> list[PlacementPlan]:
    """Fastest first; each kept point strictly cheaper than every faster one."""
    plans = sorted(plans, key=lambda p: (p.makespan_h, p.cost_usd))
    points: list[PlacementPlan] = []
    for p in plans:
        if not points or p.cost_usd < points[-1].cost_usd * (1 - 1e-6):
            points.append(p)
    return points


def choose_plan(frontier: Frontier, objective: str, deadline_h: float,
                budget_usd: float | None, weight_usd_per_h: float) -> PlacementPlan:
    """The frontier point the objective asks for (module docstring)."""
    # The LP honoured makespan_limit_h; the estimate may overshoot it by one rounded task.
    pts = [p for p in frontier.points if p.makespan_limit_h <= deadline_h * (1 + 1e-9)]
    if not pts:
        raise InfeasiblePlanError(
            f"no plan meets the deadline of {deadline_h:.2f} h; the fastest takes "
            f"{min(p.makespan_h for p in frontier.points):.2f} h")
    if objective == "fastest":
        if budget_usd is None:
            raise CampaignError("objective: fastest needs budget_usd; expected a number > 0")
        within = [p for p in pts if p.cost_usd <= budget_usd]
        if not within:
            raise InfeasiblePlanError(
                f"budget {budget_usd:.2f} USD is below the cheapest plan within the deadline, "
                f"{min(p.cost_usd for p in pts):.2f} USD")
        return min(within, key=lambda p: (p.makespan_h, p.cost_usd))
    if objective == "weighted":
        return min(pts, key=lambda p: p.cost_usd + weight_usd_per_h * p.makespan_h)
    least = min(p.cost_usd for p in pts)
    ties = [p for p in pts if p.cost_usd <= least * 1.001]
    choice = min(ties, key=lambda p: p.makespan_h)
    if budget_usd is not None and choice.cost_usd > budget_usd:
        raise InfeasiblePlanError(
            f"budget {budget_usd:.2f} USD is below the cheapest plan within the deadline "
            f"of {deadline_h:.2f} h, {choice.cost_usd:.2f} USD")
    return choice
