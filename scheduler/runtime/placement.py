"""Which actors may run a task: the plan's placement of stages on node types, enforced (pure).

A task names the Ray resources of the node types its stage is placed on
(``Task.resources``: ``"c7g.xlarge:spot"``..., from ``plan.json``; empty:
anywhere). A spot fallback moves a pool's stages to another pool: the
substitutions (type, market) -> (type, market) of the run's
:class:`~scheduler.fleet.autoscaling.FleetRequest` extend each task's types with
their replacements (:meth:`Placement.accepted`). The run's *placed* resources
are the union of its tasks' accepted ones and of the pools the plan places
stages on (a stage already done, or not run this time, keeps its nodes). Then:

=====================================  =============================================
actor of a node that carries           runs
=====================================  =============================================
a placed resource                      only tasks placed on one of its resources
no placed resource (a node without a   any task
type, a re-plan's extra pool)
=====================================  =============================================

A task goes to a free actor of its own types when there is one, else to a
free actor the placement allows (:func:`candidates`). A task that no free
actor may run (:func:`choose`):

* waits while an actor that may run it exists (busy now), or while one of its
  types is asked of the autoscaler and ``waited_s < wait_s`` (its node is
  coming up);
* else runs on any free actor: a type that is neither there nor coming never
  stalls the campaign (a local cluster without the plan's types runs the
  whole plan on what it has).

Zones. A plan spread over zones renders one node type per zone, each node
carrying its zone's resource (``eochain-zone-N``,
:func:`~scheduler.fleet.departures.zone_of`). A task's zone is the one
holding most of its input bytes (:func:`input_zone`; a task without inputs,
a product's plan, has none and goes anywhere), so a product's tasks follow
its plan's zone and the bytes its DAG moves stay in one AZ. While its zone
has a live actor the placement allows, a task runs only there (it waits
while they are busy, rather than read its inputs across zones); when its
zone has none left (a spot zone lost, its nodes draining or gone, or none of
the task's types there) it falls back to the rules above, in any zone, and
the dispatcher counts the move and the bytes it reads across zones
(:func:`input_bytes_by_zone`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

from scheduler.fleet.departures import zone_of

__all__ = ["Choice", "Placement", "bytes_across", "candidates", "choose", "input_bytes_by_zone",
           "input_zone", "surplus_nodes"]

Pool = tuple[str, str]


class SlotLike(Protocol):
    @property
    def resources(self) -> frozenset[str]: ...


S = TypeVar("S", bound=SlotLike)


class Choice(Enum):
    OWN = "own"      # a free actor the placement allows
    WAIT = "wait"    # no free one now: one is busy, or its node is coming up
    ANY = "any"      # its types are neither there nor coming: any free actor


@dataclass(frozen=True, slots=True)
class Placement:
    """The run's placed resources (with ``substitutions`` applied); see the module docstring."""

    placed: frozenset[str]
    #: (flapping pool, its fallback) pairs, sorted
    substitutions: tuple[tuple[Pool, Pool], ...]

    @classmethod
    def of(cls, task_resources: Iterable[tuple[str, ...]],
           substitutions: Mapping[Pool, Pool] | None = None,
           planned: Iterable[str] = ()) -> Placement:
        """The placement of tasks with ``task_resources``; ``planned``: the resources the plan
        places stages on (placed too, whether or not this dispatch has tasks of them)."""
        subs = tuple(sorted((substitutions or {}).items()))
        placed: set[str] = set()
        for resources in {*task_resources, tuple(sorted(planned))}:
            placed |= _accepted(resources, subs)
        return cls(frozenset(placed), subs)

    def accepted(self, resources: tuple[str, ...]) -> frozenset[str]:
        """A task's resources and those of the pools that replaced them."""
        return _accepted(resources, self.substitutions)

    def allows(self, resources: tuple[str, ...], slot: frozenset[str]) -> bool:
        """Whether an actor of a node with custom resources ``slot`` may run the task."""
        if not resources or slot.isdisjoint(self.placed):
            return True
        return not slot.isdisjoint(self.accepted(resources))


@functools.lru_cache(maxsize=1024)
def _accepted(resources: tuple[str, ...], substitutions: tuple[tuple[Pool, Pool], ...]
              ) -> frozenset[str]:
    """(Cached: the dispatcher asks for every task it places.)"""
    subs = dict(substitutions)
    out = set(resources)
    for tag in resources:
        itype, _, market = tag.rpartition(":")
        pool = (itype, market)
        seen = {pool}
        while pool in subs and subs[pool] not in seen:  # a fallback's fallback
            pool = subs[pool]
            seen.add(pool)
            out.add(f"{pool[0]}:{pool[1]}")
    return frozenset(out)


def input_bytes_by_zone(deps: Iterable[str], where: Mapping[str, str],
                        bytes_of: Mapping[str, int], tags_of: Mapping[str, frozenset[str]]
                        ) -> dict[str | None, int]:
    """Bytes of a task's held inputs per zone of the node holding them (None: a node of no
    zone); ``where``: input -> node, ``tags_of``: node -> its custom resources."""
    out: dict[str | None, int] = {}
    for d in deps:
        node = where.get(d)
        if node is not None:
            zone = zone_of(tags_of.get(node, ()))
            out[zone] = out.get(zone, 0) + bytes_of.get(d, 0)
    return out


def input_zone(by_zone: Mapping[str | None, int]) -> str | None:
    """The zone a task belongs to: the one holding most of its input bytes (ties: the first
    by name); None when no input is held in a zone (a product's plan task)."""
    zones = sorted(z for z in by_zone if z is not None)
    return max(zones, key=lambda z: by_zone[z]) if zones else None


def bytes_across(by_zone: Mapping[str | None, int], zone: str | None) -> int:
    """The input bytes (:func:`input_bytes_by_zone`) a node in ``zone`` reads from nodes of
    other zones (0 where either zone is unknown: a cluster without zone resources)."""
    if zone is None:
        return 0
    return sum(b for z, b in by_zone.items() if z is not None and z != zone)


def _home(placement: Placement, resources: tuple[str, ...], slots: Sequence[S],
          zone: str | None) -> list[S]:
    """The actors of ``slots`` in ``zone`` that the placement allows to run the task."""
    if zone is None:
        return []
    return [s for s in slots
            if zone_of(s.resources) == zone and placement.allows(resources, s.resources)]


def candidates(placement: Placement, resources: tuple[str, ...],
               free: Sequence[S], zone: str | None = None) -> list[S]:
    """The free actors a task goes to: those of its zone when it has any (module docstring),
    among them those of its own types when any is free, else those the placement allows
    (of nodes the plan placed nothing on)."""
    free = _home(placement, resources, free, zone) or free
    if not resources:
        return list(free)
    accepted = placement.accepted(resources)
    own = [s for s in free if not s.resources.isdisjoint(accepted)]
    return own or [s for s in free if placement.allows(resources, s.resources)]


def choose(placement: Placement, resources: tuple[str, ...], free: Sequence[SlotLike],
           usable: Sequence[SlotLike], requested: Iterable[Pool], waited_s: float,
           wait_s: float, zone: str | None = None) -> Choice:
    """What to do with a ready task of ``zone`` now (module docstring); ``free`` is
    non-empty."""
    if _home(placement, resources, usable, zone):
        return Choice.OWN if _home(placement, resources, free, zone) else Choice.WAIT
    if any(placement.allows(resources, s.resources) for s in free):
        return Choice.OWN
    if any(placement.allows(resources, s.resources) for s in usable):
        return Choice.WAIT
    coming = {f"{t}:{m}" for t, m in requested}
    if waited_s < wait_s and not coming.isdisjoint(placement.accepted(resources)):
        return Choice.WAIT
    return Choice.ANY


def surplus_nodes(pool_of_node: Mapping[str, Pool], requested: Mapping[Pool, int],
                  busy: Iterable[str]) -> set[str]:
    """The nodes to let go (pure): of each pool with more nodes alive than the request asks,
    that many idle ones (``busy``: running a task or holding a result still needed).

    Their actors are ended so the autoscaler sees them idle and removes them:
    the run's own scale-down. Nodes of no pool (``("", "")``) are never let go.
    """
    busy = set(busy)
    by_pool: dict[Pool, list[str]] = {}
    for node, pool in pool_of_node.items():
        if pool != ("", ""):
            by_pool.setdefault(pool, []).append(node)
    out: set[str] = set()
    for pool, nodes in by_pool.items():
        extra = len(nodes) - requested.get(pool, 0)
        if extra > 0:
            out.update(sorted(n for n in nodes if n not in busy)[:extra])
    return out
