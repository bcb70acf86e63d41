"""Reference placements the LP is judged against: what a user would run without eochain.

- :func:`all_on_demand`: every task on the one on-demand type (in the data
  region) that fits every stage and makes the campaign cheapest;
- :func:`all_spot_cheapest`: every task on the spot type (in the data region)
  with the lowest price per vCPU-hour among those that fit every stage;
- :func:`greedy_per_task`: stage by stage, in DAG order, each task to the
  cheapest offer per task (:func:`planner.placement.coefficients`, so memory
  packing, speed, rework and transfer included) that still has room under
  the per-type instance limit and the regional vCPU quota;
- :func:`list_schedule`: a precedence-aware list scheduler in the IC-PCP
  spirit (Abrishami et al., "Deadline-constrained workflow scheduling
  algorithms for IaaS clouds", FGCS 2013) with HEFT's priority (Topcuoglu et
  al., 2002): each stage on its cheapest offer per task in the data region;
  tasks by decreasing upward rank (longest path to a sink); each task's
  latest finish is the horizon less the longest path after it (its
  sub-deadline); it goes to the slot of a rented instance that frees first
  if it still meets that, and otherwise a new instance is rented. The fleet
  is the instances rented; the simulator then runs it like any other.

The first three are sized like the LP's fleet: ``N_o = ceil(work_o / (T - start-up))``.
Single-type baselines ignore the per-type instance limit and quotas (they
would often be infeasible otherwise), which only flatters them.

Baselines choose by what a user sees, the instance price (and transfer):
they do not know the cluster's per-node and hourly costs
(:class:`planner.placement.ClusterCosts`), which only eochain's LP prices.
Offers within :data:`TIE` of the cheapest price per task count as equal
(sizes of one family are priced per vCPU; a larger size's slightly higher
spot hazard makes no real difference), and among them they take the largest
instance: fewer nodes to run, and fewer volumes and set-up downloads to pay. Every plan is *costed* with every item
(:func:`planner.placement.price_fleet`), as eochain's are.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import networkx as nx

from planner.catalog import Offer
from planner.errors import InfeasiblePlanError
from planner.placement import (
    ClusterCosts,
    PlacementPlan,
    PlacementProblem,
    coefficients,
    price_fleet,
)
from planner.stages import stage_of

#: Relative difference in price per task below which a baseline sees offers as equal.
TIE = 0.02


def _user_ranking(rows: list[tuple[float, int, int]]) -> list[int]:
    """Indices of ``(usd_per_task, vcpus, index)`` rows: equal-priced largest first, then cost."""
    if not rows:
        return []
    best = min(r[0] for r in rows)

    def key(r: tuple[float, int, int]) -> tuple[bool, int, float, int]:
        near = r[0] <= best * (1 + TIE)
        return (not near, -r[1] if near else 0, r[0], r[2])

    return [r[2] for r in sorted(rows, key=key)]


def _as_user_sees(problem: PlacementProblem) -> PlacementProblem:
    """The problem without the cluster's costs: what the baselines choose by."""
    return replace(problem, cluster=ClusterCosts())


def plan_from_assignment(problem: PlacementProblem, makespan_h: float,
                         tasks: Mapping[tuple[int, int], int], solver: str) -> PlacementPlan:
    """A plan from task counts per (stage index, offer index), with the minimal fleet."""
    work_h = makespan_h - problem.startup_s / 3600
    entries: list[tuple[Offer, int, dict[str, int]]] = []
    for j, offer in enumerate(problem.offers):
        per_stage = {problem.stages[i].name: k for (i, jj), k in tasks.items()
                     if jj == j and k > 0}
        if not per_stage:
            continue
        busy = sum(k * coefficients(problem.stages[i], offer, problem).inst_h_per_task
                   for (i, jj), k in tasks.items() if jj == j and k > 0)
        entries.append((offer, max(1, math.ceil(busy / work_h - 1e-9)), per_stage))
    return price_fleet(problem, makespan_h, entries, solver)


def _fits_all(problem: PlacementProblem, offer: Offer) -> bool:
    return all(coefficients(s, offer, problem).slots > 0 for s in problem.stages)


def _single(problem: PlacementProblem, makespan_h: float, offer_index: int, name: str
            ) -> PlacementPlan:
    tasks = {(i, offer_index): s.n_tasks for i, s in enumerate(problem.stages)}
    return plan_from_assignment(problem, makespan_h, tasks, name)


def all_on_demand(problem: PlacementProblem, makespan_h: float, data_region: str
                  ) -> PlacementPlan:
    """(a) Every task on the cheapest adequate on-demand type of the data region."""
    seen = _as_user_sees(problem)
    rows = [(sum(s.n_tasks * coefficients(s, o, seen).usd_per_task for s in seen.stages),
             o.instance.vcpus, j) for j, o in enumerate(seen.offers)
            if o.market == "on-demand" and o.region == data_region and _fits_all(seen, o)]
    if not rows:
        raise InfeasiblePlanError(f"no on-demand type in {data_region} fits every stage")
    return _single(problem, makespan_h, _user_ranking(rows)[0], "all-on-demand")


def all_spot_cheapest(problem: PlacementProblem, makespan_h: float, data_region: str
                      ) -> PlacementPlan:
    """(b) Every task on the spot type with the lowest USD per vCPU-hour that fits."""
    fits = [(o.price_usd_per_h / o.instance.vcpus, o.instance.vcpus, j)
            for j, o in enumerate(problem.offers)
            if o.market == "spot" and o.region == data_region and _fits_all(problem, o)]
    if not fits:
        raise InfeasiblePlanError(f"no spot type in {data_region} fits every stage")
    return _single(problem, makespan_h, _user_ranking(fits)[0], "all-spot-cheapest")


def greedy_per_task(problem: PlacementProblem, makespan_h: float) -> PlacementPlan:
    """(c) Stage by stage, each task to the cheapest offer per task that has room left."""
    seen = _as_user_sees(problem)
    work_h = makespan_h - problem.startup_s / 3600
    room_h = {j: problem.max_instances_per_type * work_h for j in range(len(problem.offers))}
    quota_vcpu_h: dict[tuple[str, str], float] = {}
    for o in problem.offers:
        q = problem.vcpu_quota.get(o.market)
        quota_vcpu_h[o.region, o.market] = math.inf if q is None else q * work_h
    tasks: dict[tuple[int, int], int] = {}
    for i, stage in enumerate(seen.stages):
        coef = {j: c for j, o in enumerate(seen.offers)
                if (c := coefficients(stage, o, seen)).slots > 0
                and c.effective_s <= work_h * 3600}
        left = stage.n_tasks
        for j in _user_ranking([(c.usd_per_task, seen.offers[j].instance.vcpus, j)
                                for j, c in coef.items()]):
            c = coef[j]
            if left == 0:
                break
            o = problem.offers[j]
            key = (o.region, o.market)
            fit = min(room_h[j] / c.inst_h_per_task,
                      quota_vcpu_h[key] / (c.inst_h_per_task * o.instance.vcpus))
            k = min(left, math.floor(fit + 1e-9))
            if k <= 0:
                continue
            tasks[i, j] = tasks.get((i, j), 0) + k
            room_h[j] -= k * c.inst_h_per_task
            quota_vcpu_h[key] -= k * c.inst_h_per_task * o.instance.vcpus
            left -= k
        if left:
            raise InfeasiblePlanError(
                f"greedy placement leaves {left} {stage.name!r} tasks without room within "
                f"{makespan_h:.2f} h")
    return plan_from_assignment(problem, makespan_h, tasks, "greedy")


def list_schedule(problem: PlacementProblem, graph: nx.DiGraph, order: Sequence[Any],
                  makespan_h: float, data_region: str) -> PlacementPlan:
    """(d) The precedence-aware list scheduler of the module docstring, at horizon ``makespan_h``."""
    seen = _as_user_sees(problem)
    work_s = makespan_h * 3600 - problem.startup_s
    stage_index = {s.name: i for i, s in enumerate(seen.stages)}
    # Per stage: its offers, cheapest per task first (then largest), with slots per instance.
    ranked: list[list[tuple[int, int]]] = []
    for stage in seen.stages:
        coef = {j: c for j, o in enumerate(seen.offers)
                if o.region == data_region
                and (c := coefficients(stage, o, seen)).slots > 0 and c.effective_s <= work_s}
        if not coef:
            raise InfeasiblePlanError(
                f"list scheduler: no offer in {data_region} runs a {stage.name!r} task within "
                f"{makespan_h:.2f} h")
        ranked.append([(j, coef[j].slots) for j in _user_ranking(
            [(c.usd_per_task, seen.offers[j].instance.vcpus, j) for j, c in coef.items()])])
    n = len(order)
    index = {k: t for t, k in enumerate(order)}
    stage_of_task = [stage_index[stage_of(k[0])] for k in order]
    nodes, pred, succ = graph._node, graph._pred, graph._succ
    family = [seen.offers[j].instance.family for j in range(len(seen.offers))]
    first = [family[r[0][0]] for r in ranked]
    runtime = [nodes[k]["cost"].runtime_s(first[stage_of_task[t]]) for t, k in enumerate(order)]
    tail = [0.0] * n                       # longest path from the task's start to a sink
    for t in range(n - 1, -1, -1):
        after = [tail[index[s]] for s in succ[order[t]]]
        tail[t] = runtime[t] + (max(after) if after else 0.0)
    finish = [0.0] * n
    slots: list[list[tuple[float, int]]] = [[] for _ in seen.stages]   # (free at, instance)
    rented: list[tuple[int, int]] = []                               # (stage, offer)
    per_offer = [0] * len(seen.offers)
    for t in sorted(range(n), key=lambda t: (-tail[t], t)):
        s = stage_of_task[t]
        cost = nodes[order[t]]["cost"]
        earliest = max((finish[index[p]] for p in pred[order[t]]), default=0.0)
        latest = work_s - (tail[t] - runtime[t])
        heap = slots[s]
        start = max(earliest, heap[0][0]) if heap else math.inf
        if start + runtime[t] > latest:  # rent the cheapest offer with room left, if any
            room = [(j, k) for j, k in ranked[s] if per_offer[j] < problem.max_instances_per_type]
            if room:
                j, k = room[0]
                rented.append((s, j))
                per_offer[j] += 1
                for _ in range(k):
                    heapq.heappush(heap, (0.0, len(rented) - 1))
                start = max(earliest, heap[0][0])
        if not heap:
            raise InfeasiblePlanError(
                f"list scheduler: the limit of {problem.max_instances_per_type} instances "
                f"per type leaves no room for {seen.stages[s].name!r} tasks")
        _, inst = heapq.heappop(heap)
        finish[t] = start + cost.runtime_s(family[rented[inst][1]])
        heapq.heappush(heap, (finish[t], inst))
    # Pooled fleet: each offer's instances serve every stage it was rented for, the
    # stage's tasks shared among offers by their instances' slots.
    entries: dict[int, tuple[int, dict[str, int]]] = {}
    for s, stage in enumerate(seen.stages):
        mine = [j for ss, j in rented if ss == s]
        weight = {j: mine.count(j) * dict(ranked[s])[j] for j in set(mine)}
        total = sum(weight.values())
        left = stage.n_tasks
        for m, j in enumerate(sorted(weight)):
            share = left if m == len(weight) - 1 else round(stage.n_tasks * weight[j] / total)
            left -= share
            count, tasks = entries.get(j, (0, {}))
            tasks[stage.name] = tasks.get(stage.name, 0) + share
            entries[j] = (count + mine.count(j), tasks)
    return price_fleet(problem, makespan_h,
                       [(problem.offers[j], c, t) for j, (c, t) in entries.items()],
                       "list-scheduler")
