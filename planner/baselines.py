"""Reference placements the LP is judged against, sized for the same makespan.

- :func:`all_on_demand`: every task on the one on-demand type (in the data
  region) that fits every stage and makes the campaign cheapest;
- :func:`all_spot_cheapest`: every task on the spot type (in the data region)
  with the lowest price per vCPU-hour among those that fit every stage;
- :func:`greedy_per_task`: stage by stage, in DAG order, each task to the
  cheapest offer per task (:func:`planner.placement.coefficients`, so memory
  packing, speed, rework and transfer included) that still has room under
  the per-type instance limit and the regional vCPU quota.

Each is sized like the LP's fleet: ``N_o = ceil(work_o / (T - start-up))``.
Single-type baselines ignore the per-type instance limit and quotas (they
would often be infeasible otherwise), which only flatters them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from planner.catalog import Offer
from planner.errors import InfeasiblePlanError
from planner.placement import FleetEntry, PlacementPlan, PlacementProblem, coefficients


def plan_from_assignment(problem: PlacementProblem, makespan_h: float,
                         tasks: Mapping[tuple[int, int], int], solver: str) -> PlacementPlan:
    """A plan from task counts per (stage index, offer index), with the minimal fleet."""
    startup_h = problem.startup_s / 3600
    work_h = makespan_h - startup_h
    fleet = []
    compute = transfer = startup = interruptions = finish = 0.0
    for j, offer in enumerate(problem.offers):
        per_stage: dict[str, int] = {}
        busy = 0.0
        for (i, jj), k in tasks.items():
            if jj != j or k <= 0:
                continue
            c = coefficients(problem.stages[i], offer, problem)
            per_stage[problem.stages[i].name] = k
            busy += k * c.inst_h_per_task
            compute += k * c.inst_h_per_task * offer.price_usd_per_h
            transfer += k * (c.usd_per_task - c.inst_h_per_task * offer.price_usd_per_h)
        if not per_stage:
            continue
        count = max(1, math.ceil(busy / work_h - 1e-9))
        fleet.append(FleetEntry(offer, count, per_stage, busy))
        startup += count * startup_h * offer.price_usd_per_h
        interruptions += offer.interruptions_per_h * busy
        finish = max(finish, busy / count + startup_h)
    total = compute + transfer + startup
    return PlacementPlan(makespan_h, max(finish, (problem.critical_path_s + problem.startup_s)
                                        / 3600), total, compute, transfer, startup, total,
                         tuple(fleet), solver, interruptions)


def _fits_all(problem: PlacementProblem, offer: Offer) -> bool:
    return all(coefficients(s, offer, problem).slots > 0 for s in problem.stages)


def _single(problem: PlacementProblem, makespan_h: float, offer_index: int, name: str
            ) -> PlacementPlan:
    tasks = {(i, offer_index): s.n_tasks for i, s in enumerate(problem.stages)}
    return plan_from_assignment(problem, makespan_h, tasks, name)


def all_on_demand(problem: PlacementProblem, makespan_h: float, data_region: str
                  ) -> PlacementPlan:
    """(a) Every task on the cheapest adequate on-demand type of the data region."""
    best: tuple[float, int] | None = None
    for j, o in enumerate(problem.offers):
        if o.market != "on-demand" or o.region != data_region or not _fits_all(problem, o):
            continue
        cost = sum(s.n_tasks * coefficients(s, o, problem).usd_per_task for s in problem.stages)
        if best is None or cost < best[0]:
            best = (cost, j)
    if best is None:
        raise InfeasiblePlanError(f"no on-demand type in {data_region} fits every stage")
    return _single(problem, makespan_h, best[1], "all-on-demand")


def all_spot_cheapest(problem: PlacementProblem, makespan_h: float, data_region: str
                      ) -> PlacementPlan:
    """(b) Every task on the spot type with the lowest USD per vCPU-hour that fits."""
    fits = [(o.price_usd_per_h / o.instance.vcpus, j) for j, o in enumerate(problem.offers)
            if o.market == "spot" and o.region == data_region and _fits_all(problem, o)]
    if not fits:
        raise InfeasiblePlanError(f"no spot type in {data_region} fits every stage")
    return _single(problem, makespan_h, min(fits)[1], "all-spot-cheapest")


def greedy_per_task(problem: PlacementProblem, makespan_h: float) -> PlacementPlan:
    """(c) Stage by stage, each task to the cheapest offer per task that has room left."""
    work_h = makespan_h - problem.startup_s / 3600
    room_h = {j: problem.max_instances_per_type * work_h for j in range(len(problem.offers))}
    quota_vcpu_h: dict[tuple[str, str], float] = {}
    for o in problem.offers:
        q = problem.vcpu_quota.get(o.market)
        quota_vcpu_h[o.region, o.market] = math.inf if q is None else q * work_h
    tasks: dict[tuple[int, int], int] = {}
    for i, stage in enumerate(problem.stages):
        ranked = sorted(
            (c.usd_per_task, j, c) for j, o in enumerate(problem.offers)
            if (c := coefficients(stage, o, problem)).slots > 0
            and c.effective_s <= work_h * 3600)
        left = stage.n_tasks
        for _, j, c in ranked:
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
