"""The dispatcher's bookkeeping, pure: which task runs next, which result can go, what to redo.

A campaign is a DAG of :class:`Task` (a key, a plain callable, its inputs in
argument order, an estimate of its output bytes). :class:`DispatchState`
follows every task through these states::

    WAITING --inputs held--> READY --submitted--> RUNNING --ok--> HELD --last consumer ok--> RELEASED
       ^                       |                     |  \\                                   |
       +-- an input was lost --+      system failure  |   app failure -> FAILED, descendants SKIPPED
       +------------------------------<---------------+
       +-- its own result was lost (node gone) and a consumer still needs it <--------------+

* Order: READY tasks leave in priority order (the planner's depth-first
  order), so one scene is finished before the next is opened.
* Memory: a task is handed out only while the estimated bytes of results
  held plus results being computed stay under ``max_bytes_in_flight`` (one
  task is always allowed while none runs, so a task larger than the bound, or a
  join wider than it, still makes progress).
* Release: a result is held while some consumer has not finished; the moment
  its last consumer succeeds it is RELEASED (the runtime drops the ObjectRef
  and Ray frees it). Results of tasks without consumers (products) are never
  held.
* Recovery: :meth:`DispatchState.lose` puts a task back to WAITING/READY; a
  released input that it needs again is lost with it, recursively, so lost
  intermediates are recomputed from the DAG and nothing else is redone.
* Application failures (a corrupt scene) are final: the task is FAILED,
  everything downstream SKIPPED, the rest of the campaign goes on.

No Ray here: the Ray loop (:mod:`scheduler.runtime.dispatch`) and the serial
executor both drive this object, and the unit tests drive it directly.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from planner.errors import DagError
from planner.stages import parse_key, stage_of
from scheduler.runtime.errors import GraphError

if TYPE_CHECKING:  # networkx (0.06 s) is imported where a graph is built: eochain ortho needs only Task
    import networkx as nx


class TaskState(Enum):
    WAITING = "waiting"
    READY = "ready"
    RUNNING = "running"
    HELD = "held"
    RELEASED = "released"
    FAILED = "failed"
    SKIPPED = "skipped"


#: States in which a task has produced its result (it need not run again).
COMPLETED = frozenset({TaskState.HELD, TaskState.RELEASED})
#: States from which no further work will happen.
TERMINAL = frozenset({TaskState.RELEASED, TaskState.FAILED, TaskState.SKIPPED})


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: ``fn(ctx, *inputs)`` where inputs are the results of ``deps``.

    ``label`` names what a failure should be reported against (a scene id);
    ``product`` is the manifest key of the product a sink task writes.
    ``resources`` names the Ray resources (``"c7g.large:spot"``) of the
    node types the task prefers, empty for any. ``kind`` ("tile", "plan",
    "write") is what progress counts: tiles. ``stage`` is the planner's
    stage of the task (:data:`planner.stages.STAGES`; products set it from
    their layout), empty for a task outside a product (tests, benchmarks).
    """

    key: str
    fn: Callable[..., object]
    deps: tuple[str, ...] = ()
    out_bytes: int = 0
    label: str = ""
    product: str | None = None
    resources: tuple[str, ...] = ()
    kind: str = "tile"
    stage: str = ""

    def __post_init__(self) -> None:
        if self.stage:
            try:
                key_stage = stage_of(parse_key(self.key).op)
            except DagError as exc:
                raise GraphError(f"task {self.key} has a stage ({self.stage!r}): {exc}") from exc
            if key_stage != self.stage:
                raise GraphError(f"task {self.key}: stage {self.stage!r}; expected its key's "
                                 f"stage {key_stage!r}")
        if not self.key:
            raise GraphError("Task.key is empty; expected a unique, non-empty task key")
        if self.out_bytes < 0:
            raise GraphError(f"task {self.key}: out_bytes = {self.out_bytes}, expected >= 0")
        if self.key in self.deps:
            raise GraphError(f"task {self.key} lists itself among its inputs")


@dataclass(frozen=True, slots=True)
class TaskGraph:
    """Tasks by key, the consumers of each, and a priority per task (lower runs first)."""

    tasks: Mapping[str, Task]
    priority: Mapping[str, int]
    consumers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, tasks: Iterable[Task], priority: Mapping[str, int] | None = None) -> TaskGraph:
        """Check the tasks form a DAG; without priorities, use a depth-first order."""
        import networkx as nx

        by_key: dict[str, Task] = {}
        for task in tasks:
            if task.key in by_key:
                raise GraphError(f"task key {task.key!r} appears twice; keys must be unique")
            by_key[task.key] = task
        consumers: dict[str, list[str]] = {k: [] for k in by_key}
        for task in by_key.values():
            for dep in task.deps:
                if dep not in by_key:
                    raise GraphError(
                        f"task {task.key} needs {dep!r}, which no task produces"
                    )
                consumers[dep].append(task.key)
        graph = nx.DiGraph()
        graph.add_nodes_from(by_key)
        graph.add_edges_from((d, t.key) for t in by_key.values() for d in t.deps)
        if not nx.is_directed_acyclic_graph(graph):
            cycle = nx.find_cycle(graph)
            raise GraphError(f"the task graph has a cycle: {[e[0] for e in cycle]}")
        if priority is None:
            priority = {str(k): i for i, k in enumerate(depth_first(graph))}
        missing = [k for k in by_key if k not in priority]
        if missing:
            raise GraphError(f"no priority for tasks {missing[:5]} ({len(missing)} in all)")
        return cls(by_key, dict(priority), {k: tuple(v) for k, v in consumers.items()})

    def sinks(self) -> list[str]:
        return sorted(k for k, c in self.consumers.items() if not c)

    def breadth_first_priority(self) -> dict[str, int]:
        """Topological generations, in key order within one: the reference for memory."""
        import networkx as nx

        graph = nx.DiGraph()
        graph.add_nodes_from(self.tasks)
        graph.add_edges_from((d, t.key) for t in self.tasks.values() for d in t.deps)
        order = [k for gen in nx.topological_generations(graph) for k in sorted(gen)]
        return {k: i for i, k in enumerate(order)}

    def with_priority(self, priority: Mapping[str, int]) -> TaskGraph:
        return TaskGraph(self.tasks, dict(priority), self.consumers)

    def finishing_together(self, k: int) -> TaskGraph:
        """The graph with the work of its last ``k`` sinks interleaved, so that they finish
        side by side (pure).

        In depth-first order the last product is computed and then written alone:
        its sink (a COG write) runs while the other ``k - 1`` actors have nothing
        left. Here the tasks that feed only one of the last ``k`` sinks (in
        priority order) take turns, each sink's share in proportion to its tasks,
        from where the first of them stood; the sinks then become ready, and
        run, at about the same time::

            depth first:  a1 a2 a3 A  b1 b2 b3 B      (B alone at the end)
            k = 2:        a1 b1 a2 b2 a3 b3 A  B      (A and B side by side)

        Tasks shared with other sinks keep their place; priority is a preference
        among READY tasks, so the order stays valid whatever it interleaves.
        """
        sinks = sorted(self.sinks(), key=self.priority.__getitem__)
        if k < 2 or len(sinks) < 2:
            return self
        last = sinks[-k:]
        lane_of: dict[str, int] = {}
        lanes: list[list[str]] = []
        for lane, sink in enumerate(last):
            members = [sink]
            lane_of[sink] = lane
            stack = list(self.tasks[sink].deps)
            while stack:
                key = stack.pop()
                if key in lane_of or any(lane_of.get(c) != lane for c in self.consumers[key]):
                    continue  # seen, or it feeds another sink (it may come back by that one)
                lane_of[key] = lane
                members.append(key)
                stack.extend(self.tasks[key].deps)
            members.sort(key=self.priority.__getitem__)
            lanes.append(members)
        first = min(self.priority[m[0]] for m in lanes)
        merged = sorted(((i + 1) / len(m), lane, key) for lane, m in enumerate(lanes)
                        for i, key in enumerate(m))
        priority = dict(self.priority)
        for j, (_, _, key) in enumerate(merged):
            priority[key] = first + j
        return TaskGraph(self.tasks, priority, self.consumers)


def depth_first(graph: nx.DiGraph) -> list[Hashable]:
    """The planner's depth-first order (finish one branch before opening the next)."""
    from planner.order import depth_first_order

    return depth_first_order(graph)


@dataclass(frozen=True, slots=True)
class Failure:
    """A task that failed for good, with the label (scene) it is reported against."""

    key: str
    label: str
    error: str
    skipped: tuple[str, ...] = ()


class DispatchState:
    """Mutable progress of one run over a :class:`TaskGraph` (see the module docstring)."""

    def __init__(
        self,
        graph: TaskGraph,
        max_bytes_in_flight: int,
    ) -> None:
        if max_bytes_in_flight <= 0:
            raise GraphError(
                f"max_bytes_in_flight = {max_bytes_in_flight}, expected a positive byte count"
            )
        self.graph = graph
        self.max_bytes_in_flight = max_bytes_in_flight
        self.state: dict[str, TaskState] = {k: TaskState.WAITING for k in graph.tasks}
        self.bytes_of: dict[str, int] = {}
        self.bytes_in_flight = 0
        self.running = 0
        #: tasks whose result exists (HELD or RELEASED after completing), and how many are tiles
        self.completed = 0
        self.tiles_completed = 0
        self.tiles_total = sum(1 for t in graph.tasks.values() if t.kind == "tile")
        self.peak_bytes_in_flight = 0
        self.failures: list[Failure] = []
        #: tasks FAILED or SKIPPED
        self.given_up = 0
        #: keys whose results the runtime must forget (released or lost); drained by the runtime
        self.dropped: list[str] = []
        self.runs: dict[str, int] = {k: 0 for k in graph.tasks}
        self._missing: dict[str, int] = {k: len(t.deps) for k, t in graph.tasks.items()}
        self._open_consumers: dict[str, int] = {k: len(c) for k, c in graph.consumers.items()}
        self._ready: list[tuple[int, str]] = []
        self._terminal = 0
        for key in graph.tasks:
            if self.state[key] is TaskState.WAITING and self._missing[key] == 0:
                self._make_ready(key)

    # -- queries ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self._terminal == len(self.state)

    def count(self, *states: TaskState) -> int:
        return sum(1 for s in self.state.values() if s in states)

    @property
    def not_started(self) -> int:
        """Tasks WAITING or READY (counted in constant time)."""
        return len(self.state) - self.completed - self.running - self.given_up

    def peek_ready(self) -> str | None:
        self._drop_stale()
        return self._ready[0][1] if self._ready else None

    def fits(self, key: str) -> bool:
        """Whether ``key`` may start now under the bytes-in-flight bound."""
        if self.running == 0:
            return True  # held results are freed only by running consumers: never stall
        return self.bytes_in_flight + self.graph.tasks[key].out_bytes <= self.max_bytes_in_flight

    # -- transitions -----------------------------------------------------------------------
    def start(self, key: str) -> None:
        """READY -> RUNNING (the caller has submitted it)."""
        self._expect(key, TaskState.READY)
        self.state[key] = TaskState.RUNNING
        self.running += 1
        self.runs[key] += 1
        self._add_bytes(self.graph.tasks[key].out_bytes)

    def complete(self, key: str, nbytes: int | None = None) -> list[str]:
        """RUNNING -> HELD (or RELEASED without consumers); returns the keys to release now."""
        self._expect(key, TaskState.RUNNING)
        self.running -= 1
        self.completed += 1
        task = self.graph.tasks[key]
        self.tiles_completed += task.kind == "tile"
        self._add_bytes(-task.out_bytes)
        released: list[str] = []
        if self._open_consumers[key] == 0:
            self._set_terminal(key, TaskState.RELEASED)
            released.append(key)
            self.dropped.append(key)
        else:
            self.state[key] = TaskState.HELD
            self.bytes_of[key] = task.out_bytes if nbytes is None else nbytes
            self._add_bytes(self.bytes_of[key])
            for consumer in self.graph.consumers[key]:
                if self.state[consumer] is TaskState.WAITING:
                    self._missing[consumer] -= 1
                    if self._missing[consumer] == 0:
                        self._make_ready(consumer)
        released.extend(self._consumer_done(key))
        return released

    def fail(self, key: str, error: str) -> Failure:
        """RUNNING -> FAILED for an application error; descendants are SKIPPED."""
        self._expect(key, TaskState.RUNNING)
        self.running -= 1
        self._add_bytes(-self.graph.tasks[key].out_bytes)
        self._set_terminal(key, TaskState.FAILED)
        skipped: list[str] = []
        stack = list(self.graph.consumers[key])
        while stack:
            k = stack.pop()
            if self.state[k] in (TaskState.WAITING, TaskState.READY):
                self._set_terminal(k, TaskState.SKIPPED)
                skipped.append(k)
                stack.extend(self.graph.consumers[k])
        failure = Failure(key, self.graph.tasks[key].label, error, tuple(sorted(skipped)))
        self.failures.append(failure)
        self.given_up += 1 + len(skipped)
        # inputs of a dead branch are no longer needed by it
        self._release_inputs_of([key, *skipped])
        return failure

    def lose(self, key: str) -> list[str]:
        """A task's run or result is gone (its node died): back to WAITING/READY.

        Returns every key reset (``key`` and released inputs it needs again),
        so the caller forgets their ObjectRefs.
        """
        st = self.state[key]
        if st in (TaskState.FAILED, TaskState.SKIPPED, TaskState.WAITING, TaskState.READY):
            return []
        if st is TaskState.RELEASED and self._open_consumers[key] == 0:
            return []  # nobody needs it any more: a lost product stays written
        reset: list[str] = []
        stack = [key]
        while stack:
            k = stack.pop()
            st = self.state[k]
            if st is TaskState.RUNNING:
                self.running -= 1
                self._add_bytes(-self.graph.tasks[k].out_bytes)
            elif st is TaskState.HELD:
                self._add_bytes(-self.bytes_of.pop(k))
                for consumer in self.graph.consumers[k]:
                    if self.state[consumer] in (TaskState.WAITING, TaskState.READY):
                        self._missing[consumer] += 1
                        if self.state[consumer] is TaskState.READY:
                            self.state[consumer] = TaskState.WAITING
            elif st is TaskState.RELEASED:
                self._terminal -= 1
            else:
                continue
            if st in COMPLETED:
                self.completed -= 1
                self.tiles_completed -= self.graph.tasks[k].kind == "tile"
                # its inputs are needed again until it completes anew
                for dep in self.graph.tasks[k].deps:
                    self._open_consumers[dep] += 1
            reset.append(k)
            self.dropped.append(k)
            self.state[k] = TaskState.WAITING
            self._missing[k] = 0
            for dep in self.graph.tasks[k].deps:
                if self.state[dep] is not TaskState.HELD:
                    self._missing[k] += 1
                    if self.state[dep] is TaskState.RELEASED:
                        stack.append(dep)
            if self._missing[k] == 0:
                self._make_ready(k)
        return reset

    def take(self) -> str | None:
        """Pop the highest-priority READY task if it fits the bytes bound."""
        self._drop_stale()
        if not self._ready or not self.fits(self._ready[0][1]):
            return None
        return heapq.heappop(self._ready)[1]

    # -- internals -------------------------------------------------------------------------
    def _consumer_done(self, key: str) -> list[str]:
        released: list[str] = []
        for dep in self.graph.tasks[key].deps:
            self._open_consumers[dep] -= 1
            if self._open_consumers[dep] == 0 and self.state[dep] is TaskState.HELD:
                self._add_bytes(-self.bytes_of.pop(dep))
                self._set_terminal(dep, TaskState.RELEASED)
                released.append(dep)
                self.dropped.append(dep)
        return released

    def _release_inputs_of(self, keys: Sequence[str]) -> list[str]:
        released: list[str] = []
        for key in keys:
            released.extend(self._consumer_done(key))
        return released

    def _make_ready(self, key: str) -> None:
        self.state[key] = TaskState.READY
        heapq.heappush(self._ready, (self.graph.priority[key], key))

    def _drop_stale(self) -> None:
        while self._ready and self.state[self._ready[0][1]] is not TaskState.READY:
            heapq.heappop(self._ready)

    def _set_terminal(self, key: str, st: TaskState) -> None:
        if self.state[key] not in TERMINAL:
            self._terminal += 1
        self.state[key] = st

    def _add_bytes(self, n: int) -> None:
        self.bytes_in_flight += n
        self.peak_bytes_in_flight = max(self.peak_bytes_in_flight, self.bytes_in_flight)

    def _expect(self, key: str, st: TaskState) -> None:
        if self.state[key] is not st:
            raise GraphError(f"task {key} is {self.state[key].value}, expected {st.value}")
