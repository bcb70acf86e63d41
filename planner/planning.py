"""Plan a campaign end to end: DAG, order, placement problem, Pareto frontier, judged choice.

``plan_campaign`` runs the stages in turn and times each:

1. ``dag``: the footprint-estimated task DAG (:mod:`planner.estimate`);
2. ``order``: depth-first priorities (:mod:`planner.order`);
3. ``problem``: per-stage summary, offers, critical path (:mod:`planner.frontier`);
4. ``frontier``: the cost/makespan Pareto frontier (:mod:`planner.placement` MILPs);
5. ``simulate`` (simulation in the loop): every frontier plan within the
   limits is screened with a few seeded runs of :mod:`planner.simulator`
   (precedence, idle time, correlated spot reclaims and capacity outages,
   lost intermediates, a runtime error of +/- ``runtime_error`` on the
   calibration, and every overhead of :mod:`planner.overheads`); among those
   meeting the deadline in at least ``target_hit_rate`` of the runs and the
   budget by their *mean simulated* cost, the objective's best by simulated
   figures is chosen (mean cost, p95 makespan, or the weighted sum), on one
   zone or spread over ``SPREAD_ZONES`` zones, whichever scores better (the
   spread pays inter-zone traffic and gets independent spot pools), and in
   one zone over two spot pools (:func:`spread_over_pools`: half of a
   multi-node spot entry moved to another size of its family, a pool of
   its own, at the same price per vCPU) when the fleet allows. Screening
   a candidate stops at the deadline miss that puts ``target_hit_rate`` out
   of its reach (at 95 % over 4 runs, the first), as its other runs could
   not change the choice. When none qualifies the planner refuses, naming the closest plan: a plan never
   exceeds its budget or misses its deadline silently. The chosen plan is
   then simulated ``simulate_runs`` times on fresh seeds for the report.

Time budget: simulation is most of the work at scale (a run of a million
tasks takes about half a second), so ``plan_campaign`` aims to finish within
``time_budget_s`` (default :data:`PLAN_BUDGET_S`). After the other stages it
times the first screening run (in a process that has not loaded numba's run
kernel yet, after an untimed one: loading it takes far longer than a run of a
small campaign) and, if every requested run would not fit in
what is left, makes fewer: the chosen plan's ``simulate_runs`` come first
(they are what the plan states: its headline cost, makespan and on-time
share), the runs left after them go to screening, spread evenly over the
(candidate, zones) pairs in the order the objective favours (fewer runs
each before fewer pairs; the first pair's first run is always made). Later runs can be slower than the first (another
plan, another fleet), so a pair is screened and a final run made only while
it fits by the slowest run seen so far. Runs after the first go ``workers``
at a time in forked processes (:class:`planner.simulator.RunPool`; by default
one per core this process may use): each run seeds its own generators, so the
results do not depend on the workers, only how many runs fit in the budget
does. It always makes at least that first
run, and never fewer silently: :class:`SimulationEffort` (``simulation`` in ``plan.json``)
says how many runs were requested and made. With ``time_budget_s=None``, or
when everything fits, the runs made do not depend on timing and seeded plans
repeat exactly.

The plan's headline cost and makespan are the simulated ones (mean cost,
p95 makespan); the LP's own figures are kept beside them under ``lp``. The
result converts to the ``plan.json`` document the runtime reads.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import networkx as nx

from planner.calibration import Calibration
from planner.campaign import Campaign, validate_against_catalog
from planner.catalog import PriceCatalog
from planner.errors import CampaignError, InfeasiblePlanError
from planner.estimate import campaign_dag
from planner.frontier import Frontier, build_problem, choose_plan, pareto_frontier
from planner.order import depth_first_order
from planner.placement import PlacementPlan, PlacementProblem, price_fleet
from planner.plan_document import PLAN_FORMAT, plan_document_from_dict
from planner.replan import replan_limits
from planner.run_kernel import kernel_loaded
from planner.simulator import (
    CampaignSimulator,
    RunJob,
    RunPool,
    RunResult,
    SimulationSummary,
    available_cores,
)

#: Zones a spread fleet uses (one subnet per zone in terraform/).
SPREAD_ZONES = 3
#: Default +/- share by which real task times may differ from the calibration.
RUNTIME_ERROR = 0.3
#: Seconds ``plan_campaign`` aims to take, simulation included (issue 12: the
#: command plans a million tasks in under a minute, campaign loading and output included:
#: about 2 s beside this budget on the 1,024,352-task benchmark campaign).
PLAN_BUDGET_S = 50.0


@dataclass(frozen=True, slots=True)
class SimulationEffort:
    """Simulated runs requested and made (fewer only when the time budget was short)."""

    requested_final_runs: int
    final_runs: int                 # fresh-seed runs of the chosen plan (0: its screening runs)
    requested_screening_runs: int   # per (candidate, zones) pair
    screening_runs: int
    pairs_available: int            # (candidate, zones) pairs within the limits
    pairs_screened: int
    budget_s: float | None
    first_run_s: float              # measured: what the allocation was based on
    workers: int = 1                # processes that made the runs after the first

    @property
    def limited(self) -> bool:
        return (self.final_runs < self.requested_final_runs
                or self.screening_runs < self.requested_screening_runs
                or self.pairs_screened < self.pairs_available)

    def as_dict(self) -> dict[str, Any]:
        return {"limited_by_time_budget": self.limited, "budget_s": self.budget_s,
                "first_run_s": round(self.first_run_s, 3), "workers": self.workers,
                "final_runs": self.final_runs, "requested_final_runs": self.requested_final_runs,
                "screening_runs_per_pair": self.screening_runs,
                "requested_screening_runs_per_pair": self.requested_screening_runs,
                "pairs_screened": self.pairs_screened, "pairs_available": self.pairs_available}


@dataclass(frozen=True, slots=True)
class CampaignPlan:
    campaign: Campaign
    deadline_h: float
    budget_usd: float | None
    problem: PlacementProblem
    frontier: Frontier
    chosen: PlacementPlan
    simulation: SimulationSummary | None
    timings_s: dict[str, float]
    n_tasks: int
    n_edges: int
    catalog_date: str
    calibration_status: str
    zones: int = 1
    runtime_error: float = 0.0
    screened: tuple[tuple[PlacementPlan, SimulationSummary], ...] = ()
    effort: SimulationEffort | None = None


def candidates(frontier: Frontier, objective: str, deadline_h: float,
               budget_usd: float | None, weight_usd_per_h: float) -> list[PlacementPlan]:
    """Frontier plans meeting the limits, the objective's favourite (by the LP) first."""
    first = choose_plan(frontier, objective, deadline_h, budget_usd, weight_usd_per_h)
    rest = [p for p in frontier.points if p is not first
            and p.makespan_limit_h <= deadline_h * (1 + 1e-9)
            and (budget_usd is None or p.cost_usd <= budget_usd)]
    if objective == "weighted":
        rest.sort(key=lambda p: p.cost_usd + weight_usd_per_h * p.makespan_h)
    elif objective == "fastest":
        rest.sort(key=lambda p: p.makespan_h)
    else:
        rest.sort(key=lambda p: p.cost_usd)
    return [first, *rest]


def _simulated_score(objective: str, weight_usd_per_h: float, s: SimulationSummary) -> float:
    if objective == "fastest":
        return s.p95_makespan_s
    if objective == "weighted":
        return s.mean_cost_usd + weight_usd_per_h * s.mean_makespan_s / 3600
    return s.mean_cost_usd


def plan_campaign(
    campaign: Campaign,
    catalog: PriceCatalog,
    calibration: Calibration,
    *,
    deadline_h: float | None = None,
    budget_usd: float | None = None,
    simulate_runs: int = 20,
    seed: int = 0,
    target_hit_rate: float = 0.95,
    runtime_error: float = RUNTIME_ERROR,
    max_candidates: int = 12,
    n_points: int = 12,
    time_budget_s: float | None = PLAN_BUDGET_S,
    graph: nx.DiGraph | None = None,
    workers: int | None = None,
) -> CampaignPlan:
    """Plan ``campaign`` (see the module docstring); ``deadline_h``/``budget_usd`` override it.

    ``graph``: the campaign's task DAG when known exactly (the products as the
    runtime surveyed them, :func:`planner.estimate.surveyed_dag`); by default
    it is estimated from the footprints (:func:`planner.estimate.campaign_dag`).
    ``workers``: processes that simulate at once (:class:`planner.simulator.RunPool`;
    by default the cores this process may use); the runs made, not their results,
    depend on it when the time budget is short.
    """
    if time_budget_s is not None and not time_budget_s > 0:
        raise CampaignError(f"time_budget_s {time_budget_s!r}, expected a number > 0 or None")
    start = time.perf_counter()
    validate_against_catalog(campaign, catalog)
    deadline = campaign.deadline_h if deadline_h is None else deadline_h
    budget = campaign.budget_usd if budget_usd is None else budget_usd
    if not deadline > 0:
        raise CampaignError(f"deadline {deadline!r} h, expected a number > 0")
    # A million-task DAG is millions of long-lived, acyclic objects: the cyclic garbage
    # collector is paused while they are built, and they are frozen out of its later
    # passes during simulation (each pass would otherwise walk them all again).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _plan(campaign, catalog, calibration, deadline, budget, simulate_runs, seed,
                     target_hit_rate, runtime_error, max_candidates, n_points, time_budget_s,
                     start, collecting, graph, available_cores() if workers is None else workers)
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


def _plan(campaign: Campaign, catalog: PriceCatalog, calibration: Calibration,
          deadline: float, budget: float | None, simulate_runs: int, seed: int,
          target_hit_rate: float, runtime_error: float, max_candidates: int, n_points: int,
          time_budget_s: float | None, start: float, collecting: bool,
          graph: nx.DiGraph | None, workers: int) -> CampaignPlan:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if graph is None:
        graph = campaign_dag(campaign, calibration, catalog.families)
    timings["dag"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    order = depth_first_order(graph)
    timings["order"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    problem = build_problem(graph, campaign, catalog, order=order)
    timings["problem"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frontier = pareto_frontier(problem, deadline, n_points=n_points)
    timings["frontier"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    chosen: PlacementPlan | None = None
    summary: SimulationSummary | None = None
    zones = 1
    screened: list[tuple[PlacementPlan, SimulationSummary]] = []
    effort: SimulationEffort | None = None
    pool = candidates(frontier, campaign.objective, deadline, budget,
                      campaign.weight_usd_per_h)[:max_candidates]
    if simulate_runs > 0:
        regions = sorted({o.region for o in problem.offers})
        sim = CampaignSimulator(graph, order, problem, spot=catalog.spot_model,
                                overheads=catalog.overheads,
                                head_usd_per_h={r: catalog.head_usd_per_h(r) for r in regions})
        gc.freeze()
        if collecting:
            gc.enable()  # simulation runs make short-lived cycles (their closures)
        pairs = [(p, z) for p in pool for z in (1, SPREAD_ZONES)
                 if z == 1 or any(e.offer.market == "spot" for e in p.fleet)]
        pairs += [(v, 1) for p in pool if (v := spread_over_pools(problem, p)) is not None]
        # The first screening run, timed: the allocation below is based on it. A process's
        # first run also loads (or compiles) the run kernel: 0.38 s where this run of a
        # small campaign takes a millisecond, which cut the runs of every plan made in a
        # fresh process (`eochain plan`) to fit a budget it was far from. Such a process
        # makes that run once untimed.
        if not kernel_loaded():
            sim.run(pool[0], seed + 10_000, runtime_error=runtime_error)
        t1 = time.perf_counter()
        first = sim.run(pool[0], seed + 10_000, runtime_error=runtime_error)
        first_s = time.perf_counter() - t1
        with RunPool(sim, workers) as runner:
            left_s = (None if time_budget_s is None
                      else time_budget_s - (time.perf_counter() - start))
            effort = allocate_runs(simulate_runs, max(2, simulate_runs // 5), len(pairs),
                                   first_s, left_s, time_budget_s, runner.workers)
            clock = _RunClock(None if time_budget_s is None else start + time_budget_s,
                              first_s, runner.workers)
            clock.timed((id(pool[0]), 1), first_s)
            chosen, zones, screened, by_pair, n_pairs = _screen(
                runner, pairs[:effort.pairs_screened], first, campaign.objective,
                campaign.weight_usd_per_h, deadline, budget, effort.screening_runs, seed,
                target_hit_rate, runtime_error, clock, effort.final_runs)
            final: list[RunResult] = []
            while len(final) < effort.final_runs:  # a wave of the workers while one fits
                n = min(runner.workers, effort.final_runs - len(final))
                if not clock.fits(0, n, (id(chosen), zones)):
                    break
                final += clock.run(runner, [RunJob(chosen, seed + r, runtime_error, zones)
                                            for r in range(len(final), len(final) + n)])
        summary = (SimulationSummary(tuple(final), deadline * 3600) if final
                   else by_pair[(id(chosen), zones)])
        # What was made: later runs may be slower than the first, so the clock had the
        # last word over the allocation.
        effort = replace(effort, pairs_screened=n_pairs, final_runs=len(final))
    else:
        chosen = pool[0]
    timings["simulate"] = time.perf_counter() - t0
    return CampaignPlan(campaign, deadline, budget, problem, frontier, chosen, summary, timings,
                        graph.number_of_nodes(), graph.number_of_edges(), catalog.date,
                        calibration.status, zones, runtime_error, tuple(screened), effort)


#: Sizes of one family whose prices per vCPU differ by less than this count as one price.
POOL_PRICE_TIE = 0.02


def spread_over_pools(problem: PlacementProblem, plan: PlacementPlan) -> PlacementPlan | None:
    """``plan`` with its largest multi-node spot entry split over two spot pools of one zone.

    Half of the entry's nodes (rounded down) become nodes of another size of
    the same family and region, as many vCPUs, at a price per vCPU within
    :data:`POOL_PRICE_TIE`: a (type, zone) pool of their own, so one reclaim
    event no longer takes the whole entry. Tasks go with the vCPUs. None when
    no entry has two spot nodes or its family has no such size.
    """
    spot = [e for e in plan.fleet if e.offer.market == "spot" and e.instances >= 2]
    if not spot:
        return None
    entry = max(spot, key=lambda e: e.instances * e.offer.instance.vcpus)
    it = entry.offer.instance
    per_vcpu = entry.offer.price_usd_per_h / it.vcpus
    moved = entry.instances // 2
    others = [o for o in problem.offers
              if o.market == "spot" and o.region == entry.offer.region
              and o.instance.family == it.family and o.instance.name != it.name
              and (moved * it.vcpus) % o.instance.vcpus == 0
              and abs(o.price_usd_per_h / o.instance.vcpus - per_vcpu) <= POOL_PRICE_TIE * per_vcpu]
    if not others:
        return None
    other = max(others, key=lambda o: o.instance.vcpus)  # fewest nodes
    share = moved / entry.instances
    moved_tasks = {s: round(n * share) for s, n in entry.tasks.items()}
    entries = []
    for e in plan.fleet:
        if e is not entry:
            entries.append((e.offer, e.instances, dict(e.tasks)))
    entries.append((entry.offer, entry.instances - moved,
                    {s: n - moved_tasks[s] for s, n in entry.tasks.items()}))
    entries.append((other, moved * it.vcpus // other.instance.vcpus, moved_tasks))
    return price_fleet(problem, plan.makespan_limit_h, entries, f"{plan.solver}, two pools")


def allocate_runs(final_runs: int, screening_runs: int, pairs: int, first_run_s: float,
                  left_s: float | None, budget_s: float | None,
                  workers: int = 1) -> SimulationEffort:
    """Runs that fit in ``left_s`` after the first one on ``workers`` processes (module docstring)."""
    wanted = final_runs + screening_runs * pairs - 1
    if left_s is None or math.ceil(wanted / workers) * first_run_s <= left_s:
        return SimulationEffort(final_runs, final_runs, screening_runs, screening_runs, pairs,
                                pairs, budget_s, first_run_s, workers)
    fit = max(0, int(left_s / max(first_run_s, 1e-9)) * workers)
    final = min(final_runs, fit)        # the chosen plan's runs first: the plan states them
    screen = fit - final + 1            # the first run is one of them
    per_pair = min(screening_runs, max(1, screen // pairs))
    n_pairs = min(pairs, max(1, screen // per_pair))
    return SimulationEffort(final_runs, final, screening_runs, per_pair, pairs, n_pairs,
                            budget_s, first_run_s, workers)


@dataclass(slots=True)
class _RunClock:
    """The end of the time budget and the runs timed so far: do more runs fit?

    Runs go ``workers`` at a time, so ``runs`` take ``ceil(runs / workers)``
    times a run: the slowest seen (a batch's wall time over its waves) for runs
    of plans not known yet, a (plan, zones) pair's own slowest run for more of
    its runs (the chosen plan's final runs).
    """

    end: float | None
    slowest_s: float
    workers: int = 1
    pair_s: dict[tuple[int, int], float] = field(default_factory=dict)

    def fits(self, runs: int, reserved: int = 0,
             reserved_pair: tuple[int, int] | None = None) -> bool:
        """``runs`` of unknown plans and ``reserved`` of ``reserved_pair`` fit in the budget."""
        per_s = self.pair_s.get(reserved_pair, self.slowest_s) if reserved_pair else self.slowest_s
        need_s = (math.ceil(runs / self.workers) * self.slowest_s
                  + math.ceil(reserved / self.workers) * per_s)
        return self.end is None or time.perf_counter() + need_s <= self.end

    def timed(self, pair: tuple[int, int], run_s: float) -> None:
        self.pair_s[pair] = max(self.pair_s.get(pair, 0.0), run_s)

    def run(self, runner: RunPool, jobs: list[RunJob]) -> list[RunResult]:
        if not jobs:
            return []
        t = time.perf_counter()
        made = runner.map_timed(jobs)
        waves = math.ceil(len(jobs) / self.workers)
        self.slowest_s = max(self.slowest_s, (time.perf_counter() - t) / waves)
        for job, (_, run_s) in zip(jobs, made, strict=True):
            self.timed((id(job.plan), job.zones), run_s)
        return [r for r, _ in made]


def _screen(runner: RunPool, pairs: list[tuple[PlacementPlan, int]], first: RunResult,
            objective: str, weight_usd_per_h: float, deadline_h: float,
            budget_usd: float | None, runs: int, seed: int, target_hit_rate: float,
            runtime_error: float, clock: _RunClock, reserved_runs: int
            ) -> tuple[PlacementPlan, int, list[tuple[PlacementPlan, SimulationSummary]],
                       dict[tuple[int, int], SimulationSummary], int]:
    """The best (plan, zones) by simulated figures that keeps deadline and budget, or refuse.

    ``first`` is the run of the first pair with the first screening seed, made already.
    A pair is screened only while its runs still fit in the time budget beside
    ``reserved_runs`` (the chosen plan's); the last value returned is how many
    pairs were considered. Pairs go in batches that fill the runner's workers;
    a batch's pair that the pairs before it rule out is dropped after the fact,
    so the outcome is the one-by-one screening's. A batch's runs go a wave of
    workers at a time, and a pair stops being simulated once it has missed the
    deadline more often than ``target_hit_rate`` allows over ``runs`` runs (at
    95 % and 4 runs, its first miss): it cannot qualify, so the choice is the
    same, made with fewer runs (its summary holds the runs made).
    """
    deadline_s = deadline_h * 3600
    screened: list[tuple[PlacementPlan, SimulationSummary]] = []
    by_pair: dict[tuple[int, int], SimulationSummary] = {}
    best: tuple[float, PlacementPlan, int] | None = None
    considered = 0
    allowed_misses = runs - math.ceil(target_hit_rate * runs - 1e-9)

    def ruled_out(p: PlacementPlan) -> bool:
        # Idle time only adds to the fluid cost: a plan planned above the best simulated
        # cost so far (with a 2 % allowance for luck) cannot win "cheapest".
        return objective == "cheapest" and best is not None and p.cost_usd > best[0] * 1.02

    k = 0
    while k < len(pairs):
        # the chosen plan's runs are reserved at the pace of the best pair so far
        best_pair = None if best is None else (id(best[1]), best[2])
        if k > 0 and not clock.fits(runs, reserved_runs, best_pair):
            break
        n = 1
        while (n * runs < clock.workers and k + n < len(pairs)
               and clock.fits((n + 1) * runs, reserved_runs, best_pair)):
            n += 1
        batch = [j for j in range(k, k + n) if not ruled_out(pairs[j][0])]
        made_of = {j: [first] if j == 0 else [] for j in batch}
        pending = [(j, RunJob(pairs[j][0], seed + 10_000 + r, runtime_error, pairs[j][1]))
                   for j in batch for r in range(1 if j == 0 else 0, runs)]
        while pending:  # a wave of the workers at a time
            # a pair that misses the deadline more often than the target allows over its
            # runs cannot qualify whatever its other runs do: they are not made
            pending = [(j, job) for j, job in pending
                       if sum(r.makespan_s > deadline_s for r in made_of[j]) <= allowed_misses]
            wave, pending = pending[:clock.workers], pending[clock.workers:]
            for (j, _), r in zip(wave, clock.run(runner, [job for _, job in wave]), strict=True):
                made_of[j].append(r)
        for j in range(k, k + n):
            considered += 1
            p, zones = pairs[j]
            if j not in batch or ruled_out(p):
                continue
            s = SimulationSummary(tuple(made_of[j]), deadline_s)
            by_pair[(id(p), zones)] = s
            if zones == 1:
                screened.append((p, s))
            if s.deadline_hit_rate >= target_hit_rate and (
                    budget_usd is None or s.mean_cost_usd <= budget_usd):
                score = _simulated_score(objective, weight_usd_per_h, s)
                if best is None or score < best[0]:
                    best = (score, p, zones)
        k += n
    if best is None:
        closest = max(screened, key=lambda ps: (ps[1].deadline_hit_rate, -ps[1].mean_cost_usd))
        p, s = closest
        budget = "" if budget_usd is None else f" and a budget of {budget_usd:g} USD"
        raise InfeasiblePlanError(
            f"no plan keeps a deadline of {deadline_h:g} h in {100 * target_hit_rate:.0f} % of "
            f"simulated runs{budget} (task times +/- {100 * runtime_error:.0f} %, spot reclaims "
            f"and every overhead counted); the closest of {len(screened)} candidates meets the "
            f"deadline in {100 * s.deadline_hit_rate:.0f} % of runs at a mean cost of "
            f"{s.mean_cost_usd:.2f} USD (p95 makespan {s.p95_makespan_s / 3600:.2f} h); "
            "raise the deadline or the budget")
    return best[1], best[2], screened, by_pair, considered


def simulated_frontier(cp: CampaignPlan) -> list[tuple[PlacementPlan, SimulationSummary]]:
    """The screened plans no other beats on both simulated cost and p95 makespan, fastest first."""
    pts = sorted(cp.screened, key=lambda ps: (ps[1].mean_cost_usd, ps[1].p95_makespan_s))
    out: list[tuple[PlacementPlan, SimulationSummary]] = []
    for p, s in pts:
        if not out or s.p95_makespan_s < out[-1][1].p95_makespan_s:
            out.append((p, s))
    return out[::-1]


def _plan_summary(p: PlacementPlan, s: SimulationSummary | None) -> dict[str, Any]:
    out: dict[str, Any] = {"lp_cost_usd": round(p.cost_usd, 4),
                           "lp_makespan_s": round(p.makespan_h * 3600, 1),
                           "makespan_limit_s": round(p.makespan_limit_h * 3600, 1)}
    if s is not None:
        out.update(cost_usd=round(s.mean_cost_usd, 4), makespan_s=round(s.p95_makespan_s, 1),
                   deadline_hit_rate=s.deadline_hit_rate)
    else:
        out.update(cost_usd=out["lp_cost_usd"], makespan_s=out["lp_makespan_s"])
    return out


def plan_to_dict(cp: CampaignPlan) -> dict[str, Any]:
    """The ``plan.json`` document: fleet, stage shares, cost, makespan, risk, frontier.

    ``total_cost_usd`` and ``makespan_s`` are the simulated mean cost (every
    overhead included) and p95 makespan when the plan was simulated; the LP's
    figures are under ``lp``.
    """
    p = cp.chosen
    # the cluster's region, where a live re-plan chooses (scheduler.fleet.replanning)
    region = next((e.offer.region for e in p.fleet), cp.campaign.data_region)
    fleet = [{
        "instance_type": e.offer.instance.name,
        "region": e.offer.region,
        "market": e.offer.market,
        "instances": e.instances,
        "vcpus": e.offer.instance.vcpus,
        "mem_gib": e.offer.instance.mem_gib,
        "price_usd_per_h": e.offer.price_usd_per_h,
        "interruption_band": e.offer.interruption_band,
        "tasks": dict(e.tasks),
        "busy_instance_h": round(e.busy_h, 4),
    } for e in p.fleet]
    sim = cp.simulation
    risk: dict[str, Any] | None = None
    lp_breakdown = {"compute": round(p.compute_usd, 4), "transfer": round(p.transfer_usd, 4),
                    "startup": round(p.startup_usd, 4), "overheads": round(p.overheads_usd, 4)}
    if sim is not None:
        risk = {"runs": len(sim.runs), "deadline_hit_rate": sim.deadline_hit_rate,
                "runtime_error": cp.runtime_error,
                "mean_cost_usd": round(sim.mean_cost_usd, 4),
                "p95_cost_usd": round(sim.p95_cost_usd, 4),
                "mean_makespan_s": round(sim.mean_makespan_s, 1),
                "p95_makespan_s": round(sim.p95_makespan_s, 1),
                "mean_interruptions": sim.mean_interruptions}
        total = sim.mean_cost_usd
        makespan = sim.p95_makespan_s
        breakdown = {k: round(v, 6) for k, v in sim.mean_breakdown_usd().items()}
        frontier = [_plan_summary(q, s) for q, s in simulated_frontier(cp)]
    else:
        total = p.cost_usd
        makespan = p.makespan_h * 3600
        breakdown = lp_breakdown
        frontier = [_plan_summary(q, None) for q in cp.frontier.points]
    return plan_document_from_dict({
        "format": PLAN_FORMAT,
        "campaign": cp.campaign.name,
        "source": cp.campaign.source,
        "objective": cp.campaign.objective,
        "deadline_s": cp.deadline_h * 3600,
        "budget_usd": cp.budget_usd,
        "data_region": cp.campaign.data_region,
        "total_cost_usd": round(total, 4),
        "makespan_s": round(makespan, 1),
        "figures": "simulated" if sim is not None else "lp",
        "cost_breakdown_usd": breakdown,
        "zones": cp.zones,
        "replan": replan_limits(replace(cp.problem, offers=tuple(
            o for o in cp.problem.offers if o.region == region))).to_dict(),
        "lp": {"cost_usd": round(p.cost_usd, 4), "makespan_s": round(p.makespan_h * 3600, 1),
               "cost_breakdown_usd": lp_breakdown,
               "relaxed_cost_usd": round(p.relaxed_cost_usd, 4), "solver": p.solver},
        "expected_interruptions": p.expected_interruptions,
        "fleet": fleet,
        "stages": [{"name": s.name, "tasks": s.n_tasks, "threads": s.threads,
                    "peak_mem_gib": round(s.peak_mem_gib, 3),
                    "transfer_bytes_per_task": round(s.transfer_bytes)}
                   for s in cp.problem.stages],
        "critical_path_s": round(cp.problem.critical_path_s, 1),
        "startup_s": cp.problem.startup_s,
        "risk": risk,
        "simulation": cp.effort.as_dict() if cp.effort is not None else None,
        "frontier": frontier,
        "dag": {"tasks": cp.n_tasks, "edges": cp.n_edges, "order": "depth-first"},
        "timings_s": {k: round(v, 3) for k, v in cp.timings_s.items()},
        "catalog_date": cp.catalog_date,
        "calibration": cp.calibration_status,
    }).to_dict()
