"""Re-planning while a campaign runs: what is left, at the speed measured, re-solved.

The runtime reports a :class:`RunProgress` (elapsed time, tasks left per
stage, task seconds measured per stage against the calibrated ones, spot
interruptions seen per offer and the instance-hours they were seen over);
:func:`replan` returns the fleet for the rest of the campaign::

    slowdown_s   = measured task s / calibrated task s of stage s
                   (stages not measured yet take the work-weighted mean of those
                   that are; bounded to [1/4, 4])
    lambda'_o    = (k_o + lambda_o * H0) / (h_o + H0)      interruptions seen k_o over
                                                           h_o instance-hours, prior
                                                           weight H0 instance-hours
    start-up'    = start-up * STARTUP_MARGIN                 new nodes at their slowest
                                                           start-up (the simulator
                                                           draws 0.75-1.5x the campaign's)
    horizon      = deadline - elapsed
    slack        = horizon - start-up' - critical path * max slowdown

When the progress names the fleet running now (``current``) and that fleet
finishes the tasks left at the measured speed within the horizon (less the
safety share), its fluid finish times :data:`ON_TRACK_MARGIN` (the fluid model
ignores idle time and precedence), it is kept: the result is ``current``
itself, and nothing changes (no nodes started or stopped for a saving the
churn would eat). Otherwise the placement LP (:func:`planner.placement.solve_placement`) is solved
for the remaining tasks at their measured cost within ``horizon`` (less a
safety share), and at :data:`HORIZONS` shorter horizons down to 1.2 times the
critical path and a start-up; the cheapest by the LP's cost is kept. The
cluster's hourly costs (head node, NAT, endpoints) run for the horizon, so
the longest horizon is rarely the cheapest: planned at the time left alone,
a campaign planned to finish in half an hour against a day's deadline
would be re-planned onto one small node running for a day. In the spirit of "Can't Be Late" (Wu et al., NSDI 2024), spot
is used while the slack can absorb a lost instance (a start-up' plus the
longest task); once it cannot, the rest runs on demand (a campaign without
on-demand offers stays on spot, and the reason says the risk). When the LP finds
no fleet within the limits (instances per type, quotas) for the horizon left,
the horizon is stretched by ``STRETCH`` until one fits (at most
``STRETCHES`` times): the fastest fleet the limits allow, said in the reason.
The result is a plan the runtime enacts without stopping (its autoscaler
request changes: :func:`fleet_counts`). It can only be enacted on node types
the cluster has: :func:`replan_limits` lists every pool a re-plan may choose
(an offer of the region on which some stage fits), each with the most nodes
the limits allow it, and the nodes in all::

    max_instances(pool)   = min(max_instances_per_type, vcpu_quota[market] // vcpus)
    max_instances         = sum over markets of min(sum of its pools' max_instances,
                                                    vcpu_quota[market] // smallest vcpus)

``eochain plan`` writes them into ``plan.json`` (``replan``) and ``eochain
cluster-config`` renders a node type for each (``min_workers`` 0). The
budget caps no pool: a re-plan is judged by the deadline (the budget bounded
the whole campaign, not its rest: see :func:`replan`), so a cap by budget
would leave a re-plan the config cannot launch. The runtime's side (measurements kept,
re-plans rate-limited) is ``scheduler.fleet.replanning.LiveReplanner``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from planner.catalog import Offer
from planner.errors import InfeasiblePlanError, PlannerError
from planner.placement import (
    PlacementPlan,
    PlacementProblem,
    Stage,
    coefficients,
    solve_placement,
)
from planner.plan_document import ReplanLimits, ReplanPool

#: Prior weight of the catalog's hazard, in instance-hours.
PRIOR_INSTANCE_H = 24.0
SLOWDOWN_BOUNDS = (0.25, 4.0)
#: A re-plan's nodes are new: planned at the slowest start-up the simulator draws.
STARTUP_MARGIN = 1.5
#: Late: the horizon is stretched by this factor until a fleet within the limits fits it.
STRETCH = 1.25
STRETCHES = 12
#: Horizons tried between 1.2 x (critical path + start-up) and the time left.
HORIZONS = 6
#: The fleet running is kept while its fluid finish times this fits the horizon.
ON_TRACK_MARGIN = 1.25

Pool = tuple[str, str]  # (instance type, market)


@dataclass(frozen=True, slots=True)
class RunProgress:
    elapsed_s: float
    tasks_left: Mapping[str, int]                 # stage -> tasks not done
    measured_task_s: Mapping[str, float]          # stage -> mean measured seconds per task
    calibrated_task_s: Mapping[str, float]        # stage -> calibrated seconds, same family
    interruptions: Mapping[str, int] = field(default_factory=dict)   # offer key -> count
    instance_h: Mapping[str, float] = field(default_factory=dict)    # offer key -> exposure
    current: PlacementPlan | None = None          # the fleet running now, if known

    def __post_init__(self) -> None:
        if not (math.isfinite(self.elapsed_s) and self.elapsed_s >= 0):
            raise PlannerError(f"elapsed_s = {self.elapsed_s!r}, expected a number >= 0")
        for name, n in self.tasks_left.items():
            if n < 0:
                raise PlannerError(f"tasks_left[{name!r}] = {n}, expected >= 0")


@dataclass(frozen=True, slots=True)
class Replan:
    plan: PlacementPlan | None   # None: nothing is left to run
    horizon_h: float
    slowdown: Mapping[str, float]
    on_demand_only: bool
    reason: str


def slowdowns(progress: RunProgress, stages: tuple[Stage, ...]) -> dict[str, float]:
    """Measured over calibrated task time per stage (see the module docstring)."""
    lo, hi = SLOWDOWN_BOUNDS
    measured: dict[str, float] = {}
    for s in stages:
        m = progress.measured_task_s.get(s.name)
        c = progress.calibrated_task_s.get(s.name)
        if m is not None and c is not None and c > 0 and math.isfinite(m) and m > 0:
            measured[s.name] = min(hi, max(lo, m / c))
    weights = {s.name: s.n_tasks * max(s.cpu_s.values(), default=0.0) for s in stages}
    total = sum(weights[n] for n in measured)
    mean = (sum(measured[n] * weights[n] for n in measured) / total) if total > 0 else 1.0
    return {s.name: measured.get(s.name, mean) for s in stages}


def observed_hazards(offers: tuple[Offer, ...], progress: RunProgress) -> tuple[Offer, ...]:
    """Spot hazards updated with the interruptions seen (see the module docstring)."""
    return tuple(replace(o, interruptions_per_h=(
        progress.interruptions.get(o.key, 0) + o.interruptions_per_h * PRIOR_INSTANCE_H)
        / (progress.instance_h.get(o.key, 0.0) + PRIOR_INSTANCE_H))
        if o.market == "spot" else o for o in offers)


def planned_task_s(problem: PlacementProblem,
                   fleet: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Calibrated wall seconds per task of each stage on the plan's fleet.

    ``fleet`` maps an instance type to its planned tasks per stage; a stage's
    figure is the task-weighted mean of ``cpu_s[family] / threads`` over the
    types serving it (the fastest family where no planned type serves it).
    """
    family = {o.instance.name: o.instance.family for o in problem.offers}
    out: dict[str, float] = {}
    for s in problem.stages:
        if not s.cpu_s:
            continue
        weighted = [(n, s.cpu_s[family[t]]) for t, tasks in fleet.items()
                    if (n := tasks.get(s.name, 0)) > 0 and family.get(t) in s.cpu_s]
        total = sum(n for n, _ in weighted)
        cpu_s = (sum(n * c for n, c in weighted) / total if total
                 else min(s.cpu_s.values()))
        out[s.name] = cpu_s / s.threads
    return out


def fleet_counts(plan: PlacementPlan | None) -> dict[Pool, int]:
    """Nodes per (instance type, market) of a plan (a region's cluster: one region)."""
    out: dict[Pool, int] = {}
    for e in plan.fleet if plan is not None else ():
        if e.instances:
            pool = (e.offer.instance.name, e.offer.market)
            out[pool] = out.get(pool, 0) + e.instances
    return out


def replan_limits(problem: PlacementProblem) -> ReplanLimits:
    """The pools a re-plan of ``problem`` may choose and their caps (module docstring);
    ``problem``'s offers should be those of the cluster's region."""
    caps: dict[Pool, int] = {}
    smallest: dict[str, int] = {}
    for offer in problem.offers:
        if not any(coefficients(s, offer, problem).slots > 0 for s in problem.stages):
            continue  # no stage fits it: never chosen
        vcpus = offer.instance.vcpus
        quota = problem.vcpu_quota.get(offer.market)
        cap = min(problem.max_instances_per_type,
                  quota // vcpus if quota is not None else problem.max_instances_per_type)
        if cap > 0:
            pool = (offer.instance.name, offer.market)
            caps[pool] = max(caps.get(pool, 0), cap)
            smallest[offer.market] = min(smallest.get(offer.market, vcpus), vcpus)
    total = 0
    for market, least in smallest.items():
        in_market = sum(n for (_, m), n in caps.items() if m == market)
        quota = problem.vcpu_quota.get(market)
        total += in_market if quota is None else min(in_market, quota // least)
    return ReplanLimits(tuple(ReplanPool(t, m, n) for (t, m), n in sorted(caps.items())), total)


def replan(problem: PlacementProblem, progress: RunProgress, deadline_s: float, *,
           safety: float = 0.1) -> Replan:
    """The fleet for the rest of the campaign (see the module docstring)."""
    if not 0 <= safety < 1:
        raise PlannerError(f"safety = {safety!r}, expected 0 <= safety < 1")
    slow = slowdowns(progress, problem.stages)
    stages = tuple(
        replace(s, n_tasks=int(progress.tasks_left.get(s.name, 0)),
                cpu_s={f: v * slow[s.name] for f, v in s.cpu_s.items()})
        for s in problem.stages)
    horizon_s = deadline_s - progress.elapsed_s
    if not any(s.n_tasks for s in stages):
        return Replan(None, max(horizon_s, 0) / 3600, slow, False, "nothing left to run")
    offers = observed_hazards(problem.offers, progress)
    worst = max(slow.values())
    critical_s = problem.critical_path_s * worst
    longest_task_s = max((min(s.cpu_s.values()) / s.threads for s in stages if s.n_tasks),
                         default=0.0)
    startup_s = problem.startup_s * STARTUP_MARGIN
    slack_s = horizon_s - startup_s - critical_s
    short = slack_s < startup_s + longest_task_s
    on_demand = tuple(o for o in offers if o.market == "on-demand")
    on_demand_only = short and bool(on_demand)
    if on_demand_only:
        offers = on_demand
    # the budget bounded the whole campaign, not its rest: the plan is judged by its deadline
    new = replace(problem, stages=stages, offers=offers, startup_s=startup_s,
                  critical_path_s=critical_s, budget_usd=None)
    target_h = max(horizon_s * (1 - safety), 0) / 3600
    floor_h = (critical_s + startup_s) / 3600
    current = progress.current
    if current is not None and not on_demand_only:
        finish_h = fluid_finish_h(replace(problem, stages=stages, offers=offers), current)
        if finish_h * ON_TRACK_MARGIN <= target_h:
            return Replan(current, target_h, slow, False,
                          f"on track: the fleet running finishes the "
                          f"{sum(s.n_tasks for s in stages)} tasks left in about "
                          f"{finish_h:.2f} h of {horizon_s / 3600:.2f} h left; kept")
    if target_h < floor_h:
        # Late already: the fastest fleet the limits allow, on demand.
        target_h = max(floor_h, horizon_s / 3600)
        reason = (f"behind: {horizon_s / 3600:.2f} h left for a critical path of "
                  f"{floor_h:.2f} h at the measured speed; fastest fleet")
    else:
        reason = (f"{sum(s.n_tasks for s in stages)} tasks left in {horizon_s / 3600:.2f} h, "
                  f"measured speed x{worst:.2f} of the calibration at worst")
    plan = _fastest_within_limits(new, target_h)
    if plan.makespan_limit_h <= target_h * (1 + 1e-9):
        plan = _cheapest_horizon(new, plan, 1.2 * floor_h, target_h)
    if plan.makespan_limit_h > target_h * (1 + 1e-9):
        reason += (f"; no fleet within the limits finishes in {target_h:.2f} h: the fastest "
                   f"that does finishes in {plan.makespan_limit_h:.2f} h")
        target_h = plan.makespan_limit_h
    if on_demand_only:
        reason += "; slack too short for a spot loss: on demand"
    elif short:
        reason += ("; slack too short for a spot loss, and the campaign allows no on-demand "
                   "offer (compute.markets): spot, at risk")
    return Replan(plan, target_h, slow, on_demand_only, reason)


def fluid_finish_h(problem: PlacementProblem, fleet: PlacementPlan) -> float:
    """Hours ``fleet`` needs for ``problem``'s tasks, each stage shared as the fleet planned it.

    A stage's tasks go to the entries planned for it, in proportion to their
    planned tasks; the busiest entry's instance-hours per instance is the
    finish (inf when a stage with tasks left has no entry).
    """
    busy = [0.0] * len(fleet.fleet)
    for stage in problem.stages:
        if not stage.n_tasks:
            continue
        shares = [(k, e.tasks.get(stage.name, 0)) for k, e in enumerate(fleet.fleet)
                  if e.instances > 0 and e.tasks.get(stage.name, 0) > 0]
        total = sum(n for _, n in shares)
        if not total:
            return math.inf
        for k, n in shares:
            c = coefficients(stage, fleet.fleet[k].offer, problem)
            if c.slots <= 0:
                return math.inf
            busy[k] += stage.n_tasks * n / total * c.inst_h_per_task
    return max((b / e.instances for b, e in zip(busy, fleet.fleet, strict=True)
                if e.instances > 0), default=0.0)


def _cheapest_horizon(problem: PlacementProblem, best: PlacementPlan, low_h: float,
                      high_h: float) -> PlacementPlan:
    """``best`` (planned for ``high_h``) or a plan for a shorter horizon that costs less."""
    if not low_h < high_h:
        return best
    for k in range(HORIZONS - 1):
        h = low_h * (high_h / low_h) ** (k / (HORIZONS - 1))
        try:
            plan = solve_placement(problem, h)
        except InfeasiblePlanError:
            continue
        if plan.cost_usd < best.cost_usd * (1 - 1e-9):
            best = plan
    return best


def _fastest_within_limits(problem: PlacementProblem, target_h: float) -> PlacementPlan:
    """The cheapest plan for ``target_h``, else for the first stretched horizon that fits."""
    for _ in range(STRETCHES):
        try:
            return solve_placement(problem, target_h)
        except InfeasiblePlanError:
            target_h *= STRETCH
    return solve_placement(problem, target_h)
