"""What the dispatcher tells :class:`~scheduler.observe.metrics.CampaignMetrics` about a run.

The dispatcher reports every task event of a Ray run here (none when it has
no metrics). Actors report through the :class:`~scheduler.runtime.actors.TaskStatus`
each task returns (run time, the worker's peak memory, output pixels); this
adapter turns it, and the driver's own events, into metric calls:

==============================  =====================================================
dispatcher event                metric call
==============================  =====================================================
run starts                      ``tasks_planned(op, n)`` per operation
task submitted to a slot        ``task_started(op, instance_type)``
status read                     ``task_finished(op, instance_type, runtime_s, ...)``
Ray error, task requeued        ``task_lost(op, instance_type)``
task failed (final)             ``task_finished(..., ok=False)``; its skipped
                                descendants ``tasks_skipped(op, n)``
held or released result lost    ``recomputed(op)`` per task that must run again
product record returned         ``product_written(op, area_m2)``
task given inputs in another    ``cross_zone(nbytes)``: the bytes it reads across
zone than its actor's           zones
node departed                   ``node_departed(instance_type, cause)``; an interruption
                                also ``interrupted(instance_type)`` (no other cause of
                                :mod:`scheduler.fleet.departures` counts as one)
spot fallback found             ``fallback(from_type, from_market, to_market)``
progress snapshot               ``observe_progress(progress)`` (bytes in flight)
==============================  =====================================================

The operation of a task is :func:`~scheduler.observe.metrics.op_name` of its
function, computed once per task; the instance type is the one named by the
slot's node resources (``"c7g.large:spot"`` -> ``c7g.large``), ``local``
without one. Each call is a few dictionary look-ups under a lock.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.fleet.departures import DepartureCause
from scheduler.fleet.fallback import FallbackDecision
from scheduler.observe.metrics import CampaignMetrics, ProgressLike, op_name
from scheduler.observe.metrics_hooks import area_m2, node_type_of
from scheduler.runtime.actors import TaskStatus
from scheduler.runtime.state import Failure, TaskGraph


class DispatchMetrics:
    """Reports one dispatch run over ``graph`` to ``metrics`` (see the module docstring)."""

    def __init__(self, metrics: CampaignMetrics, graph: TaskGraph) -> None:
        self.metrics = metrics
        self.graph = graph
        self.op_of = {key: op_name(task.fn) for key, task in graph.tasks.items()}
        self._types: dict[frozenset[str], str] = {}
        counts: dict[str, int] = {}
        for op in self.op_of.values():
            counts[op] = counts.get(op, 0) + 1
        for op, n in sorted(counts.items()):
            metrics.tasks_planned(op, n)

    def instance_type(self, resources: frozenset[str]) -> str:
        """The instance type a slot's node resources name (cached per resource set)."""
        itype = self._types.get(resources)
        if itype is None:
            itype = self._types[resources] = node_type_of(resources)[0]
        return itype

    def started(self, key: str, resources: frozenset[str]) -> None:
        self.metrics.task_started(self.op_of[key], self.instance_type(resources))

    def finished(self, key: str, resources: frozenset[str], status: TaskStatus) -> None:
        self.metrics.task_finished(
            self.op_of[key], self.instance_type(resources), status.runtime_s, ok=status.ok,
            pixels=status.pixels,
            peak_memory_bytes=status.peak_memory_bytes or None)

    def failed(self, key: str, resources: frozenset[str], failure: Failure) -> None:
        """A run that ended without a status (a final Ray error); descendants skipped."""
        self.metrics.task_finished(self.op_of[key], self.instance_type(resources), 0.0,
                                   ok=False)
        self.skipped(failure)

    def skipped(self, failure: Failure) -> None:
        counts: dict[str, int] = {}
        for k in failure.skipped:
            counts[self.op_of[k]] = counts.get(self.op_of[k], 0) + 1
        for op, n in sorted(counts.items()):
            self.metrics.tasks_skipped(op, n)

    def lost(self, key: str, resources: frozenset[str]) -> None:
        self.metrics.task_lost(self.op_of[key], self.instance_type(resources))

    def recomputed(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.metrics.recomputed(self.op_of[k])

    def result(self, key: str, value: object) -> None:
        """A sink's value came back: a product record counts as a product with its area."""
        if hasattr(value, "uri"):
            fn = self.graph.tasks[key].fn
            self.metrics.product_written(str(getattr(fn, "op", self.op_of[key])), area_m2(fn))

    def cross_zone(self, nbytes: int) -> None:
        """A task was given ``nbytes`` of input held in another zone than its actor's."""
        self.metrics.cross_zone(nbytes)

    def departed(self, instance_type: str, cause: DepartureCause) -> None:
        """A node left, counted by cause; only an interruption counts as one of its type."""
        self.metrics.node_departed(instance_type or "local", cause.value)
        if cause is DepartureCause.INTERRUPTION:
            self.metrics.interrupted(instance_type or "local")

    def fallback(self, decision: FallbackDecision) -> None:
        """A flapping spot pool's work moves to ``decision``'s pool (when one was found)."""
        if decision.to_market is not None:
            self.metrics.fallback(decision.from_type, decision.from_market, decision.to_market)

    def progress(self, snapshot: ProgressLike) -> None:
        self.metrics.observe_progress(snapshot)
