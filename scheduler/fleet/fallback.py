"""Spot fallback: when a spot type keeps being interrupted, move its work elsewhere within budget.

Model. Each (type, market) pool records its interruptions. A pool is
*flapping* when it had at least ``max_interruptions`` within the trailing
``window_s``. For a flapping spot pool with ``remaining_vcpu_h`` of work left
(the plan's busy instance-hours times vCPUs, less what is done), each
candidate offer ``o`` (one of its :func:`fallback_pools`, not itself
flapping) costs

    cost(o) = remaining_vcpu_h / vcpus(o) * price(o) * (1 + rework(o))

where ``rework(o) = interruptions_per_h(o) * mean_task_h / 2`` is the
expected share of work redone after interruptions (half a task lost per
interruption on average). Spot candidates are preferred in order of cost;
on-demand (no rework) is the last resort. The cheapest candidate whose cost
fits ``budget_left_usd`` is chosen; when none fits, the decision says so and
names the cheapest option and its cost, so the runtime can report it rather
than overspend silently.

Deployable. The candidates are not the whole catalog but the pool's
:func:`fallback_pools`: the :data:`FALLBACK_SPOT_POOLS` cheapest spot offers
of the same architecture with at least its vCPUs and memory per vCPU (a
task that fit fits again, and the runtime asks for the fallback node for
node), then the cheapest such on-demand offer, ranked by ``cost``.
``eochain cluster-config`` renders a node type for each of them (and for
theirs, since a fallback pool may flap in turn), capped at the nodes of the
pools it may replace: the autoscaler can launch whatever is chosen here.

Pure: prices come from :class:`planner.catalog.PriceCatalog`; no cloud call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

from planner.catalog import Offer, PriceCatalog
from scheduler.cloud.errors import ClusterConfigError

#: Spot pools a flapping pool may fall back to, before the on-demand one.
FALLBACK_SPOT_POOLS = 2

Pool = tuple[str, str]


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    max_interruptions: int = 3
    window_s: float = 3600.0
    mean_task_h: float = 0.05

    def __post_init__(self) -> None:
        if self.max_interruptions < 1 or not self.window_s > 0 or not self.mean_task_h > 0:
            raise ClusterConfigError(
                f"fallback policy {self!r}: expected max_interruptions >= 1, window_s > 0 and "
                "mean_task_h > 0")


@dataclass(frozen=True, slots=True)
class FallbackDecision:
    from_type: str
    from_market: str
    to_type: str | None
    to_market: str | None
    estimated_cost_usd: float | None
    reason: str

    @property
    def found(self) -> bool:
        return self.to_type is not None


class InterruptionTracker:
    """Interruption times per (instance type, market), for the flapping test."""

    def __init__(self, policy: FallbackPolicy) -> None:
        self.policy = policy
        self._events: dict[tuple[str, str], deque[float]] = {}

    def record(self, instance_type: str, market: str, at_s: float) -> None:
        self._events.setdefault((instance_type, market), deque()).append(at_s)

    def count(self, instance_type: str, market: str, now_s: float) -> int:
        events = self._events.get((instance_type, market))
        if not events:
            return 0
        while events and events[0] < now_s - self.policy.window_s:
            events.popleft()
        return len(events)

    def flapping(self, instance_type: str, market: str, now_s: float) -> bool:
        return self.count(instance_type, market, now_s) >= self.policy.max_interruptions

    def flapping_pools(self, now_s: float) -> set[tuple[str, str]]:
        return {k for k in list(self._events) if self.flapping(*k, now_s)}


def _cost(offer: Offer, remaining_vcpu_h: float, policy: FallbackPolicy) -> float:
    rework = offer.interruptions_per_h * policy.mean_task_h / 2 if offer.market == "spot" else 0.0
    return remaining_vcpu_h / offer.instance.vcpus * offer.price_usd_per_h * (1 + rework)


def _fallback_offers(instance_type: str, market: str, region: str, catalog: PriceCatalog,
                     families: tuple[str, ...] | None, policy: FallbackPolicy) -> list[Offer]:
    """The offers of :func:`fallback_pools`, in its order."""
    if instance_type not in catalog.instance_types:
        raise ClusterConfigError(f"fallback: instance type {instance_type!r} not in the catalog")
    info = catalog.instance_types[instance_type]
    allowed = families if families is not None else catalog.families
    fit = [o for o in catalog.offers([region], allowed)
           if o.instance.arch == info.arch and (o.instance.name, o.market) != (instance_type, market)
           and o.instance.vcpus >= info.vcpus
           and o.instance.mem_gib / o.instance.vcpus >= info.mem_gib / info.vcpus - 1e-9]
    ranked = sorted(fit, key=lambda o: (_cost(o, 1.0, policy), o.instance.name))
    spot = [o for o in ranked if o.market == "spot"][:FALLBACK_SPOT_POOLS]
    return spot + [o for o in ranked if o.market != "spot"][:1]


def fallback_pools(instance_type: str, market: str, region: str, catalog: PriceCatalog, *,
                   families: tuple[str, ...] | None = None,
                   policy: FallbackPolicy | None = None) -> tuple[Pool, ...]:
    """The (type, market) pools a flapping pool may move to, cheapest spot first (module
    docstring); ``families`` defaults to the catalog's."""
    offers = _fallback_offers(instance_type, market, region, catalog, families,
                              policy or FallbackPolicy())
    return tuple((o.instance.name, o.market) for o in offers)


def choose_fallback(instance_type: str, market: str, region: str, catalog: PriceCatalog,
                    remaining_vcpu_h: float, budget_left_usd: float, *,
                    exclude: Collection[Pool] | None = None,
                    families: tuple[str, ...] | None = None,
                    policy: FallbackPolicy | None = None) -> FallbackDecision:
    """Where the work of a flapping pool should go, among its :func:`fallback_pools`."""
    policy = policy or FallbackPolicy()
    if remaining_vcpu_h < 0:
        raise ClusterConfigError(f"fallback: remaining_vcpu_h {remaining_vcpu_h}, expected >= 0")
    banned = set(exclude or ())
    offers = [o for o in _fallback_offers(instance_type, market, region, catalog, families, policy)
              if (o.instance.name, o.market) not in banned]
    ranked = sorted(offers, key=lambda o: (o.market != "spot",
                                           _cost(o, remaining_vcpu_h, policy), o.instance.name))
    fitting = [o for o in ranked if _cost(o, remaining_vcpu_h, policy) <= budget_left_usd]
    if fitting:
        best = fitting[0]
        cost = _cost(best, remaining_vcpu_h, policy)
        return FallbackDecision(
            instance_type, market, best.instance.name, best.market, cost,
            f"{instance_type} ({market}) keeps being interrupted; moving its remaining "
            f"{remaining_vcpu_h:.1f} vCPU-h to {best.instance.name} ({best.market}) for about "
            f"${cost:.2f} of ${budget_left_usd:.2f} left")
    cheapest = min(ranked, key=lambda o: _cost(o, remaining_vcpu_h, policy), default=None)
    detail = ("no fallback pool of the same architecture and memory per vCPU is left" if
              cheapest is None else
              f"the cheapest, {cheapest.instance.name} ({cheapest.market}), would cost about "
              f"${_cost(cheapest, remaining_vcpu_h, policy):.2f}")
    return FallbackDecision(
        instance_type, market, None, None, None,
        f"{instance_type} ({market}) keeps being interrupted but no fallback fits the "
        f"${budget_left_usd:.2f} left: {detail}; staying on {instance_type}")
