"""The dispatcher's actors: one :class:`~scheduler.runtime.actors.TileWorker` per CPU share of
every alive node, re-read from the cluster, quarantined when they die, retired when drained.

Each actor is pinned to its node (hard node affinity, no Ray restarts: the
dispatcher does its own recovery); a node's custom resources
(``"c7g.large:spot"``) tag its actors, so a task preferring a type finds them.
Nodes Ray is draining (:func:`~scheduler.fleet.drain.draining_nodes`) get no
new actor. See :mod:`scheduler.runtime.dispatch` for how tasks reach them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scheduler.fleet.drain import draining_nodes
from scheduler.runtime.actors import TileWorker, kernel_threads

if TYPE_CHECKING:
    from scheduler.runtime.options import DispatchOptions

STANDARD_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")
#: Seconds a node where an actor died gets no new actor (it may be going down).
QUARANTINE_S = 10.0
#: Seconds between re-reads of the cluster's nodes (new nodes get actors, dead ones lose theirs).
RESYNC_S = 2.0


@dataclass(slots=True)
class _Slot:
    handle: Any
    node_id: str
    resources: frozenset[str]
    running: int = 0
    #: expected seconds of the calls queued on it (their tasks' mean runtimes so far)
    queued_s: float = 0.0
    _methods: dict[int, Any] = field(default_factory=dict)

    def method(self, num_returns: int) -> Any:
        """The actor's ``run_batch`` with ``num_returns`` returns (built once per count)."""
        m = self._methods.get(num_returns)
        if m is None:
            m = self._methods[num_returns] = self.handle.run_batch.options(
                num_returns=num_returns)
        return m


class ActorPool:
    """One :class:`TileWorker` per ``cpus_per_actor`` CPUs on each alive node."""

    def __init__(self, options: DispatchOptions, preload: tuple[str, ...] = ()) -> None:
        """``preload``: modules every actor imports as soon as it starts
        (:meth:`~scheduler.runtime.actors.TileWorker.preload`), before its first task."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        self._affinity = NodeAffinitySchedulingStrategy
        self.options = options
        self._remote = ray.remote(TileWorker)
        self.slots: list[_Slot] = []
        self.dead_nodes: set[str] = set()
        #: custom resources of every node seen alive (dead ones kept, for reports)
        self.tags_of: dict[str, frozenset[str]] = {}
        self.synced_at = 0.0
        self._quarantine: dict[str, float] = {}
        #: nodes Ray is draining -> deadline (epoch s); they get no new task or actor
        self.draining: dict[str, float] = {}
        #: nodes found draining by the last :meth:`sync`
        self.newly_draining: dict[str, float] = {}
        #: nodes alive at the last :meth:`sync`
        self.alive: set[str] = set()
        #: nodes the run lets go (its request shrank): no new task or actor, idle actors ended
        self.released: set[str] = set()
        #: CPUs of the largest pool so far
        self.cpus = 0.0
        #: object store bytes of the nodes alive at the last :meth:`sync`
        self.object_store_bytes = 0
        self.preload = preload

    def sync(self) -> set[str]:
        """Re-read the cluster: drop actors of dead nodes, top up actors on alive ones.

        Returns the ids of nodes seen alive before and found dead since the
        last call (with or without actors left on them). A node where
        an actor died is left without new actors for ``QUARANTINE_S``: it may
        be dying, and Ray reports a node dead only after missed heartbeats.
        """
        alive: dict[str, Mapping[str, float]] = {}
        for node in self._ray.nodes():  # type: ignore[no-untyped-call]
            if node["Alive"]:
                alive[node["NodeID"]] = node.get("Resources", {})
        self.newly_draining = {n: t for n, t in draining_nodes().items()
                               if n in alive and n not in self.draining}
        self.draining.update(self.newly_draining)
        newly_dead = {n for n in self.tags_of if n not in alive}
        newly_dead -= self.dead_nodes
        self.dead_nodes |= newly_dead
        self.slots = [s for s in self.slots if s.node_id in alive]
        now = time.monotonic()
        for node_id, res in alive.items():
            tags = frozenset(
                k for k in res
                if k not in STANDARD_RESOURCES and not k.startswith("node:")
                and not k.startswith("accelerator_type:")
            )
            self.tags_of[node_id] = tags
            if self._quarantine.get(node_id, 0.0) > now or node_id in self.draining \
                    or node_id in self.released:
                continue
            want = int(res.get("CPU", 0.0) // self.options.cpus_per_actor)
            have = sum(1 for s in self.slots if s.node_id == node_id)
            for _ in range(want - have):
                handle = self._remote.options(
                    num_cpus=self.options.cpus_per_actor,
                    max_restarts=0,
                    scheduling_strategy=self._affinity(node_id=node_id, soft=False),
                ).remote(self.options.scratch_root,
                         kernel_threads(self.options.cpus_per_actor))
                if self.preload:
                    # queued ahead of any task on this actor (its calls run in order)
                    handle.preload.remote(self.preload)
                self.slots.append(_Slot(handle, node_id, tags))
        self.synced_at = now
        self.alive = set(alive)
        self.object_store_bytes = int(sum(res.get("object_store_memory", 0.0)
                                          for res in alive.values()))
        self.cpus = max(self.cpus, len(self.slots) * self.options.cpus_per_actor)
        return newly_dead

    def add_preload(self, modules: tuple[str, ...]) -> None:
        """Have every actor, started or to come, import ``modules`` too (those it has not)."""
        new = tuple(m for m in modules if m not in self.preload)
        if not new:
            return
        self.preload += new
        for slot in self.slots:
            slot.handle.preload.remote(new)  # queued ahead of any task, as the first preload

    def replace(self, slot: _Slot) -> None:
        """An actor died: stop using its node for ``QUARANTINE_S``, then :meth:`sync` refills it.

        The node's other actors go too (killed, so they free their CPUs): a
        node that is going down fails every call fast, and would otherwise
        draw task after task until Ray declares it dead.
        """
        from ray.exceptions import RayError

        for other in [s for s in self.slots if s.node_id == slot.node_id]:
            self.slots.remove(other)
            try:
                self._ray.kill(other.handle)
            except RayError:
                pass  # already gone with its node
        self._quarantine[slot.node_id] = time.monotonic() + QUARANTINE_S

    def free(self, calls_per_actor: int) -> list[_Slot]:
        return [s for s in self.usable() if s.running < calls_per_actor]

    def usable(self) -> list[_Slot]:
        """Actors that may get new tasks (not on a draining node, nor one let go)."""
        return [s for s in self.slots
                if s.node_id not in self.draining and s.node_id not in self.released]

    def release(self, nodes: set[str]) -> None:
        """Let ``nodes`` go (the run's request no longer wants them): they get no new task,
        and their actors end once idle, so the autoscaler can remove them. A node no longer
        in ``nodes`` gets actors again at the next :meth:`sync`."""
        self.released = set(nodes)
        self._end_idle(self.released)

    def retire_draining(self) -> None:
        """Kill the actors of draining nodes that run nothing kept, so those nodes can leave."""
        self._end_idle(set(self.draining))

    def _end_idle(self, nodes: set[str]) -> None:
        """Kill the actors of ``nodes`` that run nothing."""
        from ray.exceptions import RayError

        for slot in [s for s in self.slots if s.node_id in nodes and s.running == 0]:
            self.slots.remove(slot)
            try:
                self._ray.kill(slot.handle)
            except RayError:
                pass  # already gone with its node

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Remove every actor's scratch folder, then end the actors."""
        from ray.exceptions import RayError

        closing = [slot.handle.close.remote() for slot in self.slots]
        try:
            self._ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
        except RayError:
            pass  # an actor on a dead node has nothing left to clean
        for slot in self.slots:
            self._ray.kill(slot.handle)
        self.slots = []
