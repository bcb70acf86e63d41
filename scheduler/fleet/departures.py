"""Why a node left the cluster, decided from what the driver knew when it left (pure).

Every node departure the dispatcher sees (a node alive at one re-read of the
cluster and gone at the next) gets one cause; the first rule that holds wins:

=================  ===============================================================  =========
cause              when                                                             feeds
=================  ===============================================================  =========
``interruption``   a spot notice drained it (a drain with a deadline: the           spot tracker,
                   :class:`~scheduler.fleet.drain.RayNodeDrainer` of its watcher)   interruption
                                                                                    metric, fallback
``scale-down``     it left idle while the run's own autoscaler request asked for    nothing
                   fewer nodes of its pool (type, market) than were alive
``drain``          it was draining without a deadline (an operator's or the         nothing
                   autoscaler's drain)
``interruption``   a spot node lost while busy (running a task of the run,          as above
                   holding a result a task still needs, or where a call was lost
                   just before: :class:`LostWork`)
``failure``        anything else: an on-demand node lost, an idle spot node lost    nothing
                   while the request still wanted it
=================  ===============================================================  =========

Only interruptions say anything about a spot market; a node the run itself
let go (its request shrank as stages finished) is not one, so ordinary
scale-downs never push a pool towards the fallback.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from scheduler.runtime.errors import GraphError

#: (instance type, market) of a node without a ``"TYPE:MARKET"`` resource.
UNTYPED = ("", "")


class DepartureCause(Enum):
    INTERRUPTION = "interruption"
    SCALE_DOWN = "scale-down"
    DRAIN = "drain"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class NodeExit:
    """What the driver knew of a node when it left.

    ``requested`` is how many nodes of its pool the run's autoscaler request
    asks for now (``None``: the run made no request); ``alive_before`` how
    many nodes of its pool were alive at the previous re-read, this one
    included.
    """

    node_id: str
    instance_type: str
    market: str
    busy: bool
    notice: bool
    draining: bool
    requested: int | None
    alive_before: int

    def __post_init__(self) -> None:
        if self.alive_before < 1:
            raise GraphError(f"node {self.node_id}: alive_before = {self.alive_before}, "
                             "expected >= 1 (the node itself was alive)")
        if self.requested is not None and self.requested < 0:
            raise GraphError(f"node {self.node_id}: requested = {self.requested}, expected >= 0")


@dataclass(frozen=True, slots=True)
class Departure:
    """A node that left, its pool, its cause and when it was seen gone (monotonic seconds).

    ``held``: what the run had on it then ("2 calls running, 1 result still needed, a call
    lost there"; empty when idle), which makes a lost spot node an interruption.
    """

    node_id: str
    instance_type: str
    market: str
    cause: DepartureCause
    seen_at_s: float
    held: str = ""


#: A node where a call was lost but that is still alive this long after is not going: Ray's
#: GCS declares a lost node dead after several failed health checks (seconds to a minute),
#: and only a node that went counts as busy for what was lost there before it was declared
#: dead (its departure's cause).
LOST_WORK_FORGOTTEN_S = 120.0


class LostWork:
    """Nodes where a call was lost (an actor or an input gone): busy, should they leave.

    A node's calls fail before Ray declares the node dead, so when it is seen gone they
    are no longer running; this remembers them. A crash on a node that lives on is not
    that node going, so its mark is forgotten once a call sent after it comes back from
    the node, or once the node is still alive ``forget_after_s`` later.
    """

    def __init__(self, forget_after_s: float = LOST_WORK_FORGOTTEN_S) -> None:
        self.forget_after_s = forget_after_s
        self._lost_at: dict[str, float] = {}

    def lost(self, node_id: str, now_s: float) -> None:
        self._lost_at[node_id] = now_s

    def came_back(self, node_id: str, sent_s: float) -> None:
        """A call sent at ``sent_s`` returned from ``node_id``."""
        if self._lost_at.get(node_id, math.inf) < sent_s:
            del self._lost_at[node_id]

    def still_alive(self, alive: Iterable[str], now_s: float) -> None:
        """``alive`` are alive at ``now_s``: forget their marks older than the delay."""
        for node_id in [n for n in alive if now_s - self._lost_at.get(n, now_s)
                        > self.forget_after_s]:
            del self._lost_at[node_id]

    def nodes(self) -> set[str]:
        return set(self._lost_at)


def departure_cause(node: NodeExit) -> DepartureCause:
    """The cause of ``node``'s departure (the table of the module docstring)."""
    if node.notice:
        return DepartureCause.INTERRUPTION
    if not node.busy and node.requested is not None and node.requested < node.alive_before:
        return DepartureCause.SCALE_DOWN
    if node.draining:
        return DepartureCause.DRAIN
    if node.market == "spot" and node.busy:
        return DepartureCause.INTERRUPTION
    return DepartureCause.FAILURE


def pool_of(resources: Iterable[str]) -> tuple[str, str]:
    """The (instance type, market) a node's custom resources name (``"c7g.large:spot"``)."""
    for tag in sorted(resources):
        instance_type, _, market = tag.rpartition(":")
        if instance_type and market in ("spot", "on-demand"):
            return instance_type, market
    return UNTYPED


#: The custom resource naming a spread plan's zone (``eochain-zone-0``...), carried by the node
#: types that ``eochain cluster-config`` renders in that zone's subnet.
ZONE_RESOURCE_PREFIX = "eochain-zone-"


def zone_of(resources: Iterable[str]) -> str | None:
    """The zone resource (``"eochain-zone-1"``) among a node's custom resources; None: none."""
    for tag in resources:
        if tag.startswith(ZONE_RESOURCE_PREFIX):
            return tag
    return None


def requested_per_pool(bundles: Iterable[Mapping[str, float]]) -> dict[tuple[str, str], int]:
    """Nodes asked per pool by an autoscaler request (one bundle per node, see autoscaling.py)."""
    counts: dict[tuple[str, str], int] = {}
    for bundle in bundles:
        pool = pool_of(bundle)
        if pool != UNTYPED:
            counts[pool] = counts.get(pool, 0) + 1
    return counts
