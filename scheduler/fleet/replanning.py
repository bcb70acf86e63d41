"""Re-planning while a run goes on: the runtime's measurements in, the fleet for the rest out.

A :class:`LiveReplanner` sits beside a run. The runtime tells it each
finished task's plan stage and wall seconds (:meth:`~LiveReplanner.on_task_done`)
and each spot interruption (:meth:`~LiveReplanner.on_interruption`); from its
progress loop it asks :meth:`~LiveReplanner.fleet_for` with the work left and
the time elapsed, and applies the nodes per (instance type, market) it gets
back to its autoscaler request (``None``: keep the current request). The
first call should come at the run's start, with every task left (see the
totals below; a later first call counts what is done by then as never
there, and so over-estimates what is left). The decision is
:func:`planner.replan.replan`, a pure function of a
:class:`~planner.replan.RunProgress`; this object only keeps what it needs::

    measured task s of stage s = mean of its last ``window`` tasks   (the speed now:
                                                                      a slowdown mid-run
                                                                      shows within
                                                                      ``window`` tasks)
    tasks left of stage s      = plan tasks_s x left_s / total_s     (the runtime counts in
                                                                      its own units: each
                                                                      stage's largest count
                                                                      seen is its total)
    spot exposure of a pool    = sum over calls of nodes asked x hours since the last call
    re-plan when               new measurements >= min_tasks, or an interruption since
                               the last re-plan, and elapsed - last re-plan >= min_interval_s

and the fleet it last asked for (the plan's at first), with the stages each
pool serves when known (:meth:`LiveReplanner.from_plan`: the plan's; then
each re-plan's): given that, :func:`~planner.replan.replan` keeps the fleet
while it is on track to finish in time at the measured speed, so the
request changes only when the deadline is at stake. A re-plan whose fleet
equals the current one returns ``None``. One that adds nodes to a pool (the
deadline is at stake) is asked for at once; one that only removes nodes
waits until the next re-plan removes some too, so that the noise of the
measured speed does not let nodes go that the re-plan after would start
again (each paying a start-up). One the limits cannot satisfy is
said (``say``) and keeps the current fleet. Every re-plan is kept in
:attr:`LiveReplanner.history`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from planner.errors import PlannerError
from planner.plan_document import PlanDocument, as_plan_document
from planner.replan import Pool, Replan, RunProgress, fleet_counts, planned_task_s, replan
from scheduler.runtime.errors import FlowError

if TYPE_CHECKING:
    from planner.calibration import Calibration
    from planner.campaign import Campaign
    from planner.catalog import PriceCatalog
    from planner.placement import PlacementPlan, PlacementProblem

__all__ = ["LiveReplanner", "ReplanEvent"]

log = logging.getLogger(__name__)

#: Tasks per stage whose mean is the stage's measured speed.
WINDOW_TASKS = 20
#: New task measurements before a re-plan (an interruption also allows one).
MIN_TASKS = 10
#: Seconds between two re-plans at least.
MIN_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class ReplanEvent:
    """One re-plan: when, on what progress, what it decided, and the fleet asked for."""

    elapsed_s: float
    progress: RunProgress
    decision: Replan | None          # None: the limits left no fleet (see ``reason``)
    fleet: Mapping[Pool, int] | None  # None: the current request was kept
    reason: str


class LiveReplanner:
    """Measurements of a run, and re-plans of its rest (see the module docstring).

    ``problem`` is the campaign's placement problem (its stages with their
    calibrated CPU-seconds, the offers of the cluster's region), ``deadline_s``
    the deadline counted from the run's start, ``fleet`` the nodes per
    (instance type, market) the run asks for first (the plan's) and
    ``calibrated_task_s`` the wall seconds per task of each stage that the
    measurements are compared with (:func:`planner.replan.planned_task_s`).
    """

    def __init__(self, problem: PlacementProblem, deadline_s: float,
                 fleet: Mapping[Pool, int], calibrated_task_s: Mapping[str, float], *,
                 window: int = WINDOW_TASKS, min_tasks: int = MIN_TASKS,
                 min_interval_s: float = MIN_INTERVAL_S, safety: float = 0.1,
                 say: Callable[[str], None] | None = None,
                 current: PlacementPlan | None = None) -> None:
        if not (math.isfinite(deadline_s) and deadline_s > 0):
            raise FlowError(f"deadline_s = {deadline_s!r}, expected a number of seconds > 0")
        if window < 1 or min_tasks < 1 or not min_interval_s >= 0:
            raise FlowError(f"window = {window!r}, min_tasks = {min_tasks!r}, min_interval_s "
                               f"= {min_interval_s!r}; expected >= 1, >= 1, >= 0")
        regions = {o.region for o in problem.offers}
        if len(regions) != 1:
            raise FlowError(f"offers in regions {sorted(regions)}; expected the offers of "
                               "one region, the cluster's (a cluster lives in one region)")
        self.problem = problem
        self.deadline_s = deadline_s
        self.calibrated_task_s = dict(calibrated_task_s)
        self.safety = safety
        self.min_tasks = min_tasks
        self.min_interval_s = min_interval_s
        self._say = say or log.warning
        self._region = regions.pop()
        self._stage_tasks = {s.name: s.n_tasks for s in problem.stages}
        self._times: dict[str, deque[float]] = {s: deque(maxlen=window)
                                                for s in self._stage_tasks}
        self._fresh = 0
        self._interrupted = False
        self._interruptions: dict[str, int] = {}
        self._instance_h: dict[str, float] = {}
        self._totals: dict[str, int] = {}
        self._last_call_s: float | None = None
        self._last_replan_s: float | None = None
        self._shrinking = False  # the last re-plan asked for fewer nodes only
        self.fleet: dict[Pool, int] = {p: n for p, n in fleet.items() if n > 0}
        #: the plan of the fleet asked for, with its stages per pool (None: not known)
        self.current = current
        self.history: list[ReplanEvent] = []

    @classmethod
    def from_plan(cls, plan: PlanDocument | Mapping[str, Any], campaign: Campaign,
                  catalog: PriceCatalog, calibration: Calibration,
                  **options: Any) -> LiveReplanner:
        """The re-planner of a run of ``campaign`` with ``plan`` (``plan.json``).

        The campaign's DAG and placement problem are built again (once, at
        the run's start), with the offers of the plan's region only, at the
        prices of ``catalog`` (the run's, maybe newer than the plan's); the
        deadline is the plan's, else the campaign's.
        """
        from planner.estimate import campaign_dag
        from planner.frontier import build_problem
        from planner.placement import price_fleet

        doc = as_plan_document(plan)
        graph = campaign_dag(campaign, calibration, catalog.families)
        problem = build_problem(graph, campaign, catalog)
        region = next((e.region for e in doc.fleet if e.region), None) or campaign.data_region
        offers = tuple(o for o in problem.offers if o.region == region)
        if not offers:
            raise FlowError(f"{doc.origin}: the campaign allows no offer in the plan's region "
                               f"{region!r}; expected the plan of this campaign")
        problem = replace(problem, offers=offers)
        fleet: dict[Pool, int] = {}
        tasks: dict[str, dict[str, int]] = {}
        pool_tasks: dict[Pool, dict[str, int]] = {}
        for e in doc.fleet:
            pool = (e.instance_type, e.market)
            fleet[pool] = fleet.get(pool, 0) + e.instances
            for stage, n in e.tasks.items():
                by_type = tasks.setdefault(e.instance_type, {})
                by_type[stage] = by_type.get(stage, 0) + n
                by_pool = pool_tasks.setdefault(pool, {})
                by_pool[stage] = by_pool.get(stage, 0) + n
        deadline_s = doc.deadline_s if doc.deadline_s else campaign.deadline_h * 3600
        # the plan's fleet with its stages per pool, for replan() to tell whether it is on track
        offer_of = {(o.instance.name, o.market): o for o in offers}
        current = None
        if pool_tasks and all(p in offer_of for p in fleet):
            current = price_fleet(problem, deadline_s / 3600, [
                (offer_of[p], n, pool_tasks.get(p, {})) for p, n in fleet.items()], "plan")
        options.setdefault("current", current)
        return cls(problem, deadline_s, fleet, planned_task_s(problem, tasks), **options)

    def on_task_done(self, stage: str, runtime_s: float) -> None:
        """Record one finished task of plan stage ``stage`` (stages the plan lacks are ignored)."""
        times = self._times.get(stage)
        if times is None or not (math.isfinite(runtime_s) and runtime_s > 0):
            return
        times.append(runtime_s)
        self._fresh += 1

    def on_interruption(self, instance_type: str, market: str) -> None:
        """Record a spot node of ``instance_type`` interrupted (on-demand losses do not count)."""
        if market != "spot":
            return
        key = self._key((instance_type, market))
        self._interruptions[key] = self._interruptions.get(key, 0) + 1
        self._interrupted = True

    def measured_task_s(self) -> dict[str, float]:
        """Per stage measured so far, the mean wall seconds of its last ``window`` tasks."""
        return {s: sum(t) / len(t) for s, t in self._times.items() if t}

    def progress(self, remaining_tasks_by_stage: Mapping[str, int],
                 elapsed_s: float) -> RunProgress:
        """What :func:`planner.replan.replan` is given now (module docstring); records totals."""
        left: dict[str, int] = {}
        for stage, n in self._stage_tasks.items():
            now = remaining_tasks_by_stage.get(stage)
            if now is None:
                left[stage] = n  # a stage the runtime does not count: all of it left
                continue
            if now < 0:
                raise FlowError(f"remaining tasks of stage {stage!r} = {now}, expected >= 0")
            total = self._totals[stage] = max(self._totals.get(stage, 0), now)
            left[stage] = math.ceil(n * now / total) if total else 0
        return RunProgress(elapsed_s, left, self.measured_task_s(), self.calibrated_task_s,
                           dict(self._interruptions), dict(self._instance_h), self.current)

    def fleet_for(self, remaining_tasks_by_stage: Mapping[str, int],
                  elapsed_s: float) -> Mapping[Pool, int] | None:
        """The nodes to ask for now, per (instance type, market); None keeps the current request."""
        if not (math.isfinite(elapsed_s) and elapsed_s >= 0):
            raise FlowError(f"elapsed_s = {elapsed_s!r}, expected a number of seconds >= 0")
        if self._last_call_s is not None:
            hours = max(0.0, elapsed_s - self._last_call_s) / 3600
            for pool, n in self.fleet.items():
                if pool[1] == "spot":
                    key = self._key(pool)
                    self._instance_h[key] = self._instance_h.get(key, 0.0) + n * hours
        self._last_call_s = elapsed_s
        progress = self.progress(remaining_tasks_by_stage, elapsed_s)
        due = (self._fresh >= self.min_tasks or self._interrupted) and (
            self._last_replan_s is None or elapsed_s - self._last_replan_s >= self.min_interval_s)
        if not due or not self.measured_task_s():
            return None
        self._fresh = 0
        self._interrupted = False
        self._last_replan_s = elapsed_s
        try:
            decision = replan(self.problem, progress, self.deadline_s, safety=self.safety)
        except PlannerError as exc:
            reason = f"re-plan at {elapsed_s:.0f} s found no fleet, keeping the current one: {exc}"
            self.history.append(ReplanEvent(elapsed_s, progress, None, None, reason))
            self._say(reason)
            return None
        if decision.plan is None:  # nothing left: the run's own request shrinks to nothing
            self.history.append(ReplanEvent(elapsed_s, progress, decision, None, decision.reason))
            return None
        fleet = fleet_counts(decision.plan)
        grows = any(n > self.fleet.get(pool, 0) for pool, n in fleet.items())
        confirmed = self._shrinking
        self._shrinking = not grows and fleet != self.fleet
        if fleet == self.fleet or not (grows or confirmed):
            reason = decision.reason if fleet == self.fleet else (
                f"{decision.reason}; fewer nodes ({_describe(fleet)}) once the next re-plan "
                "agrees")
            self.history.append(ReplanEvent(elapsed_s, progress, decision, None, reason))
            return None
        before = _describe(self.fleet)
        self.fleet = fleet
        self.current = decision.plan
        self.history.append(ReplanEvent(elapsed_s, progress, decision, fleet, decision.reason))
        self._say(f"re-plan at {elapsed_s:.0f} s: {decision.reason}; fleet {before} -> "
                  f"{_describe(fleet)}")
        return dict(fleet)

    def _key(self, pool: Pool) -> str:
        """The catalog's offer key of a pool in the cluster's region."""
        return f"{pool[0]}/{self._region}/{pool[1]}"


def _describe(fleet: Mapping[Pool, int]) -> str:
    return ", ".join(f"{n} {t} ({m})" for (t, m), n in sorted(fleet.items())) or "none"
