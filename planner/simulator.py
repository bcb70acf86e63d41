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
  ``runtime_sigma``);
- a spot instance is interrupted after an exponential time at its offer's
  rate; its running tasks are lost and re-queued (redone from scratch), and
  a replacement is launched at once (new start-up delay);
- an instance leaves as soon as it is idle and no unstarted task of its
  stages remains; it is billed per second from launch to leaving.

``simulate`` repeats this ``runs`` times with seeds ``seed .. seed+runs-1``
and returns the cost and makespan distributions.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from planner.errors import PlannerError
from planner.placement import FleetEntry, PlacementPlan, PlacementProblem

_READY, _DONE, _INTERRUPT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RunResult:
    cost_usd: float
    makespan_s: float
    interruptions: int
    redone_tasks: int
    instances_launched: int


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


class CampaignSimulator:
    """The DAG flattened to integer arrays once, then simulated many times."""

    def __init__(self, graph: nx.DiGraph, order: Sequence[Any],
                 problem: PlacementProblem) -> None:
        index = {k: i for i, k in enumerate(order)}
        if len(index) != graph.number_of_nodes():
            raise PlannerError(f"order has {len(index)} tasks, the graph "
                               f"{graph.number_of_nodes()}; expected every task once")
        stage_of = {s.name: i for i, s in enumerate(problem.stages)}
        self.problem = problem
        self.n = len(order)
        self.stage = [stage_of[k[0]] for k in order]
        self.cost = [graph._node[k]["cost"] for k in order]
        self.n_deps = [len(graph._pred[k]) for k in order]
        self.succ = [[index[s] for s in graph._succ[k]] for k in order]
        self.threads = [c.threads for c in self.cost]
        self.mem = [c.peak_mem_gib for c in self.cost]

    def run(self, plan: PlacementPlan, seed: int, *, runtime_sigma: float = 0.1,
            max_events: int = 50_000_000) -> RunResult:
        """One seeded run of ``plan`` (see the module docstring)."""
        rng = random.Random(seed)
        prob = self.problem
        n_stages = len(prob.stages)
        fleet: list[FleetEntry] = list(plan.fleet)
        # Per offer: the stages it serves and planned tasks left per stage.
        serves = [[i for i in range(n_stages) if fleet[f].tasks.get(prob.stages[i].name, 0)]
                  for f in range(len(fleet))]
        planned = [[fleet[f].tasks.get(prob.stages[i].name, 0) for i in range(n_stages)]
                   for f in range(len(fleet))]
        missing = list(self.n_deps)
        ready: list[list[int]] = [[] for _ in range(n_stages)]
        for t in range(self.n):
            if missing[t] == 0:
                ready[self.stage[t]].append(t)
        for q in ready:
            heapq.heapify(q)
        unstarted = [0] * n_stages
        for t in range(self.n):
            unstarted[self.stage[t]] += 1
        # instance state
        inst_entry: list[int] = []
        inst_free_cpu: list[int] = []
        inst_free_mem: list[float] = []
        inst_running: list[dict[int, int]] = []  # task -> attempt id
        inst_launch: list[float] = []
        inst_alive: list[bool] = []
        inst_ready: list[bool] = []
        events: list[tuple[float, int, int, int, int]] = []
        seq = 0
        cost = 0.0
        interruptions = redone = 0
        done_count = 0
        finish = 0.0

        def launch(f: int, now: float) -> None:
            nonlocal seq
            i = len(inst_entry)
            it = fleet[f].offer.instance
            inst_entry.append(f)
            inst_free_cpu.append(it.vcpus)
            inst_free_mem.append(it.mem_gib * 0.9)
            inst_running.append({})
            inst_launch.append(now)
            inst_alive.append(True)
            inst_ready.append(False)
            up = now + prob.startup_s * rng.uniform(0.75, 1.5)
            heapq.heappush(events, (up, seq, _READY, i, 0))
            seq += 1
            lam = fleet[f].offer.interruptions_per_h
            if lam > 0:
                heapq.heappush(events, (up + rng.expovariate(lam / 3600.0), seq, _INTERRUPT,
                                        i, 0))
                seq += 1

        def release(i: int, now: float) -> None:
            nonlocal cost
            inst_alive[i] = False
            cost += (now - inst_launch[i]) / 3600.0 * fleet[inst_entry[i]].offer.price_usd_per_h

        def dispatch(i: int, now: float) -> None:
            nonlocal seq
            f = inst_entry[i]
            family = fleet[f].offer.instance.family
            while True:
                best = -1
                best_stage = -1
                for pass_planned in (True, False):
                    for s in serves[f]:
                        if pass_planned and planned[f][s] <= 0:
                            continue
                        q = ready[s]
                        if q and self.threads[q[0]] <= inst_free_cpu[i] and \
                                self.mem[q[0]] <= inst_free_mem[i] and (best < 0 or q[0] < best):
                            best, best_stage = q[0], s
                    if best >= 0:
                        break
                if best < 0:
                    return
                heapq.heappop(ready[best_stage])
                planned[f][best_stage] -= 1
                unstarted[best_stage] -= 1
                inst_free_cpu[i] -= self.threads[best]
                inst_free_mem[i] -= self.mem[best]
                dur = self.cost[best].runtime_s(family) * rng.lognormvariate(0.0, runtime_sigma)
                inst_running[i][best] = seq
                heapq.heappush(events, (now + dur, seq, _DONE, i, best))
                seq += 1

        def maybe_release(i: int, now: float) -> None:
            if inst_alive[i] and inst_ready[i] and not inst_running[i] and all(
                    unstarted[s] == 0 for s in serves[inst_entry[i]]):
                release(i, now)

        for f, entry in enumerate(fleet):
            for _ in range(entry.instances):
                launch(f, 0.0)
        n_events = 0
        while events and done_count < self.n:
            now, ev_seq, kind, i, task = heapq.heappop(events)
            n_events += 1
            if n_events > max_events:
                raise PlannerError(f"simulation exceeded {max_events} events; the plan's fleet "
                                   "cannot finish the campaign")
            if not inst_alive[i]:
                continue
            if kind == _READY:
                inst_ready[i] = True
                dispatch(i, now)
                maybe_release(i, now)
            elif kind == _DONE:
                if inst_running[i].get(task) != ev_seq:
                    continue
                del inst_running[i][task]
                inst_free_cpu[i] += self.threads[task]
                inst_free_mem[i] += self.mem[task]
                done_count += 1
                finish = now
                newly = []
                for s in self.succ[task]:
                    missing[s] -= 1
                    if missing[s] == 0:
                        heapq.heappush(ready[self.stage[s]], s)
                        newly.append(self.stage[s])
                dispatch(i, now)
                if newly:
                    # Wake idle instances of other offers that serve the new tasks' stages.
                    for j in range(len(inst_entry)):
                        if j != i and inst_alive[j] and inst_ready[j] and \
                                inst_free_cpu[j] > 0 and any(
                                    s in serves[inst_entry[j]] for s in newly):
                            dispatch(j, now)
                maybe_release(i, now)
            else:  # interruption
                interruptions += 1
                for t in inst_running[i]:
                    heapq.heappush(ready[self.stage[t]], t)
                    unstarted[self.stage[t]] += 1
                    planned[inst_entry[i]][self.stage[t]] += 1
                    redone += 1
                inst_running[i].clear()
                release(i, now)
                if any(unstarted[s] > 0 for s in serves[inst_entry[i]]):
                    launch(inst_entry[i], now)
        if done_count < self.n:
            raise PlannerError(f"simulation stalled with {self.n - done_count} of {self.n} tasks "
                               "undone: no instance of the fleet can run them")
        for i in range(len(inst_entry)):
            if inst_alive[i]:
                release(i, max(finish, inst_launch[i]))
        transfer = plan.transfer_usd
        return RunResult(cost + transfer, finish, interruptions, redone, len(inst_entry))

    def simulate(self, plan: PlacementPlan, runs: int, *, seed: int = 0,
                 deadline_s: float | None = None, runtime_sigma: float = 0.1
                 ) -> SimulationSummary:
        if runs < 1:
            raise PlannerError(f"runs = {runs}, expected >= 1")
        return SimulationSummary(
            tuple(self.run(plan, seed + k, runtime_sigma=runtime_sigma) for k in range(runs)),
            deadline_s)
