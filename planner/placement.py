"""Placement: how many instances of which type and market, serving which stages.

The DAG is summarised per stage ``s`` (an operation: stereo, dsm, ortho): ``n_s``
tasks, mean CPU-seconds per family, ``threads_s`` vCPUs and peak memory
``m_s`` per task, bytes read and written per task ``b_s``. An offer ``o`` is an
instance type in a region on a market (:class:`planner.catalog.Offer`) with
``v_o`` vCPUs, ``g_o`` GiB, price ``p_o`` per hour and interruption rate
``lambda_o`` per hour (0 on demand). ``d`` is the instance start-up delay.

Derived coefficients, for each stage and offer::

    k_so = min(floor(v_o / threads_s), floor(0.9 g_o / m_s))   tasks side by side
    t_so = cpu_s[s, family(o)] / threads_s                      seconds per task
    e_so = t_so * (1 + lambda_o * (t_so / 2 + d) / 3600)         with expected rework:
                                                                each interruption redoes
                                                                half a task, waits a start-up
    h_so = e_so / (3600 k_so)                                   instance-hours per task
    c_so = (p_o + q) h_so + b_s * transfer(data region <-> region(o))   USD per task
    u_o  = (p_o + q) (d + i) / 3600 + l                          USD per instance launched

The cluster around the workers (:mod:`planner.overheads`, :class:`ClusterCosts`)
is priced in: ``q`` per worker-hour (its EBS volume), ``l`` per worker
launched (its set-up download through the NAT gateway), ``i`` seconds billed
per worker after its work (the autoscaler's idle timeout), ``f_r`` per hour
of makespan in region ``r`` (head node, NAT gateway, interface endpoints) and
``S``, the campaign's S3 requests (what its tasks read and publish, whatever
the fleet: it moves no decision, but the budget and the plan's cost count it).
So a fleet of few large instances, which pays fewer volumes and downloads,
wins over many small ones of the same price per vCPU, and the frontier's
cost is not monotone in ``T``: the fixed hourly cost makes long horizons dear.

Model for a makespan ``T`` hours (one MILP per ``T``; the Pareto frontier
sweeps ``T``, which keeps the model linear)::

    variables   y_so >= 0 integer     tasks of stage s run on offer o
                N_o  >= 0 integer     instances of offer o
    minimise    sum_so c_so y_so + sum_o u_o N_o + T sum_r f_r z_r + S
    subject to  sum_o y_so = n_s                          every task placed once
                sum_s h_so y_so <= (T - d/3600) N_o       capacity of offer o
                y_so = 0 if k_so = 0 or e_so > T - d      memory; a task fits the window
                N_o <= max_instances_per_type             spot capacity / type limit
                sum_{o in r, market} v_o N_o <= quota     account vCPU quota per region
                N_o <= cap z_r(o),  sum_r z_r = 1,       one region per plan: a cluster
                z_r binary                               (and its VPC) lives in one region
                [sum cost <= budget]                      when a budget is set
    and T >= critical_path + d, checked before solving (the DAG's longest
    chain, each task on the fastest allowed family).

Instance-hours are billed per second and instances leave when their work is
done, so the cost counts the work plus one start-up per instance; the
discrete-event simulator (:mod:`planner.simulator`) measures what the fluid
model leaves out (idle tails, dependencies, interruptions).

Instance counts are always integer. Task counts ``y`` are integer for
stages of at most ``INTEGER_TASKS_UP_TO`` tasks; above that they are solved
continuous (integer ``y`` over hundreds of thousands of tasks only adds
symmetry that stalls branch and bound) and rounded by largest remainder,
which moves at most one task per (stage, offer). The MILP is solved with
HiGHS when available (CBC otherwise) and its LP relaxation too: the gap
between the final integer plan's cost and the relaxation bounds how much
rounding costs, and is reported with every plan. An infeasible model is re-solved with each
constraint group relaxed to name the one that binds.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pulp

from planner.catalog import Offer
from planner.errors import InfeasiblePlanError, SolverError

MEM_USABLE = 0.9
#: Stages with more tasks get continuous task counts, rounded afterwards (see the docstring).
INTEGER_TASKS_UP_TO = 500


@dataclass(frozen=True, slots=True)
class Stage:
    """A stage of the DAG as the LP sees it."""

    name: str
    n_tasks: int
    cpu_s: Mapping[str, float]
    threads: int
    peak_mem_gib: float
    transfer_bytes: float

    def __post_init__(self) -> None:
        if self.n_tasks < 0 or self.threads < 1 or self.peak_mem_gib < 0:
            raise InfeasiblePlanError(
                f"stage {self.name!r}: n_tasks={self.n_tasks}, threads={self.threads}, "
                f"peak_mem_gib={self.peak_mem_gib}; expected >= 0, >= 1, >= 0")


@dataclass(frozen=True, slots=True)
class ClusterCosts:
    """What the LP counts beyond worker compute (module docstring: ``q``, ``l``, ``f_r``)."""

    node_usd_per_h: float = 0.0
    launch_usd: float = 0.0
    fixed_usd_per_h: Mapping[str, float] = field(default_factory=dict)  # region -> USD/h
    idle_s: float = 0.0
    store_usd: float = 0.0  # S3 requests of the campaign's reads and writes (``S``)

    def __post_init__(self) -> None:
        values = [self.node_usd_per_h, self.launch_usd, self.idle_s, self.store_usd,
                  *self.fixed_usd_per_h.values()]
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise InfeasiblePlanError(
                f"cluster costs node_usd_per_h={self.node_usd_per_h!r}, launch_usd="
                f"{self.launch_usd!r}, idle_s={self.idle_s!r}, store_usd={self.store_usd!r}, "
                f"fixed_usd_per_h={dict(self.fixed_usd_per_h)!r}; expected numbers >= 0")


@dataclass(frozen=True, slots=True)
class PlacementProblem:
    stages: tuple[Stage, ...]
    offers: tuple[Offer, ...]
    startup_s: float
    critical_path_s: float
    max_instances_per_type: int
    vcpu_quota: Mapping[str, int]  # market -> vCPUs per region
    transfer_usd_per_gb: Mapping[str, float]  # offer region -> USD/GB between data and it
    budget_usd: float | None = None
    cluster: ClusterCosts = field(default_factory=ClusterCosts)

    def __post_init__(self) -> None:
        if self.startup_s < 0 or self.critical_path_s < 0 or self.max_instances_per_type < 1:
            raise InfeasiblePlanError(
                f"placement problem startup_s={self.startup_s}, critical_path_s="
                f"{self.critical_path_s}, max_instances_per_type={self.max_instances_per_type}; "
                "expected >= 0, >= 0, >= 1")
        if not self.offers:
            raise InfeasiblePlanError("placement problem has no offers; expected at least one "
                                      "instance type, region and market")


@dataclass(frozen=True, slots=True)
class Coefficients:
    slots: int
    task_s: float
    effective_s: float
    inst_h_per_task: float
    usd_per_task: float


def coefficients(stage: Stage, offer: Offer, problem: PlacementProblem) -> Coefficients:
    """The derived per-task figures of the module docstring for one (stage, offer)."""
    it = offer.instance
    by_mem = (math.floor(MEM_USABLE * it.mem_gib / stage.peak_mem_gib)
              if stage.peak_mem_gib > 0 else it.vcpus)
    slots = max(0, min(it.vcpus // stage.threads, by_mem))
    task_s = stage.cpu_s.get(it.family, math.inf) / stage.threads
    eff = task_s * (1.0 + offer.interruptions_per_h * (task_s / 2 + problem.startup_s) / 3600)
    if slots == 0 or not math.isfinite(eff):
        return Coefficients(0, task_s, eff, math.inf, math.inf)
    inst_h = eff / 3600 / slots
    transfer = stage.transfer_bytes / 1e9 * problem.transfer_usd_per_gb.get(offer.region, 0.0)
    node_price = offer.price_usd_per_h + problem.cluster.node_usd_per_h
    return Coefficients(slots, task_s, eff, inst_h, node_price * inst_h + transfer)


def launch_usd(offer: Offer, problem: PlacementProblem) -> float:
    """``u_o``: what one more instance of ``offer`` costs whatever its work (start-up, set-up)."""
    return ((offer.price_usd_per_h + problem.cluster.node_usd_per_h)
            * (problem.startup_s + problem.cluster.idle_s) / 3600 + problem.cluster.launch_usd)


@dataclass(frozen=True, slots=True)
class FleetEntry:
    offer: Offer
    instances: int
    tasks: Mapping[str, int]  # stage -> tasks
    busy_h: float  # instance-hours of work (with expected rework)


@dataclass(frozen=True, slots=True)
class PlacementPlan:
    makespan_limit_h: float
    makespan_h: float
    cost_usd: float
    compute_usd: float
    transfer_usd: float
    startup_usd: float
    relaxed_cost_usd: float
    fleet: tuple[FleetEntry, ...]
    solver: str
    expected_interruptions: float = 0.0
    overheads_usd: float = 0.0  # volumes, set-up downloads, and the fixed hourly costs over T

    def tasks_of(self, stage: str) -> int:
        return sum(e.tasks.get(stage, 0) for e in self.fleet)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """HiGHS prints a banner on stdout from C; keep stdout for the caller's output."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        os.dup2(sys.stderr.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _solver(mip: bool, gap_rel: float) -> tuple[pulp.LpSolver, str]:
    highs = pulp.HiGHS(msg=False, mip=mip, gapRel=gap_rel)
    if highs.available():
        return highs, "HiGHS"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        coin = pulp.COIN_CMD(msg=False, mip=mip, gapRel=gap_rel)
        if coin.available():
            return coin, "CBC"
        return pulp.PULP_CBC_CMD(msg=False, mip=mip, gapRel=gap_rel), "CBC"


@dataclass
class _Model:
    prob: pulp.LpProblem
    y: dict[tuple[int, int], pulp.LpVariable]
    n: dict[int, pulp.LpVariable]
    coef: dict[tuple[int, int], Coefficients]


def _build(problem: PlacementProblem, makespan_h: float, *, integer: bool,
           relax: frozenset[str] = frozenset()) -> _Model:
    work_h = makespan_h - problem.startup_s / 3600
    prob = pulp.LpProblem("placement", pulp.LpMinimize)
    cat = "Integer" if integer else "Continuous"
    y: dict[tuple[int, int], pulp.LpVariable] = {}
    n: dict[int, pulp.LpVariable] = {}
    coef: dict[tuple[int, int], Coefficients] = {}
    for j, offer in enumerate(problem.offers):
        cap = None if "instances" in relax else problem.max_instances_per_type
        n[j] = prob.add_variable(f"N_{j}", 0, cap, cat=cat)
        for i, stage in enumerate(problem.stages):
            c = coefficients(stage, offer, problem)
            if c.slots > 0 and c.effective_s <= work_h * 3600 and stage.n_tasks > 0:
                coef[i, j] = c
                y_cat = cat if stage.n_tasks <= INTEGER_TASKS_UP_TO else "Continuous"
                y[i, j] = prob.add_variable(f"y_{i}_{j}", 0, stage.n_tasks, cat=y_cat)
    fixed = problem.cluster.fixed_usd_per_h
    cost = (pulp.lpSum(coef[k].usd_per_task * v for k, v in y.items())
            + pulp.lpSum(launch_usd(o, problem) * n[j] for j, o in enumerate(problem.offers)))
    regions = sorted({o.region for o in problem.offers})
    z: dict[str, pulp.LpVariable] = {}
    if len(regions) > 1:
        z = {r: prob.add_variable(f"z_{k}", 0, 1, cat="Integer" if integer else "Continuous")
             for k, r in enumerate(regions)}
        cost += pulp.lpSum(fixed.get(r, 0.0) * makespan_h * z[r] for r in regions)
    else:
        cost += fixed.get(regions[0], 0.0) * makespan_h
    cost += problem.cluster.store_usd
    prob += cost
    if z:
        prob += pulp.lpSum(z.values()) == 1, "one_region"
        big = problem.max_instances_per_type
        if "instances" in relax:
            big = max(big, sum(s.n_tasks for s in problem.stages))
        for j, o in enumerate(problem.offers):
            prob += n[j] <= big * z[o.region], f"region_{j}"
    for i, stage in enumerate(problem.stages):
        prob += (pulp.lpSum(v for (si, _), v in y.items() if si == i) == stage.n_tasks,
                 f"placed_{i}")
    for j, n_j in n.items():
        terms = [coef[k].inst_h_per_task * v for k, v in y.items() if k[1] == j]
        if terms:
            prob += pulp.lpSum(terms) <= work_h * n_j, f"capacity_{j}"
    if "quota" not in relax:
        groups: dict[tuple[str, str], list[int]] = {}
        for j, o in enumerate(problem.offers):
            groups.setdefault((o.region, o.market), []).append(j)
        for (region, market), js in sorted(groups.items()):
            quota = problem.vcpu_quota.get(market)
            if quota is not None:
                prob += (pulp.lpSum(problem.offers[j].instance.vcpus * n[j] for j in js) <= quota,
                         f"quota_{region}_{market}")
    if problem.budget_usd is not None and "budget" not in relax:
        prob += cost <= problem.budget_usd, "budget"
    return _Model(prob, y, n, coef)


def _solve(model: _Model, integer: bool, gap_rel: float) -> tuple[str, str]:
    solver, name = _solver(integer, gap_rel)
    with _stdout_to_stderr():
        model.prob.solve(solver)
    return pulp.LpStatus[model.prob.status], name


def _diagnose(problem: PlacementProblem, makespan_h: float) -> str:
    stages = ", ".join(f"{s.name} ({s.n_tasks} tasks)" for s in problem.stages)
    for group, what in (
        ("budget", f"the budget of {problem.budget_usd} USD"),
        ("quota", "the account vCPU quota (" + ", ".join(
            f"{m} {q} vCPUs per region" for m, q in sorted(problem.vcpu_quota.items())) + ")"),
        ("instances", (f"the limit of {problem.max_instances_per_type} instances per type "
                       "and market (spot capacity)")),
    ):
        model = _build(problem, makespan_h, integer=False, relax=frozenset({group}))
        status, _ = _solve(model, False, 1e-6)
        if status == "Optimal":
            return (f"{what} binds: no fleet runs {stages} within {makespan_h:.2f} h; "
                    "raise it or the deadline")
    for i, s in enumerate(problem.stages):
        fits = [o for o in problem.offers if coefficients(s, o, problem).slots > 0]
        if not fits:
            return (f"stage {s.name!r} needs {s.peak_mem_gib:.1f} GiB and {s.threads} vCPUs "
                    "per task; no allowed instance type has that much")
        window = makespan_h * 3600 - problem.startup_s
        if all(coefficients(s, o, problem).effective_s > window for o in fits):
            return (f"one {s.name!r} task takes longer than the {makespan_h:.2f} h window on "
                    "every allowed type")
    return f"the deadline of {makespan_h:.2f} h is too short for {stages} with these limits"


def solve_placement(problem: PlacementProblem, makespan_h: float, *,
                    gap_rel: float = 1e-3) -> PlacementPlan:
    """The cheapest integer fleet finishing within ``makespan_h`` (see the module docstring)."""
    floor_h = (problem.critical_path_s + problem.startup_s) / 3600
    if makespan_h < floor_h:
        raise InfeasiblePlanError(
            f"deadline {makespan_h:.2f} h is shorter than the critical path, {floor_h:.2f} h "
            f"(longest chain of tasks {problem.critical_path_s / 3600:.2f} h + start-up "
            f"{problem.startup_s:.0f} s)")
    relaxed = _build(problem, makespan_h, integer=False)
    status, _ = _solve(relaxed, False, gap_rel)
    if status == "Infeasible":
        raise InfeasiblePlanError(_diagnose(problem, makespan_h))
    if status != "Optimal":
        raise SolverError(f"LP relaxation status {status!r} at makespan {makespan_h:.2f} h; "
                          "expected Optimal or Infeasible")
    relaxed_cost = float(pulp.value(relaxed.prob.objective) or 0.0)
    model = _build(problem, makespan_h, integer=True)
    status, solver = _solve(model, True, gap_rel)
    if status == "Infeasible":
        raise InfeasiblePlanError(
            _diagnose(problem, makespan_h) + " (integer instance counts)")
    if status != "Optimal":
        raise SolverError(f"MILP status {status!r} at makespan {makespan_h:.2f} h; expected "
                          "Optimal or Infeasible")
    return _plan(problem, model, makespan_h, relaxed_cost, solver)


def _round_tasks(problem: PlacementProblem, model: _Model) -> dict[tuple[int, int], int]:
    """Integer task counts: floors, then the remainder to the largest fractions."""
    out: dict[tuple[int, int], int] = {}
    for i, stage in enumerate(problem.stages):
        vals = {k: max(0.0, v.value() or 0.0) for k, v in model.y.items() if k[0] == i}
        floors = {k: math.floor(v + 1e-6) for k, v in vals.items()}
        left = stage.n_tasks - sum(floors.values())
        for k in sorted(vals, key=lambda k: floors[k] - vals[k])[:max(0, left)]:
            floors[k] += 1
        for k in sorted(vals, key=lambda k: vals[k] - floors[k])[:max(0, -left)]:
            floors[k] -= 1
        out.update(floors)
    return out


def _plan(problem: PlacementProblem, model: _Model, makespan_h: float, relaxed_cost: float,
          solver: str) -> PlacementPlan:
    startup_h = problem.startup_s / 3600
    counts = _round_tasks(problem, model)
    used_vcpus: dict[tuple[str, str], int] = {}
    for j, offer in enumerate(problem.offers):
        key = (offer.region, offer.market)
        used_vcpus[key] = used_vcpus.get(key, 0) + offer.instance.vcpus * round(
            model.n[j].value() or 0.0)
    entries: list[tuple[Offer, int, dict[str, int]]] = []
    for j, offer in enumerate(problem.offers):
        count = round(model.n[j].value() or 0.0)
        tasks = {problem.stages[i].name: k for (i, jj), k in counts.items() if jj == j and k}
        if not tasks:
            continue
        busy = sum(k * coefficients(problem.stages[i], offer, problem).inst_h_per_task
                   for (i, jj), k in counts.items() if jj == j and k)
        # Rounding tasks may overfill an offer by one task: add an instance if allowed.
        need = math.ceil(busy / max(makespan_h - startup_h, 1e-9) - 1e-9)
        key = (offer.region, offer.market)
        quota = problem.vcpu_quota.get(offer.market)
        extra_vcpus = (need - count) * offer.instance.vcpus
        if need > count and need <= problem.max_instances_per_type and (
                quota is None or used_vcpus[key] + extra_vcpus <= quota):
            used_vcpus[key] += extra_vcpus
            count = need
        entries.append((offer, count, tasks))
    plan = price_fleet(problem, makespan_h, entries, solver, relaxed_cost)
    for stage in problem.stages:
        placed = plan.tasks_of(stage.name)
        if placed != stage.n_tasks:
            raise SolverError(f"solver placed {placed} of {stage.n_tasks} {stage.name!r} tasks; "
                              "expected every task exactly once")
    return plan


def price_fleet(problem: PlacementProblem, makespan_limit_h: float,
                entries: Sequence[tuple[Offer, int, Mapping[str, int]]], solver: str,
                relaxed_cost_usd: float | None = None) -> PlacementPlan:
    """A plan from (offer, instances, tasks per stage), costed by the module docstring's model.

    The estimated makespan is the busiest offer's work per instance plus a
    start-up, or the critical path if longer; the fixed hourly costs run
    over it.
    """
    startup_h = problem.startup_s / 3600
    idle_h = problem.cluster.idle_s / 3600
    by_name = {s.name: s for s in problem.stages}
    fleet = []
    compute = transfer = startup = interruptions = node_h = finish_h = launches = 0.0
    for offer, count, tasks in entries:
        busy = 0.0
        for name, k in tasks.items():
            c = coefficients(by_name[name], offer, problem)
            busy += k * c.inst_h_per_task
            transfer += k * (c.usd_per_task - c.inst_h_per_task
                             * (offer.price_usd_per_h + problem.cluster.node_usd_per_h))
        compute += busy * offer.price_usd_per_h
        fleet.append(FleetEntry(offer, count, dict(tasks), busy))
        startup += count * (startup_h + idle_h) * offer.price_usd_per_h
        node_h += busy + count * (startup_h + idle_h)
        launches += count
        interruptions += offer.interruptions_per_h * busy
        finish_h = max(finish_h, busy / max(count, 1) + startup_h)
    makespan = max(finish_h, (problem.critical_path_s + problem.startup_s) / 3600)
    region = fleet[0].offer.region if fleet else ""
    overheads = (problem.cluster.node_usd_per_h * node_h + problem.cluster.launch_usd * launches
                 + problem.cluster.fixed_usd_per_h.get(region, 0.0) * makespan
                 + problem.cluster.store_usd)
    total = compute + transfer + startup + overheads
    return PlacementPlan(
        makespan_limit_h=makespan_limit_h,
        makespan_h=makespan,
        cost_usd=total,
        compute_usd=compute,
        transfer_usd=transfer,
        startup_usd=startup,
        relaxed_cost_usd=total if relaxed_cost_usd is None else relaxed_cost_usd,
        fleet=tuple(fleet),
        solver=solver,
        expected_interruptions=interruptions,
        overheads_usd=overheads,
    )
