"""The plan's fleet during a run: ask the autoscaler for it, and watch its spot pools.

Autoscaling. A run with a plan (``plan.json``) asks Ray's autoscaler for the
plan's fleet as soon as it connects, one bundle per planned node
(:func:`scheduler.fleet.cluster_config.resource_request`: one unit of the custom
resource ``"TYPE:MARKET"`` that each node of its type advertises), and withdraws
the request (``bundles=[]``) when the run ends, whether it succeeded or
failed; the autoscaler then lets the nodes go once they sit idle. On a
cluster without an autoscaler (a local Ray) the request is recorded in the
GCS and changes nothing.

Spot fallback. Work on a lost node is re-queued by the dispatcher, as for any
node loss; :class:`SpotLosses` also records each *interrupted* spot node (a
departure whose cause, :func:`~scheduler.fleet.departures.departure_cause`,
is an interruption: never the run's own scale-down) in an
:class:`~scheduler.fleet.fallback.InterruptionTracker` and, the first time a
pool (type, market) is flapping, says what
:func:`~scheduler.fleet.fallback.choose_fallback` advises, with

    remaining_vcpu_h = busy_instance_h(pool) * vcpus(pool) * (1 - done_fraction)
    budget_left_usd  = budget_usd (else total_cost_usd) - fleet_usd_per_h * elapsed_h

from the plan's fleet entry of that pool; ``act`` (a run's
:meth:`FleetRequest.substitute`) then enacts it.

Letting go. A node of a pool whose request fell below the nodes alive is let
go once idle (:func:`scheduler.runtime.placement.surplus_nodes`): the dispatcher ends its actors, so the
autoscaler sees it idle and removes it; its departure is then a scale-down
(:mod:`scheduler.fleet.departures`), never an interruption.

Following the queue. :func:`fleet_request` is the request for what is left:
an entry of the plan's fleet with planned ``tasks`` per stage keeps

    nodes = min(instances, ceil(sum_s tasks[s] * remaining_fraction[s]))

where ``remaining_fraction[s]`` is the share of stage ``s``'s tasks not yet
done, so a (type, market) whose stages are done is dropped, and nothing is asked
once no work is left; an entry without per-stage tasks (or only stages the
run does not know) keeps its nodes while any work remains. A found fallback
is a substitution (type, market) -> (type, market): the flapping pool's
nodes are asked for as the fallback's. :class:`FleetRequest` re-issues the
request from the run's progress loop whenever it changes, and says each
substitution through the run's output function. A live re-plan
(:meth:`FleetRequest.replan`: nodes per (type, market)) replaces the plan's
fleet in the request from then on, substitutions still applied.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from planner.catalog import PriceCatalog, load_catalog
from planner.plan_document import as_plan_document
from scheduler.cloud.errors import ClusterConfigError
from scheduler.fleet.cluster_config import fleet_from_plan, resource_request
from scheduler.fleet.fallback import (
    FallbackDecision,
    FallbackPolicy,
    InterruptionTracker,
    choose_fallback,
)

__all__ = ["FleetRequest", "SpotLosses", "fleet_bundles", "fleet_request", "plan_region"]

log = logging.getLogger(__name__)


def plan_region(plan: Mapping[str, Any], source: str = "plan.json") -> str:
    """The region of the plan's fleet (its first entry's, else the campaign's data region)."""
    fleet = plan.get("fleet")
    if isinstance(fleet, list):
        for entry in fleet:
            if isinstance(entry, Mapping) and entry.get("region"):
                return str(entry["region"])
    region = plan.get("data_region")
    if not region:
        raise ClusterConfigError(
            f"{source}: no fleet entry names a 'region' and there is no 'data_region'; "
            "expected a plan written by `eochain plan`")
    return str(region)


def fleet_bundles(plan: Mapping[str, Any], catalog: PriceCatalog | None = None,
                  source: str = "plan.json") -> list[dict[str, float]]:
    """The autoscaler request for the plan's fleet: one bundle per planned node (pure)."""
    catalog = catalog or load_catalog()
    fleet = fleet_from_plan(plan, plan_region(plan, source), catalog, source)
    return resource_request(fleet, as_plan_document(plan, source).zones)


Pool = tuple[str, str]


def fleet_request(plan: Mapping[str, Any], remaining_fraction: Mapping[str, float],
                  substitutions: Mapping[Pool, Pool] | None = None,
                  catalog: PriceCatalog | None = None, source: str = "plan.json",
                  replanned: Mapping[Pool, int] | None = None) -> list[dict[str, float]]:
    """The autoscaler request for the work left (pure; see the module docstring).

    ``remaining_fraction`` maps a stage name (``"ortho"``) to the fraction of
    its work not yet done, in [0, 1]; ``substitutions`` maps a flapping pool
    (type, market) to its fallback pool; ``replanned`` (nodes per pool, from a
    live re-plan) replaces the plan's fleet as what is asked while work is left.
    """
    for stage, f in remaining_fraction.items():
        if not 0.0 <= f <= 1.0:
            raise ClusterConfigError(
                f"remaining fraction of stage {stage!r} is {f!r}; expected a value in [0, 1]")
    any_left = any(f > 0.0 for f in remaining_fraction.values())
    subs = dict(substitutions or {})
    entries: list[dict[str, Any]] = []
    if replanned is not None:
        region = plan_region(plan, source)
        for (itype, market), nodes in sorted(replanned.items()):
            if not isinstance(nodes, int) or nodes < 0:
                raise ClusterConfigError(
                    f"re-plan: {nodes!r} nodes of {itype} ({market}); expected an integer >= 0")
            to_type, to_market = subs.get((itype, market), (itype, market))
            entries.append({"instance_type": to_type, "market": to_market, "region": region,
                            "instances": nodes if any_left else 0})
    for i, entry in enumerate([] if replanned is not None else plan.get("fleet") or []):
        if not isinstance(entry, Mapping):
            raise ClusterConfigError(f"{source}: fleet[{i}] = {entry!r}, expected a mapping")
        tasks = entry.get("tasks")
        known = {str(s): float(n) for s, n in (tasks or {}).items()
                 if str(s) in remaining_fraction} if isinstance(tasks, Mapping) else {}
        try:
            planned = int(entry.get("instances", 0))
        except (TypeError, ValueError) as exc:
            raise ClusterConfigError(
                f"{source}: fleet[{i}] instances = {entry.get('instances')!r}, expected an integer"
            ) from exc
        if known:
            left_tasks = sum(n * remaining_fraction[s] for s, n in known.items())
            nodes = min(planned, math.ceil(left_tasks - 1e-9))
        else:
            nodes = planned if any_left else 0
        pool = (str(entry.get("instance_type")), str(entry.get("market")))
        to_type, to_market = subs.get(pool, pool)
        entries.append({**entry, "instance_type": to_type, "market": to_market,
                        "instances": max(0, nodes)})
    if not any(e["instances"] for e in entries):
        return []
    return fleet_bundles({**plan, "fleet": entries}, catalog, source)


class FleetRequest:
    """The autoscaler request of a run: follows the queue and the spot fallbacks.

    :meth:`update` recomputes :func:`fleet_request` and re-issues it (``issue``,
    default ``ray.autoscaler.sdk.request_resources``) only when it changed;
    :meth:`substitute` records a fallback and says it through ``say``.
    """

    def __init__(self, plan: Mapping[str, Any], *, catalog: PriceCatalog | None = None,
                 issue: Callable[[Sequence[Mapping[str, float]]], None] | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self._catalog = catalog or load_catalog()
        self._issue = issue or _request
        self._say = say or log.warning
        self.substitutions: dict[Pool, Pool] = {}
        self.remaining_fraction: dict[str, float] = {}
        #: nodes per pool of the last live re-plan (``None``: the plan's fleet)
        self.replanned: dict[Pool, int] | None = None
        self.bundles: list[dict[str, float]] | None = None
        self.history: list[list[dict[str, float]]] = []

    def update(self, remaining_fraction: Mapping[str, float] | None = None) -> list[dict[str, float]]:
        """Re-issue the request for the work left (the last fractions when ``None``)."""
        if remaining_fraction is not None:
            self.remaining_fraction = dict(remaining_fraction)
        bundles = fleet_request(self.plan, self.remaining_fraction, self.substitutions,
                                self._catalog, replanned=self.replanned)
        if bundles != self.bundles:
            self._issue(bundles)
            self.bundles = bundles
            self.history.append(bundles)
        return bundles

    @property
    def placed(self) -> frozenset[str]:
        """The resources (``"type:market"``) of the pools the plan places tasks of a stage on."""
        return frozenset(f"{e.instance_type}:{e.market}" for e in as_plan_document(self.plan).fleet
                         if e.instances > 0 and any(n > 0 for n in e.tasks.values()))

    def replan(self, nodes_by_pool: Mapping[Pool, int]) -> list[dict[str, float]]:
        """Ask for a live re-plan's fleet (nodes per (type, market)) from now on."""
        self.replanned = dict(nodes_by_pool)
        return self.update()

    def release(self) -> None:
        """Withdraw the request (``bundles=[]``) if one was issued; the idle nodes then go."""
        if self.bundles:
            self._issue([])
            self.bundles = []
            self.history.append([])

    def substitute(self, decision: FallbackDecision) -> bool:
        """Ask for ``decision``'s fallback instead of its flapping pool; False if none was found."""
        if decision.to_type is None or decision.to_market is None:
            return False
        pool = (decision.from_type, decision.from_market)
        target = (decision.to_type, decision.to_market)
        # a pool that already replaced another passes the substitution on
        for old, new in list(self.substitutions.items()):
            if new == pool:
                self.substitutions[old] = target
        self.substitutions[pool] = target
        bundles = self.update()
        self._say(f"autoscaler: asking for {decision.to_type} ({decision.to_market}) instead of "
                  f"{decision.from_type} ({decision.from_market}); {len(bundles)} nodes requested")
        return True


def _request(bundles: Sequence[Mapping[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(b) for b in bundles])


class SpotLosses:
    """Lost spot nodes per pool, and the fallback advice said once per flapping pool.

    ``plan`` (a ``plan.json`` dict) gives the region, the pools' remaining work
    and the budget; without one a flapping pool is reported without advice.
    ``say`` receives each message (default: a warning on this module's logger);
    ``act`` receives each decision (e.g. :meth:`FleetRequest.substitute`).
    """

    def __init__(self, plan: Mapping[str, Any] | None = None, *,
                 catalog: PriceCatalog | None = None, policy: FallbackPolicy | None = None,
                 say: Callable[[str], None] | None = None, start_s: float | None = None,
                 act: Callable[[FallbackDecision], object] | None = None) -> None:
        self.plan = plan
        self._act = act
        self.policy = policy or FallbackPolicy()
        self.tracker = InterruptionTracker(self.policy)
        self._catalog = catalog
        self._say = say or log.warning
        self.start_s = time.monotonic() if start_s is None else start_s
        self.decisions: list[FallbackDecision] = []
        self.messages: list[str] = []
        self._said: set[tuple[str, str]] = set()

    def node_lost(self, resources: Iterable[str], now_s: float,
                  done_fraction: float) -> list[FallbackDecision]:
        """Record an interrupted node by its custom resources (``"c7g.large:spot"``).

        Only spot markets count: an on-demand node lost is not an interruption.
        Returns the fallback decisions this loss led to (a pool found flapping
        with a fallback to move to), each already passed to ``act``.
        """
        found: list[FallbackDecision] = []
        for tag in resources:
            instance_type, _, market = tag.rpartition(":")
            if market != "spot" or not instance_type:
                continue
            self.tracker.record(instance_type, market, now_s)
            pool = (instance_type, market)
            if pool in self._said or not self.tracker.flapping(instance_type, market, now_s):
                continue
            self._said.add(pool)
            message, decision = self._advise(instance_type, market, now_s, done_fraction)
            self.messages.append(message)
            self._say(message)
            if decision is not None:
                self.decisions.append(decision)
                found.append(decision)
                if self._act is not None:
                    self._act(decision)
        return found

    def _advise(self, instance_type: str, market: str, now_s: float,
                done_fraction: float) -> tuple[str, FallbackDecision | None]:
        n = self.tracker.count(instance_type, market, now_s)
        if self.plan is None:
            return (f"{instance_type} ({market}) lost {n} nodes within {self.policy.window_s:.0f} s; "
                    "no plan to choose a fallback from (run with --plan plan.json)"), None
        doc = as_plan_document(self.plan)
        entries = [e for e in doc.fleet
                   if e.instance_type == instance_type and e.market == market]
        remaining = sum(e.busy_instance_h * (e.vcpus or 0)
                        for e in entries) * max(0.0, 1.0 - done_fraction)
        budget = doc.budget_usd if doc.budget_usd is not None else (doc.total_cost_usd or 0.0)
        spent = doc.fleet_price_usd_per_h * max(0.0, now_s - self.start_s) / 3600.0
        try:
            decision = choose_fallback(
                instance_type, market, plan_region(self.plan), self._catalog or load_catalog(),
                remaining, max(0.0, float(budget) - spent),
                exclude=self.tracker.flapping_pools(now_s), policy=self.policy)
        except ClusterConfigError as exc:
            return f"{instance_type} ({market}) keeps being interrupted; no fallback: {exc}", None
        return decision.reason, decision
