"""Discrete-event campaign simulator: a plan's fleet runs the DAG task by task.

It is how plans are judged (the LP's fluid model ignores dependencies, idle
tails and the luck of interruptions) and how campaigns too big for any test
machine are studied. One run:

- every instance of the fleet is launched at t = 0 and is ready after a
  start-up delay (the campaign's, times a seeded uniform factor 0.75..1.5);
- a ready instance takes ready tasks (all inputs done) in planner order
  (:mod:`planner.order` rank) while its free vCPUs and memory fit them, first
  of the stages the plan gave its offer with planned tasks left, then of
  those stages beyond the plan (work stealing) so that no one idles while
  work it can do waits;
- a task lasts its family's runtime times a seeded log-normal factor (sigma
  ``runtime_sigma``; a first attempt's factors are drawn for all tasks at once
  with numpy, a redone task draws a fresh one);
- spot capacity comes in pools, one per (fleet entry, zone); instances of
  an entry are spread round-robin over ``zones`` (as ``eochain
  cluster-config`` pins them: one node type per zone and subnet). Tasks go
  to any node that serves their stage, whatever its zone (Ray's scheduler
  knows no zones): each input read from a node in another zone is counted
  as inter-zone bytes; A pool sees reclaim events
  at its hazard over the reclaim share (:mod:`planner.spot`); an event takes
  each running instance of the pool with that share's probability, and
  leaves the pool without capacity for an exponential outage;
- an interrupted instance loses its running tasks (re-queued, redone from
  scratch) *and* the outputs it holds that a task not yet started still
  needs (Ray's object store lives on the node): those tasks are redone too,
  after their own inputs; a replacement is launched in the same pool when
  its capacity is back;
- a task lasts its family's runtime times a seeded log-normal factor (sigma
  ``runtime_sigma``) times one factor per run drawn uniformly in
  ``1 +/- runtime_error`` (the calibration itself may be off);
- an instance leaves as soon as it is idle and no unstarted task of its
  stages remains; it is billed per second from launch to leaving, plus the
  autoscaler's idle timeout (``idle_timeout_s``: a node the runtime lets go
  is terminated once it has sat idle that long; a reclaimed node is not
  billed after its reclaim), its volume too; the cluster's other costs (head node, NAT, endpoints, S3
  requests and storage, the inter-zone bytes counted) come from
  :func:`planner.overheads.overhead_cost`.

Re-planning (``replanner``, every ``replan_every_s``): the run hands a
:class:`planner.replan.RunProgress` (tasks left per stage, task seconds
measured against calibrated so far, interruptions and spot instance-hours
per offer, the plan running now) to the replanner and enacts the fleet it
returns at once (the plan running, or None, changes nothing), as the
runtime's autoscaler request does: an offer's missing nodes are launched
(start-up included), its surplus nodes take no new task and leave once idle
(booting or idle ones first), and each offer serves the stages the new plan
gives it. ``slowdown`` makes every task that many times slower than
calibrated (on top of ``runtime_error``): a run that surprises its plan.

``simulate`` repeats this ``runs`` times with seeds ``seed .. seed+runs-1``
and returns the cost and makespan distributions; with ``workers`` > 1 the runs
go to forked processes (:class:`RunPool`: the flattened DAG shared
copy-on-write), with the same results, as each run seeds its own generators.

A run without a replanner is made by the numba kernel of :mod:`planner.run_kernel`
(the same model and draws, the same results to the last digit, several times
faster); a re-planning run stays in this module's Python loop, which calls the
replanner and enacts its fleets.
"""

from __future__ import annotations

import heapq
import itertools
import math
import multiprocessing
import multiprocessing.pool
import os
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import networkx as nx
import numpy as np

from planner.dag import TaskCost
from planner.errors import PlannerError
from planner.overheads import DagTraffic, Overheads, overhead_cost
from planner.placement import FleetEntry, PlacementPlan, PlacementProblem
from planner.replan import RunProgress
from planner.run_kernel import NO_ROOM, TOO_MANY_EVENTS, run_kernel
from planner.spot import SpotModel
from planner.stages import stage_of as stage_of_op

_READY, _DONE, _RECLAIM, _REPLAN = 0, 1, 2, 3

#: The DAG as :func:`planner.run_kernel.run_kernel` takes it (its first ten arguments).
KernelArrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                     np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: What a run asks while it goes: the plan for the rest (None: keep the fleet as it is).
Replanner = Callable[[RunProgress], PlacementPlan | None]


@dataclass(frozen=True, slots=True)
class RunResult:
    cost_usd: float
    makespan_s: float
    interruptions: int
    redone_tasks: int
    instances_launched: int
    compute_usd: float = 0.0
    transfer_usd: float = 0.0
    node_s: float = 0.0
    overheads_usd: dict[str, float] = field(default_factory=dict)
    inter_az_bytes: float = 0.0
    idle_usd: float = 0.0          # nodes billed through the idle timeout after their work
    replans: int = 0               # fleet changes enacted


@dataclass(frozen=True, slots=True)
class SimulationSummary:
    runs: tuple[RunResult, ...]
    deadline_s: float | None

    def _q(self, values: Sequence[float], q: float) -> float:
        s = sorted(values)
        return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]

    @property
    def costs_usd(self) -> list[float]:
        return [r.cost_usd for r in self.runs]

    @property
    def makespans_s(self) -> list[float]:
        return [r.makespan_s for r in self.runs]

    @property
    def mean_cost_usd(self) -> float:
        return sum(self.costs_usd) / len(self.runs)

    @property
    def p95_cost_usd(self) -> float:
        return self._q(self.costs_usd, 0.95)

    @property
    def mean_makespan_s(self) -> float:
        return sum(self.makespans_s) / len(self.runs)

    @property
    def p95_makespan_s(self) -> float:
        return self._q(self.makespans_s, 0.95)

    @property
    def deadline_hit_rate(self) -> float:
        if self.deadline_s is None:
            return 1.0
        return sum(m <= self.deadline_s for m in self.makespans_s) / len(self.runs)

    @property
    def mean_interruptions(self) -> float:
        return sum(r.interruptions for r in self.runs) / len(self.runs)

    def mean_breakdown_usd(self) -> dict[str, float]:
        """Mean cost per item over the runs: compute, transfer and each overhead."""
        n = len(self.runs)
        out = {"compute": sum(r.compute_usd for r in self.runs) / n,
               "idle": sum(r.idle_usd for r in self.runs) / n,
               "transfer": sum(r.transfer_usd for r in self.runs) / n}
        for r in self.runs:
            for k, v in r.overheads_usd.items():
                out[k] = out.get(k, 0.0) + v / n
        return out


def dag_traffic(graph: nx.DiGraph) -> DagTraffic:
    """Bytes moved between tasks and bytes of the products, from the DAG's declarations."""
    # networkx's dict-of-dicts read directly: edges() views cost 3x more at a million tasks
    edge = 0.0
    for inputs in graph._pred.values():
        for d in inputs.values():
            edge += d.get("bytes", 0)
    node = graph._node
    products = [key for key, out_edges in graph._succ.items() if not out_edges]
    out = float(sum(node[key]["cost"].output_bytes for key in products))
    n_out = len(products)
    return DagTraffic(edge, out, graph.number_of_nodes(), n_out,
                      graph.graph.get("window_rows", {}), graph.graph.get("published_bytes", ()))


class CampaignSimulator:
    """The DAG flattened to integer arrays once, then simulated many times."""

    def __init__(self, graph: nx.DiGraph, order: Sequence[Any],
                 problem: PlacementProblem, *, spot: SpotModel | None = None,
                 overheads: Overheads | None = None,
                 head_usd_per_h: Mapping[str, float] | None = None) -> None:
        index = {k: i for i, k in enumerate(order)}
        if len(index) != graph.number_of_nodes():
            raise PlannerError(f"order has {len(index)} tasks, the graph "
                               f"{graph.number_of_nodes()}; expected every task once")
        stage_of = {s.name: i for i, s in enumerate(problem.stages)}
        self.problem = problem
        self.spot = spot or SpotModel()
        self.overheads = overheads
        self.head_usd_per_h = dict(head_usd_per_h or {})  # region -> head node price
        self.traffic = dag_traffic(graph)
        self.n = len(order)
        self.stage = [stage_of[stage_of_op(k[0])] for k in order]
        self.cost = [graph._node[k]["cost"] for k in order]
        self.n_deps = [len(graph._pred[k]) for k in order]
        self.succ = [[index[s] for s in graph._succ[k]] for k in order]
        self.pred = [[index[s] for s in graph._pred[k]] for k in order]
        self.threads = [c.threads for c in self.cost]
        self.mem = [c.peak_mem_gib for c in self.cost]
        self.min_threads = min(self.threads, default=1)
        # A run's starting state, copied by each run: tasks without inputs queued per
        # stage (ascending, so each list is a heap already), outputs' consumers, tasks
        # per stage.
        self._ready0: list[list[int]] = [[] for _ in problem.stages]
        self._stage_tasks = [0] * len(problem.stages)
        for t in range(self.n):
            if self.n_deps[t] == 0:
                self._ready0[self.stage[t]].append(t)
            self._stage_tasks[self.stage[t]] += 1
        self._queued0 = [d == 0 for d in self.n_deps]
        self._consumers0 = [len(s) for s in self.succ]
        # Tasks share TaskCost objects (one per operation and tile size): runtimes per
        # family are computed per distinct cost, then spread with an index array.
        distinct: dict[int, int] = {}
        self._distinct_costs: list[TaskCost] = []
        cost_index: list[int] = []
        for c in self.cost:
            k = distinct.get(id(c))
            if k is None:
                k = distinct[id(c)] = len(self._distinct_costs)
                self._distinct_costs.append(c)
            cost_index.append(k)
        self._cost_index = np.array(cost_index, dtype=np.int64)
        self._runtime_s: dict[str, np.ndarray] = {}
        self._graph = graph
        self._order = order
        self._inputs: list[tuple[tuple[int, float], ...]] | None = None
        self._arrays = self._kernel_arrays()

    def _input_bytes(self) -> list[tuple[tuple[int, float], ...]]:
        """Per task, (input task, its bytes) for each input, built once when zones > 1."""
        if self._inputs is None:
            pred = self._graph._pred
            self._inputs = [
                tuple(zip(self.pred[t], [float(d.get("bytes", 0)) for d in pred[k].values()],
                          strict=True))
                for t, k in enumerate(self._order)]
        return self._inputs

    def _family_runtime_s(self, family: str) -> np.ndarray:
        """Each task's wall time on ``family`` (cached: a simulator runs many plans)."""
        out = self._runtime_s.get(family)
        if out is None:
            per_cost = np.array([c.runtime_s(family) for c in self._distinct_costs], dtype=float)
            out = self._runtime_s[family] = per_cost[self._cost_index]
        return out

    def run(self, plan: PlacementPlan, seed: int, *, runtime_sigma: float = 0.1,
            runtime_error: float = 0.0, zones: int = 1, idle_timeout_s: float | None = None,
            slowdown: float = 1.0, replanner: Replanner | None = None,
            replan_every_s: float = 600.0, max_events: int = 50_000_000) -> RunResult:
        """One seeded run of ``plan`` (see the module docstring).

        ``idle_timeout_s``: by default the overheads' (eochain's clusters), else 0.
        """
        if not (slowdown > 0 and replan_every_s > 0):
            raise PlannerError(f"slowdown={slowdown!r}, replan_every_s={replan_every_s!r}; "
                               "expected numbers > 0")
        idle_s = (idle_timeout_s if idle_timeout_s is not None
                  else self.overheads.idle_timeout_s if self.overheads is not None else 0.0)
        if not 0 <= runtime_error < 1 or zones < 1 or not idle_s >= 0:
            raise PlannerError(f"runtime_error={runtime_error!r}, zones={zones!r}, "
                               f"idle_timeout_s={idle_s!r}; expected 0 <= runtime_error < 1, "
                               "zones >= 1 and idle_timeout_s >= 0")
        rng = random.Random(seed)
        speed = (rng.uniform(1 - runtime_error, 1 + runtime_error) if runtime_error
                 else 1.0) * slowdown
        prob = self.problem
        spot = self.spot
        n_stages = len(prob.stages)
        fleet: list[FleetEntry] = list(plan.fleet)
        # Per offer: the stages it serves and planned tasks left per stage.
        serves = [[i for i in range(n_stages) if fleet[f].tasks.get(prob.stages[i].name, 0)]
                  for f in range(len(fleet))]
        planned = [[fleet[f].tasks.get(prob.stages[i].name, 0) for i in range(n_stages)]
                   for f in range(len(fleet))]
        serve_mask = [sum(1 << s for s in sv) for sv in serves]
        # First attempts: log-normal factors drawn in one go (numpy, seeded by the run's
        # seed); a redone task draws a fresh factor from ``rng``.
        factors = (np.random.default_rng(seed).lognormal(0.0, runtime_sigma, self.n) * speed
                   if runtime_sigma > 0 else np.full(self.n, speed))
        if replanner is None:
            return self._run_compiled(plan, rng, speed, factors, runtime_sigma, zones, idle_s,
                                      max_events)
        first_s: dict[str, list[float]] = {}
        base_s: dict[str, list[float]] = {}

        def family_times(fam: str) -> tuple[list[float], list[float]]:
            if fam not in first_s:
                first_s[fam] = (self._family_runtime_s(fam) * factors).tolist()
                base_s[fam] = self._family_runtime_s(fam).tolist()
            return first_s[fam], base_s[fam]

        entry_first_s = [family_times(e.offer.instance.family)[0] for e in fleet]
        entry_base_s = [family_times(e.offer.instance.family)[1] for e in fleet]
        target = [e.instances for e in fleet]     # nodes wanted per entry (a re-plan moves it)
        # measured for re-planning: per task its drawn duration, per stage seconds measured
        # and calibrated of the tasks done, per entry interruptions
        task_dur = [0.0] * self.n if replanner is not None else []
        measured_s = [0.0] * n_stages
        calibrated_s = [0.0] * n_stages
        measured_n = [0] * n_stages
        entry_interruptions = [0] * len(fleet)
        replans = 0
        running_plan = plan
        tried = [False] * self.n
        input_bytes = self._input_bytes() if zones > 1 else []
        inter_az_bytes = 0.0
        threads = self.threads
        mem = self.mem
        pred = self.pred
        succ = self.succ
        stage_of = self.stage
        heappush, heappop = heapq.heappush, heapq.heappop
        missing = list(self.n_deps)
        done = [False] * self.n
        started = [False] * self.n
        queued = list(self._queued0)
        where = [-1] * self.n                 # instance holding a done task's output
        consumers_left = list(self._consumers0)
        ready = [list(q) for q in self._ready0]
        unstarted = list(self._stage_tasks)
        stage_total = list(unstarted)
        stage_done = [0] * n_stages
        # pools: (fleet entry, zone)
        n_pools = len(fleet) * zones
        pool_armed = [False] * n_pools
        pool_outage_end = [0.0] * n_pools
        pool_members: list[list[int]] = [[] for _ in range(n_pools)]
        # instance state
        inst_entry: list[int] = []
        inst_zone: list[int] = []
        inst_free_cpu: list[int] = []
        inst_free_mem: list[float] = []
        inst_running: list[dict[int, int]] = []  # task -> attempt id
        inst_outputs: list[list[int]] = []
        inst_launch: list[float] = []
        inst_end: list[float] = []       # when a released node left (its launch until then)
        inst_alive: list[bool] = []
        inst_ready: list[bool] = []
        inst_lost: list[bool] = []  # reclaimed: its object store went with it
        inst_retiring: list[bool] = []  # surplus after a re-plan: takes no new task
        events: list[tuple[float, int, int, int, int]] = []
        counter = itertools.count()
        next_seq = counter.__next__
        min_threads = self.min_threads
        hungry: set[int] = set()  # ready instances with free vCPUs after their last dispatch
        compute = idle_usd = 0.0
        node_s = 0.0
        interruptions = redone = 0
        done_count = 0
        finish = 0.0

        def push(when: float, kind: int, i: int, task: int) -> None:
            heappush(events, (when, next(counter), kind, i, task))

        def arm(p: int, now: float) -> None:
            lam = fleet[p // zones].offer.interruptions_per_h
            if lam > 0 and not pool_armed[p]:
                pool_armed[p] = True
                rate = spot.pool_event_rate_per_h(lam) / 3600.0
                push(now + rng.expovariate(rate), _RECLAIM, p, 0)

        def launch(f: int, now: float, pool: int) -> None:
            i = len(inst_entry)
            it = fleet[f].offer.instance
            inst_entry.append(f)
            inst_zone.append(pool % zones)
            inst_free_cpu.append(it.vcpus)
            inst_free_mem.append(it.mem_gib * 0.9)
            inst_running.append({})
            inst_outputs.append([])
            inst_launch.append(now)
            inst_end.append(now)
            inst_alive.append(True)
            inst_ready.append(False)
            inst_lost.append(False)
            inst_retiring.append(False)
            pool_members[pool].append(i)
            push(now + prob.startup_s * rng.uniform(0.75, 1.5), _READY, i, 0)
            arm(pool, now)

        def release(i: int, now: float, tail_s: float) -> None:
            nonlocal compute, idle_usd, node_s
            inst_alive[i] = False
            inst_end[i] = now
            hungry.discard(i)
            node_s += now - inst_launch[i] + tail_s
            price = fleet[inst_entry[i]].offer.price_usd_per_h
            compute += (now - inst_launch[i]) / 3600.0 * price
            idle_usd += tail_s / 3600.0 * price

        def enqueue(t: int) -> None:
            if not queued[t]:
                queued[t] = True
                heapq.heappush(ready[self.stage[t]], t)

        def dispatch(i: int, now: float) -> None:
            nonlocal inter_az_bytes
            if inst_retiring[i]:
                hungry.discard(i)
                return
            f = inst_entry[i]
            sv = serves[f]
            pl = planned[f]
            first = entry_first_s[f]
            running = inst_running[i]
            free_cpu = inst_free_cpu[i]
            free_mem = inst_free_mem[i]
            while free_cpu >= min_threads:  # below it no task fits: nothing to scan
                best = -1
                best_stage = -1
                skipped = False
                # stages with planned tasks left first; the others (work stealing) only
                # when none of those has a task that fits
                for s in sv:
                    if pl[s] <= 0:
                        skipped = True
                        continue
                    q = ready[s]
                    while q and missing[q[0]] > 0:  # an input was lost after it was queued
                        queued[heappop(q)] = False
                    if q:
                        t = q[0]
                        if threads[t] <= free_cpu and mem[t] <= free_mem and (
                                best < 0 or t < best):
                            best, best_stage = t, s
                if best < 0 and skipped:
                    for s in sv:
                        if pl[s] > 0:
                            continue
                        q = ready[s]
                        while q and missing[q[0]] > 0:
                            queued[heappop(q)] = False
                        if q:
                            t = q[0]
                            if threads[t] <= free_cpu and mem[t] <= free_mem and (
                                    best < 0 or t < best):
                                best, best_stage = t, s
                if best < 0:
                    break
                heappop(ready[best_stage])
                queued[best] = False
                started[best] = True
                for p in pred[best]:
                    consumers_left[p] -= 1
                if input_bytes:  # inputs held by nodes of another zone cross zones
                    zone = inst_zone[i]
                    for p, b in input_bytes[best]:
                        if inst_zone[where[p]] != zone:
                            inter_az_bytes += b
                pl[best_stage] -= 1
                unstarted[best_stage] -= 1
                free_cpu -= threads[best]
                free_mem -= mem[best]
                if tried[best]:
                    dur = entry_base_s[f][best] * speed * rng.lognormvariate(0.0, runtime_sigma)
                else:
                    tried[best] = True
                    dur = first[best]
                if task_dur:
                    task_dur[best] = dur
                k = next_seq()
                running[best] = k
                heappush(events, (now + dur, k, _DONE, i, best))
            inst_free_cpu[i] = free_cpu
            inst_free_mem[i] = free_mem
            if free_cpu > 0:
                hungry.add(i)
            else:
                hungry.discard(i)

        def maybe_release(i: int, now: float) -> None:
            if inst_alive[i] and inst_ready[i] and not inst_running[i] and (
                    inst_retiring[i] or all(unstarted[s] == 0 for s in serves[inst_entry[i]])):
                release(i, now, idle_s)

        def progress(now: float) -> RunProgress:
            left = {prob.stages[s].name: stage_total[s] - stage_done[s] for s in range(n_stages)}
            keys = {fleet[f].offer.key for f in range(len(fleet))}
            exposure = dict.fromkeys(keys, 0.0)
            seen = dict.fromkeys(keys, 0)
            for f in range(len(fleet)):
                seen[fleet[f].offer.key] += entry_interruptions[f]
            for j in range(len(inst_entry)):
                offer = fleet[inst_entry[j]].offer
                if offer.market == "spot":
                    end = now if inst_alive[j] else inst_end[j]
                    exposure[offer.key] += (end - inst_launch[j]) / 3600
            names = [st.name for st in prob.stages]
            return RunProgress(
                now, left,
                {names[s]: measured_s[s] / measured_n[s] for s in range(n_stages) if measured_n[s]},
                {names[s]: calibrated_s[s] / measured_n[s] for s in range(n_stages)
                 if measured_n[s]},
                seen, exposure, running_plan)

        def enact(new: PlacementPlan, now: float) -> None:
            """Launch, retire and re-task nodes to match ``new`` (module docstring)."""
            nonlocal replans, running_plan
            replans += 1
            running_plan = new
            index = {fleet[f].offer.key: f for f in range(len(fleet))}
            wanted = dict.fromkeys(range(len(fleet)), 0)
            for e in new.fleet:
                f = index.get(e.offer.key)
                if f is None:  # a new offer: its own entry and pools
                    f = index[e.offer.key] = len(fleet)
                    fleet.append(e)
                    first, base = family_times(e.offer.instance.family)
                    entry_first_s.append(first)
                    entry_base_s.append(base)
                    serves.append([])
                    planned.append([0] * n_stages)
                    serve_mask.append(0)
                    target.append(0)
                    entry_interruptions.append(0)
                    pool_armed.extend([False] * zones)
                    pool_outage_end.extend([0.0] * zones)
                    pool_members.extend([] for _ in range(zones))
                wanted[f] = wanted.get(f, 0) + e.instances
                planned[f] = [e.tasks.get(st.name, 0) for st in prob.stages]
                serves[f] = [s for s in range(n_stages) if planned[f][s]]
                serve_mask[f] = sum(1 << s for s in serves[f])
            for f, n in wanted.items():
                target[f] = n
                mine = [j for j in range(len(inst_entry))
                        if inst_entry[j] == f and inst_alive[j] and not inst_retiring[j]]
                for k in range(len(mine), n):
                    launch(f, now, f * zones + k % zones)
                # surplus: booting or idle nodes first, then the least busy
                surplus = sorted(mine, key=lambda j: (inst_ready[j] and bool(inst_running[j]),
                                                      len(inst_running[j])))[:max(0, len(mine) - n)]
                for j in surplus:
                    inst_retiring[j] = True
                    hungry.discard(j)
                    if not inst_ready[j] or not inst_running[j]:
                        release(j, now, idle_s)
            for j in range(len(inst_entry)):
                if inst_alive[j] and inst_ready[j]:
                    dispatch(j, now)

        def unstart(t: int, f: int) -> None:
            """``t`` must run again: back to the unstarted count, its inputs needed again."""
            nonlocal redone
            started[t] = False
            unstarted[self.stage[t]] += 1
            planned[f][self.stage[t]] += 1
            redone += 1
            for p in self.pred[t]:
                consumers_left[p] += 1

        def lose_outputs(lost: list[int]) -> None:
            """Done tasks whose outputs vanished while someone still needs them: redo them."""
            nonlocal done_count
            stack = [t for t in lost if done[t] and consumers_left[t] > 0]
            while stack:
                t = stack.pop()
                if not done[t]:
                    continue
                done[t] = False
                done_count -= 1
                stage_done[self.stage[t]] -= 1
                unstart(t, inst_entry[where[t]])
                for s in self.succ[t]:
                    if not started[s]:
                        missing[s] += 1
                # its own inputs may have died with an earlier node
                for p in self.pred[t]:
                    if done[p] and inst_lost[where[p]]:
                        stack.append(p)
                missing[t] = sum(1 for p in self.pred[t] if not done[p])
                if missing[t] == 0:
                    enqueue(t)

        for f, entry in enumerate(fleet):
            for k in range(entry.instances):
                launch(f, 0.0, f * zones + k % zones)
        if replanner is not None:
            push(replan_every_s, _REPLAN, 0, 0)
        n_events = 0
        n_tasks = self.n
        done_kind = _DONE
        while events and done_count < n_tasks:
            now, ev_seq, kind, i, task = heappop(events)
            n_events += 1
            if n_events > max_events:
                raise PlannerError(f"simulation exceeded {max_events} events; the plan's fleet "
                                   "cannot finish the campaign")
            if kind == done_kind:  # most events: a task is done
                if not inst_alive[i]:
                    continue
                running = inst_running[i]
                if running.get(task) != ev_seq:
                    continue
                del running[task]
                inst_free_cpu[i] += threads[task]
                inst_free_mem[i] += mem[task]
                done[task] = True
                where[task] = i
                st = stage_of[task]
                stage_done[st] += 1
                if task_dur:
                    measured_s[st] += task_dur[task]
                    calibrated_s[st] += entry_base_s[inst_entry[i]][task]
                    measured_n[st] += 1
                consumers = succ[task]
                if consumers:
                    inst_outputs[i].append(task)
                done_count += 1
                finish = now
                newly = 0
                for s in consumers:
                    if started[s]:
                        continue
                    missing[s] -= 1
                    if missing[s] == 0:
                        if not queued[s]:
                            queued[s] = True
                            heappush(ready[stage_of[s]], s)
                        newly |= 1 << stage_of[s]
                dispatch(i, now)
                if newly and hungry:
                    # Wake idle instances (of any offer) that serve the new tasks' stages.
                    for j in sorted(hungry):
                        if j != i and serve_mask[inst_entry[j]] & newly:
                            dispatch(j, now)
                if not running:
                    maybe_release(i, now)
                continue
            if kind == _REPLAN:
                new = None if replanner is None else replanner(progress(now))
                if new is not None and new is not running_plan:
                    enact(new, now)
                push(now + replan_every_s, _REPLAN, 0, 0)
                continue
            if kind == _RECLAIM:
                p = i
                pool_armed[p] = False
                members = [j for j in pool_members[p] if inst_alive[j]]
                pool_members[p] = members
                if not members:
                    continue
                if spot.capacity_outage_mean_s > 0:
                    pool_outage_end[p] = now + rng.expovariate(1.0 / spot.capacity_outage_mean_s)
                lost_outputs: list[int] = []
                reclaimed: list[int] = []
                for j in members:
                    if rng.random() >= spot.reclaim_share:
                        continue
                    interruptions += 1
                    inst_lost[j] = True
                    f = inst_entry[j]
                    entry_interruptions[f] += 1
                    for t in inst_running[j]:
                        unstart(t, f)
                        lost_outputs.extend(q for q in self.pred[t]
                                            if done[q] and inst_lost[where[q]])
                        missing[t] = sum(1 for q in self.pred[t] if not done[q])
                        if missing[t] == 0:
                            enqueue(t)
                    inst_running[j].clear()
                    release(j, now, 0.0)
                    lost_outputs.extend(inst_outputs[j])
                    reclaimed.append(f)
                lose_outputs(lost_outputs)
                for f in reclaimed:  # replacements, once the lost work is known
                    if target[f] > 0 and any(unstarted[s] > 0 for s in serves[f]):
                        launch(f, max(now, pool_outage_end[p]), p)
                alive_entries = {inst_entry[j] for j in range(len(inst_entry)) if inst_alive[j]}
                for f in range(len(fleet)):  # lost inputs of an entry that had left
                    if (f not in alive_entries and target[f] > 0
                            and any(unstarted[s] > 0 for s in serves[f])):
                        launch(f, now, f * zones)
                arm(p, now)
                for j in range(len(inst_entry)):
                    if inst_alive[j] and inst_ready[j]:
                        dispatch(j, now)
                continue
            if not inst_alive[i]:
                continue
            inst_ready[i] = True  # the only kind left: an instance is ready
            dispatch(i, now)
            maybe_release(i, now)
        if done_count < self.n:
            raise PlannerError(f"simulation stalled with {self.n - done_count} of {self.n} tasks "
                               "undone: no instance of the fleet can run them")
        for i in range(len(inst_entry)):
            if inst_alive[i]:
                release(i, max(finish, inst_launch[i]), idle_s)
        return self._priced(plan, finish, compute, idle_usd, node_s, inter_az_bytes,
                            interruptions, redone, len(inst_entry), replans)

    def _priced(self, plan: PlacementPlan, finish: float, compute: float, idle_usd: float,
                node_s: float, inter_az_bytes: float, interruptions: int, redone: int,
                instances: int, replans: int) -> RunResult:
        """A run's result: its totals with the transfer and the cluster's overheads priced."""
        transfer = plan.transfer_usd
        extra: dict[str, float] = {}
        if self.overheads is not None:
            extra = overhead_cost(self.overheads, self.traffic, makespan_s=finish,
                                  node_s=node_s, instances=instances,
                                  head_usd_per_h=self.head_usd_per_h.get(
                                      plan.fleet[0].offer.region if plan.fleet else "", 0.0),
                                  inter_az_bytes=inter_az_bytes,
                                  tasks_run=self.n + redone).as_dict()
        return RunResult(compute + idle_usd + transfer + sum(extra.values()), finish,
                         interruptions, redone, instances, compute, transfer, node_s,
                         extra, inter_az_bytes, idle_usd, replans)

    def _kernel_arrays(self) -> KernelArrays:
        """The DAG as the compiled run reads it: per task stage, threads, memory and input
        count, successors and inputs as CSR, input bytes, tasks per stage."""
        def csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
            ptr = np.zeros(len(lists) + 1, dtype=np.int64)
            np.cumsum([len(x) for x in lists], out=ptr[1:])
            idx = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(ptr[-1]))
            return ptr, idx

        succ_ptr, succ_idx = csr(self.succ)
        pred_ptr, pred_idx = csr(self.pred)
        # inputs' bytes in the order of self.pred (the graph's own order)
        pred = self._graph._pred
        pred_bytes = np.fromiter(
            (float(d.get("bytes", 0)) for k in self._order for d in pred[k].values()),
            float, len(pred_idx))
        return (np.array(self.stage, dtype=np.int64), np.array(self.threads, dtype=np.int64),
                np.array(self.mem, dtype=float), np.array(self.n_deps, dtype=np.int64),
                succ_ptr, succ_idx, pred_ptr, pred_idx, pred_bytes,
                np.array(self._stage_tasks, dtype=np.int64))

    def _run_compiled(self, plan: PlacementPlan, rng: random.Random, speed: float,
                      factors: np.ndarray, runtime_sigma: float, zones: int, idle_s: float,
                      max_events: int) -> RunResult:
        """:meth:`run` without a replanner, in :func:`planner.run_kernel.run_kernel`."""
        fleet = plan.fleet
        stages = self.problem.stages
        families = list(dict.fromkeys(e.offer.instance.family for e in fleet))
        base = (np.stack([self._family_runtime_s(fam) for fam in families]) if families
                else np.zeros((0, self.n)))
        rate = [self.spot.pool_event_rate_per_h(e.offer.interruptions_per_h) / 3600.0
                if e.offer.interruptions_per_h > 0 else 0.0 for e in fleet]
        arrays = self._arrays
        first = base * factors
        entries = (
            np.array([families.index(e.offer.instance.family) for e in fleet], dtype=np.int64),
            np.array([e.offer.instance.vcpus for e in fleet], dtype=np.int64),
            np.array([e.offer.instance.mem_gib * 0.9 for e in fleet], dtype=float),
            np.array([e.offer.price_usd_per_h for e in fleet], dtype=float),
            np.array(rate, dtype=float),
            np.array([e.instances for e in fleet], dtype=np.int64))
        planned = np.array([[e.tasks.get(st.name, 0) for st in stages] for e in fleet],
                           dtype=np.int64).reshape(len(fleet), len(stages))
        state = np.array(rng.getstate()[1], dtype=np.int64)
        # room for every node twice over and a task start on each of their vCPUs, plus
        # stale completions of reclaimed tasks; a run that needs more is made again
        inst_cap = 2 * sum(e.instances for e in fleet) + len(fleet) + 16
        ev_cap = 2 * sum(e.instances * e.offer.instance.vcpus for e in fleet) + 4 * inst_cap
        while True:
            status, finish, interruptions, redone, instances, n_done, totals = run_kernel(
                *arrays, first, base, *entries, planned.copy(), state.copy(), speed,
                runtime_sigma, zones, idle_s, self.problem.startup_s, self.spot.reclaim_share,
                self.spot.capacity_outage_mean_s, max_events, inst_cap, ev_cap)
            if status != NO_ROOM:
                break
            inst_cap, ev_cap = 2 * inst_cap, 2 * ev_cap
        if status == TOO_MANY_EVENTS:
            raise PlannerError(f"simulation exceeded {max_events} events; the plan's fleet "
                               "cannot finish the campaign")
        if n_done < self.n:
            raise PlannerError(f"simulation stalled with {self.n - n_done} of {self.n} tasks "
                               "undone: no instance of the fleet can run them")
        compute, idle_usd, node_s, inter_az_bytes = (float(v) for v in totals)
        return self._priced(plan, finish, compute, idle_usd, node_s, inter_az_bytes,
                            interruptions, redone, instances, 0)

    def simulate(self, plan: PlacementPlan, runs: int, *, seed: int = 0,
                 deadline_s: float | None = None, runtime_sigma: float = 0.1,
                 runtime_error: float = 0.0, zones: int = 1,
                 idle_timeout_s: float | None = None, slowdown: float = 1.0,
                 replanner: Replanner | None = None,
                 replan_every_s: float = 600.0, workers: int = 1) -> SimulationSummary:
        """``runs`` seeded runs; ``workers`` > 1 runs them in forked processes (same results).

        A run with a ``replanner`` (a closure of the caller's) stays in this process.
        """
        if runs < 1:
            raise PlannerError(f"runs = {runs}, expected >= 1")
        if replanner is None:
            with RunPool(self, workers) as pool:
                made = pool.map([RunJob(plan, seed + k, runtime_error, zones, runtime_sigma,
                                        idle_timeout_s, slowdown) for k in range(runs)])
            return SimulationSummary(tuple(made), deadline_s)
        return SimulationSummary(
            tuple(self.run(plan, seed + k, runtime_sigma=runtime_sigma,
                           runtime_error=runtime_error, zones=zones,
                           idle_timeout_s=idle_timeout_s, slowdown=slowdown,
                           replanner=replanner, replan_every_s=replan_every_s)
                  for k in range(runs)),
            deadline_s)


@dataclass(frozen=True, slots=True)
class RunJob:
    """One seeded run of ``plan`` (:meth:`CampaignSimulator.run`'s arguments) for a :class:`RunPool`."""

    plan: PlacementPlan
    seed: int
    runtime_error: float = 0.0
    zones: int = 1
    runtime_sigma: float = 0.1
    idle_timeout_s: float | None = None
    slowdown: float = 1.0

    def run(self, sim: CampaignSimulator) -> RunResult:
        return sim.run(self.plan, self.seed, runtime_sigma=self.runtime_sigma,
                       runtime_error=self.runtime_error, zones=self.zones,
                       idle_timeout_s=self.idle_timeout_s, slowdown=self.slowdown)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# The simulator that forked workers run: set in the parent while its pool lives, so each
# child inherits the flattened DAG copy-on-write instead of receiving it pickled.
_FORKED: CampaignSimulator | None = None


def _run_timed(job: RunJob, sim: CampaignSimulator) -> tuple[RunResult, float]:
    t = time.perf_counter()
    out = job.run(sim)
    return out, time.perf_counter() - t


def _run_forked(job: RunJob) -> tuple[RunResult, float]:
    if _FORKED is None:
        raise PlannerError("a RunPool worker started without its simulator; expected the "
                           "fork start method")
    return _run_timed(job, _FORKED)


#: Signals held back from a worker from its fork until :func:`_worker_signals` has run.
_FORK_BLOCKED = frozenset({signal.SIGTERM, signal.SIGINT})


def _worker_signals() -> None:
    """A forked worker dies on SIGTERM (:meth:`RunPool.__exit__` terminates the pool) by
    the default action, whatever handler its parent had installed: ``eochain run``'s
    raises SystemExit, which would run the parent's exit code in the child, and a handler
    that returns would leave the worker alive and the pool's join waiting for ever.

    The worker is forked with SIGTERM and SIGINT blocked (:meth:`RunPool.__enter__`) and
    unblocks them here, once inside the pool's worker loop: a signal that came earlier
    waits until then. Delivered between the fork and that loop, the parent's handler
    raised in ``multiprocessing``'s fork code, whose ``finally: os._exit(code)`` then
    failed (``code`` unset), and the child went on up its parent's stack: a pool
    terminated at once (a planning budget already spent) left a child running the
    parent's caller, a second pytest session, while the parent waited to join it.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORK_BLOCKED)


class RunPool:
    """Seeded runs of one simulator, spread over ``workers`` forked processes.

    Runs are independent (each seeds its own generators), so a job's result
    does not depend on the process that ran it: results come back in job order,
    equal to running the jobs one after another here. One worker, or a platform
    without ``fork``, runs them in this process. Use as a context manager; one
    pool at a time per process.
    """

    def __init__(self, sim: CampaignSimulator, workers: int) -> None:
        if workers < 1:
            raise PlannerError(f"workers = {workers}, expected >= 1")
        self.sim = sim
        self.workers = workers if "fork" in multiprocessing.get_all_start_methods() else 1
        self._pool: multiprocessing.pool.Pool | None = None

    def __enter__(self) -> Self:
        global _FORKED
        if self.workers > 1:
            if _FORKED is not None:
                raise PlannerError("a RunPool is open already; expected one at a time")
            # What runs would compute lazily is computed once, before the children share it.
            for offer in self.sim.problem.offers:
                self.sim._family_runtime_s(offer.instance.family)
            _FORKED = self.sim
            # the workers, and the pool's threads that fork their replacements, inherit the
            # mask (see _worker_signals)
            held = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
            try:
                self._pool = multiprocessing.get_context("fork").Pool(
                    self.workers, initializer=_worker_signals)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return self

    def __exit__(self, *exc: object) -> None:
        global _FORKED
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
            _FORKED = None

    def map(self, jobs: Sequence[RunJob]) -> list[RunResult]:
        """Each job's result, in job order."""
        return [r for r, _ in self.map_timed(jobs)]

    def map_timed(self, jobs: Sequence[RunJob]) -> list[tuple[RunResult, float]]:
        """Each job's result and the seconds its run took, in job order."""
        if self._pool is None or len(jobs) < 2:
            return [_run_timed(job, self.sim) for job in jobs]
        out: list[tuple[RunResult, float]] = self._pool.map(_run_forked, jobs, chunksize=1)
        return out
