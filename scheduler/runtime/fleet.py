"""The plan's fleet during a run: ask the autoscaler for it, and watch its spot pools.

Autoscaling. A run with a plan (``plan.json``) asks Ray's autoscaler for the
plan's fleet as soon as it connects, one bundle per planned node
(:func:`scheduler.cluster_config.resource_request`: the type's vCPUs and the
custom resource ``"TYPE:MARKET"`` its node type advertises), and withdraws
the request (``bundles=[]``) when the run ends, whether it succeeded or
failed; the autoscaler then lets the nodes go once they sit idle. On a
cluster without an autoscaler (a local Ray) the request is recorded in the
GCS and changes nothing.

Spot fallback. Work on a lost node is re-queued by the dispatcher, as for any
node loss; :class:`SpotLosses` also records each lost *spot* node in an
:class:`~scheduler.cloud.fallback.InterruptionTracker` and, the first time a
pool (type, market) is flapping, says what
:func:`~scheduler.cloud.fallback.choose_fallback` advises, with

    remaining_vcpu_h = busy_instance_h(pool) * vcpus(pool) * (1 - done_fraction)
    budget_left_usd  = budget_usd (else total_cost_usd) - fleet_usd_per_h * elapsed_h

from the plan's fleet entry of that pool. The decision is reported, not
enacted: the runtime keeps using whatever nodes the cluster has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from planner.catalog import PriceCatalog, load_catalog
from scheduler.cloud.errors import ClusterConfigError
from scheduler.cloud.fallback import (
    FallbackDecision,
    FallbackPolicy,
    InterruptionTracker,
    choose_fallback,
)
from scheduler.cluster_config import fleet_from_plan, resource_request

__all__ = ["SpotLosses", "fleet_bundles", "plan_region", "requested_fleet"]

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
                  cpus_per_node: float | None = None,
                  source: str = "plan.json") -> list[dict[str, float]]:
    """The autoscaler request for the plan's fleet: one bundle per planned node (pure)."""
    catalog = catalog or load_catalog()
    fleet = fleet_from_plan(plan, plan_region(plan, source), catalog, source)
    return resource_request(fleet, cpus_per_node)


def _request(bundles: Sequence[Mapping[str, float]]) -> None:
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[dict(b) for b in bundles])


@contextmanager
def requested_fleet(bundles: Sequence[Mapping[str, float]]) -> Iterator[None]:
    """Ask the connected cluster's autoscaler for ``bundles``; withdraw the request on exit.

    Nothing is asked for an empty ``bundles``. The withdrawal runs on any
    exit (a failed run must not keep a fleet up) and, when Ray is no longer
    connected, is skipped: the request died with the connection's cluster.
    """
    if not bundles:
        yield
        return
    import ray

    _request(bundles)
    log.info("asked the autoscaler for %d nodes of the plan's fleet", len(bundles))
    try:
        yield
    finally:
        if ray.is_initialized():
            _request([])


class SpotLosses:
    """Lost spot nodes per pool, and the fallback advice said once per flapping pool.

    ``plan`` (a ``plan.json`` dict) gives the region, the pools' remaining work
    and the budget; without one a flapping pool is reported without advice.
    ``say`` receives each message (default: a warning on this module's logger).
    """

    def __init__(self, plan: Mapping[str, Any] | None = None, *,
                 catalog: PriceCatalog | None = None, policy: FallbackPolicy | None = None,
                 say: Callable[[str], None] | None = None, start_s: float | None = None) -> None:
        self.plan = plan
        self.policy = policy or FallbackPolicy()
        self.tracker = InterruptionTracker(self.policy)
        self._catalog = catalog
        self._say = say or log.warning
        self.start_s = time.monotonic() if start_s is None else start_s
        self.decisions: list[FallbackDecision] = []
        self.messages: list[str] = []
        self._said: set[tuple[str, str]] = set()

    def node_lost(self, resources: Iterable[str], now_s: float, done_fraction: float) -> None:
        """Record a lost node by its custom resources (``"c7g.large:spot"``).

        Only spot markets count: an on-demand node lost is not an interruption.
        """
        for tag in resources:
            instance_type, _, market = tag.rpartition(":")
            if market != "spot" or not instance_type:
                continue
            self.tracker.record(instance_type, market, now_s)
            pool = (instance_type, market)
            if pool in self._said or not self.tracker.flapping(instance_type, market, now_s):
                continue
            self._said.add(pool)
            message = self._advise(instance_type, market, now_s, done_fraction)
            self.messages.append(message)
            self._say(message)

    def _advise(self, instance_type: str, market: str, now_s: float, done_fraction: float) -> str:
        n = self.tracker.count(instance_type, market, now_s)
        if self.plan is None:
            return (f"{instance_type} ({market}) lost {n} nodes within {self.policy.window_s:.0f} s; "
                    "no plan to choose a fallback from (run with --plan plan.json)")
        entries = [e for e in self.plan.get("fleet", [])
                   if e.get("instance_type") == instance_type and e.get("market") == market]
        remaining = sum(float(e.get("busy_instance_h", 0.0)) * float(e.get("vcpus", 0))
                        for e in entries) * max(0.0, 1.0 - done_fraction)
        fleet_usd_per_h = sum(float(e.get("instances", 0)) * float(e.get("price_usd_per_h", 0.0))
                              for e in self.plan.get("fleet", []))
        budget = self.plan.get("budget_usd")
        if budget is None:
            budget = self.plan.get("total_cost_usd", 0.0)
        spent = fleet_usd_per_h * max(0.0, now_s - self.start_s) / 3600.0
        try:
            decision = choose_fallback(
                instance_type, market, plan_region(self.plan), self._catalog or load_catalog(),
                remaining, max(0.0, float(budget) - spent),
                exclude=self.tracker.flapping_pools(now_s), policy=self.policy)
        except ClusterConfigError as exc:
            return f"{instance_type} ({market}) keeps being interrupted; no fallback: {exc}"
        self.decisions.append(decision)
        return decision.reason
