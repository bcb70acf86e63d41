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
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol, TypeVar

__all__ = ["Choice", "Placement", "candidates", "choose", "surplus_nodes"]

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


def candidates(placement: Placement, resources: tuple[str, ...],
               free: Sequence[S]) -> list[S]:
    """The free actors a task goes to: those of its own types when any is free, else those
    the placement allows (of nodes the plan placed nothing on)."""
    if not resources:
        return list(free)
    accepted = placement.accepted(resources)
    own = [s for s in free if not s.resources.isdisjoint(accepted)]
    return own or [s for s in free if placement.allows(resources, s.resources)]


def choose(placement: Placement, resources: tuple[str, ...], free: Sequence[SlotLike],
           usable: Sequence[SlotLike], requested: Iterable[Pool], waited_s: float,
           wait_s: float) -> Choice:
    """What to do with a ready task now (module docstring); ``free`` is non-empty."""
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
