"""Depth-first dispatch of a task graph onto a pool of Ray actors, losing no task.

The loop, around a :class:`~scheduler.runtime.state.DispatchState`:

1. While an actor has a free slot (``tasks_per_actor`` calls queued on it)
   and the bytes-in-flight bound allows (``max_bytes_in_flight``, and at most
   :data:`OBJECT_STORE_SHARE` of the alive nodes' object stores, beyond which
   Ray would spill results to disk), take the next READY task in
   priority order (the graph's, with the work of its last sinks interleaved,
   one per actor: :meth:`~scheduler.runtime.state.TaskGraph.finishing_together`)
   and call ``actor.run_batch(calls, picks, lent, *input_refs)``: a
   small :class:`~scheduler.runtime.actors.TaskStatus` per task comes back to
   the driver (with a sink's value), and the other tasks' values stay in the
   object store, one return object per group of values with the same
   consumers (a batch of tiles of one product is one object), each value
   known as (ObjectRef, item) to its consumers. Locality: the
   actor chosen is the free one on the node that holds the most bytes of the
   task's inputs (ties: the one with the fewest seconds of work queued).
   Small tasks share a call: the next READY tasks in priority order join it
   while they are of the same kind (tile, plan, write), prefer the same node
   types and have all their inputs on that node, up to :func:`batch_size`
   (about ``batch_target_s`` of work at the mean runtime of that kind so
   far: two COG writes never share a call for being few among many tiles).
   A call made while no other task waits (the run's last COG write, or a
   wait on inputs) is lent the CPUs of its node's idle actors
   (:func:`lent_threads`): the write encodes its blocks on them, where the
   cores would otherwise idle until the run ends.
2. Wait for any status. ``ok`` -> the result is HELD (its ObjectRef kept) or,
   for a task without consumers, fetched as the run's result. Inputs whose
   last consumer finished are RELEASED: their ObjectRefs are dropped and Ray
   frees them. A failed status (the function raised) is final for that task
   and its descendants; the rest goes on.
3. A Ray error instead of a status is a *system* failure (unless it wraps a
   plain Python error raised around the function, see
   :func:`is_system_failure`): the actor or its
   node died, or an input object was lost with its node. The pool re-reads
   the cluster's nodes, forgets actors on dead nodes and starts actors on
   new ones; every HELD result that lived on a dead node is declared lost
   and, with the released inputs it needs, recomputed from the DAG (not from
   the start of the campaign). The failed task is requeued, up to
   ``max_attempts`` runs.

The pool keeps one actor per ``cpus_per_actor`` CPUs on every alive node
(pinned with a hard node-affinity strategy, no Ray restarts: the dispatcher
does its own recovery). A node's custom resources (``"c7g.large:spot"``)
name its instance type and market; which actors may run which task is
:mod:`scheduler.runtime.placement`: a node of a type the plan placed stages
on runs only those stages' tasks, a task waits while an actor of its types
is busy or its node is coming up, and runs anywhere when its types are
neither there nor coming (a missing type never stalls the campaign); in a
cluster spread over zones a task stays in the zone holding its inputs while
that zone has a node for it (moves out are counted: ``cross_zone_tasks``). A task
that must wait is parked beside the priority queue and taken back first,
in priority order, once an actor may run it.

A node that Ray is *draining* (a spot interruption notice: its watcher's
:class:`~scheduler.fleet.drain.RayNodeDrainer` asked the GCS, which keeps
the deadline) is read with every re-read of the cluster: it gets no new
task and no new actor, and :func:`~scheduler.cloud.imds.plan_drain` splits
what runs there: tasks expected to finish before the deadline (less
``drain_margin_s``, at the mean runtime seen so far) are kept, the others
are handed back at once (re-queued elsewhere, their late results ignored).
An actor of a draining node with nothing kept on it is killed, which also
ends a handed-back run, so the idle node can leave. Results it already
produced are kept and, once it is gone, recomputed as for any lost node.

A node whose pool the run's ``fleet`` request asks fewer of than are alive
(a stage placed there is done) is let go once idle
(:func:`~scheduler.runtime.placement.surplus_nodes`): no new task, its actors
ended, so the autoscaler can remove it.

Every node that leaves gets a cause (:mod:`scheduler.fleet.departures`:
interruption, scale-down by the run's own ``fleet`` request, drain,
failure), kept in :attr:`Dispatcher.departures`. Only an interruption is
reported to the :class:`~scheduler.fleet.autoscaling.SpotLosses` (which says
once per flapping pool where the plan's fallback moves its work) and to the
metrics (the interruption counter, and the fallback counter when a fallback
is found).

:func:`~scheduler.runtime.serial.run_serial` drives the same state in-process without Ray, for tests
and tiny runs.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler.cloud.imds import plan_drain, queued_on_one_worker
from scheduler.fleet.departures import (
    Departure,
    DepartureCause,
    LostWork,
    NodeExit,
    departure_cause,
    pool_of,
    requested_per_pool,
    zone_of,
)
from scheduler.runtime.actors import BatchCall, kernel_threads
from scheduler.runtime.errors import GraphError, RuntimeFailure
from scheduler.runtime.options import (
    OBJECT_STORE_SHARE,
    DispatchOptions,
    batch_size,
    in_flight_bound,
    queue_depth,
)
from scheduler.runtime.placement import (
    Choice,
    Placement,
    bytes_across,
    candidates,
    choose,
    input_bytes_by_zone,
    input_zone,
    surplus_nodes,
)
from scheduler.runtime.pool import RESYNC_S, ActorPool, _Slot
from scheduler.runtime.report import NodeDrain, Progress, ProgressFn, RunReport, progress_of
from scheduler.runtime.serial import run_serial
from scheduler.runtime.state import DispatchState, Task, TaskGraph, TaskState

if TYPE_CHECKING:
    from scheduler.fleet.autoscaling import FleetRequest, SpotLosses
    from scheduler.observe.metrics import CampaignMetrics

# the run's options, reports and in-process executor live in their own modules; callers
# import them from here, with the dispatcher
__all__ = ["OBJECT_STORE_SHARE", "DispatchOptions", "Dispatcher", "NodeDrain", "Progress",
           "ProgressFn", "RunReport", "batch_size", "in_flight_bound", "is_system_failure",
           "lent_threads", "lost_input_keys", "queue_depth", "run_serial"]

log = logging.getLogger(__name__)

def _joins(task: Task, first: Task, node_id: str, where: Mapping[str, str]) -> bool:
    """Whether ``task`` may join the batch of ``first`` for ``node_id``: same kind (a batch
    is sized by its kind's runtime), same preference, inputs all there."""
    if task.kind != first.kind or task.resources != first.resources:
        return False
    return all(where.get(d) == node_id for d in task.deps)


#: what a ready task waits for: its preferred resources and its zone (placement.py)
_Class = tuple[tuple[str, ...], str | None]


def lent_threads(slot: _Slot, slots: list[_Slot], threads_per_actor: int,
                 others_waiting: bool) -> int:
    """Threads lent to a call on ``slot``: those of its node's actors with nothing queued,
    when no other task waits (``others_waiting`` false), else none.

    A task that runs its own threads (the COG writer's encoders,
    :attr:`~scheduler.runtime.actors.TaskContext.threads`) then uses the cores
    that would idle: the run's last write runs alone on a node, its actor's
    one core encoding while the others wait for the run to end. A lent actor
    that gets a task meanwhile shares its core with the borrower until that
    call ends.
    """
    if others_waiting:
        return 0
    return threads_per_actor * sum(1 for s in slots
                                   if s is not slot and s.node_id == slot.node_id
                                   and s.running == 0)


def _chooser(placement: Placement, free: list[_Slot], usable: list[_Slot],
             requested: list[tuple[str, str]], parked_since: Mapping[_Class, float],
             now_s: float, wait_s: float) -> Callable[[_Class], Choice]:
    """:func:`~scheduler.runtime.placement.choose` for one fill round of the dispatch loop."""
    def choice(klass: _Class) -> Choice:
        waited_s = now_s - parked_since.get(klass, now_s)
        return choose(placement, klass[0], free, usable, requested, waited_s, wait_s, klass[1])

    return choice


@dataclass(slots=True)
class _Call:
    """One actor call in flight: its tasks in order, where their kept values will be
    (return object, item), when sent."""

    keys: tuple[str, ...]
    slot: _Slot
    kept: dict[str, tuple[Any, int]]
    started_s: float
    #: seconds of work expected (the tasks' kinds' mean runtimes so far)
    expected_s: float = 0.0


class Dispatcher:
    """Runs a :class:`TaskGraph` on the connected Ray cluster (see the module docstring).

    With ``metrics`` every task event is reported to it (see
    :mod:`scheduler.observe.dispatch_metrics`); ``None`` reports nothing.
    """

    def __init__(self, options: DispatchOptions | None = None,
                 metrics: CampaignMetrics | None = None,
                 spot: SpotLosses | None = None,
                 fleet: FleetRequest | None = None, pool: ActorPool | None = None) -> None:
        self.options = options or DispatchOptions()
        self.metrics = metrics
        if spot is None:
            from scheduler.fleet.autoscaling import SpotLosses

            spot = SpotLosses()
        self.spot = spot
        #: actors started ahead of the run (:meth:`Driver.warm`), used by the next :meth:`run`
        self._pool = pool
        #: the run's autoscaler request: tells its own scale-downs from other departures
        self.fleet = fleet
        #: the draining nodes the last :meth:`run` saw, in order
        self.drains: list[NodeDrain] = []
        #: the nodes that left during the last :meth:`run`, with their causes
        self.departures: list[Departure] = []
        #: tasks of the last :meth:`run` that ran outside their inputs' zone (it had no live
        #: node for them), and the input bytes all tasks read across zones
        self.cross_zone_tasks = 0
        self.cross_zone_bytes = 0

    def run(
        self,
        graph: TaskGraph,
        progress: ProgressFn | None = None,
        on_result: Callable[[str, object], None] | None = None,
        on_done: Callable[[str, float], None] | None = None,
        on_interruption: Callable[[str, str], None] | None = None,
    ) -> RunReport:
        """Run ``graph``; ``on_result(key, value)`` for each sink's value, ``on_done(key,
        runtime_s)`` for each task that finished well (sinks included),
        ``on_interruption(instance_type, market)`` for each node interrupted."""
        import ray
        from ray.exceptions import RayActorError, RayError

        opts = self.options
        pool, self._pool = self._pool or ActorPool(opts), None
        pool.sync()
        # the last products finish side by side, one per actor, not the last one alone
        graph = graph.finishing_together(len(pool.usable()))
        state = DispatchState(graph, in_flight_bound(opts.max_bytes_in_flight,
                                                     pool.object_store_bytes))
        sinks = frozenset(graph.sinks())
        tasks = graph.tasks
        #: HELD results: (the return object holding the value, its item there)
        held: dict[str, tuple[Any, int]] = {}
        where: dict[str, str] = {}
        results: dict[str, object] = {}
        inflight: dict[Any, _Call] = {}
        #: tasks whose batch failed outside their functions: they run alone from now on
        solo: set[str] = set()
        #: nodes where a call was lost (Ray noticed before it declared the node dead)
        lost_work = LostWork()
        runtime_sum_s = 0.0
        runtime_n = 0
        #: task kind -> [runtime seconds summed, tasks]: batches are sized by their kind
        runtime_of: dict[str, list[float]] = {}

        def mean_of(kind: str) -> float | None:
            seen = runtime_of.get(kind)
            return seen[0] / seen[1] if seen else None
        cpu_s = 0.0
        busy_s = 0.0
        first_task_at_s = math.inf
        self.drains = []
        self.departures = []
        self.cross_zone_tasks = 0
        self.cross_zone_bytes = 0
        #: zones whose tasks had to run elsewhere (said once each)
        zones_left: set[str] = set()
        retries = 0
        recomputed = 0
        start = time.perf_counter()
        no_worker_since: float | None = None
        tm = None
        if self.metrics is not None:
            from scheduler.observe.dispatch_metrics import DispatchMetrics

            tm = DispatchMetrics(self.metrics, graph)

        #: placement classes (a task's preferred resources) of the graph, and the plan's pools
        classes = {task.resources for task in tasks.values()}
        planned = self.fleet.placed if self.fleet is not None else frozenset()
        #: READY tasks taken from the queue that wait for an actor of their planned type, or
        #: of their zone
        parked: dict[_Class, list[tuple[int, str]]] = {}
        parked_since: dict[_Class, float] = {}

        def unpark(choice: Callable[[_Class], Choice]) -> str | None:
            """The most urgent parked task that need not wait any more, if any."""
            best: tuple[int, str] | None = None
            best_class: _Class | None = None
            for klass, heap in parked.items():
                while heap and state.state[heap[0][1]] is not TaskState.READY:
                    heapq.heappop(heap)  # reset since (an input lost): the queue has it again
                if heap and (best is None or heap[0] < best) and state.fits(heap[0][1]) \
                        and choice(klass) is not Choice.WAIT:
                    best, best_class = heap[0], klass
            if best is None or best_class is None:
                return None
            heapq.heappop(parked[best_class])
            return best[1]

        def forget_dropped() -> None:
            for k in state.dropped:
                held.pop(k, None)
                where.pop(k, None)
            state.dropped.clear()

        def submit(slot: _Slot, keys: list[str]) -> None:
            calls: list[BatchCall] = []
            args: list[Any] = []
            picks: list[tuple[int, int]] = []
            position: dict[Any, int] = {}
            #: kept values grouped by their consumers: one return object per group
            group_of: dict[tuple[str, ...], int] = {}
            groups: list[list[str]] = []
            for key in keys:
                task = tasks[key]
                group = -1
                if key not in sinks:
                    group = group_of.setdefault(graph.consumers[key], len(groups))
                    if group == len(groups):
                        groups.append([])
                    groups[group].append(key)
                calls.append((task.fn, len(task.deps), group))
                for d in task.deps:
                    ref, item = held[d]
                    if ref not in position:
                        position[ref] = len(args)
                        args.append(ref)
                    picks.append((position[ref], item))
                if tm is not None:
                    tm.started(key, slot.resources)
            lent = lent_threads(slot, pool.slots, kernel_threads(opts.cpus_per_actor),
                                state.peek_ready() is not None or any(parked.values()))
            refs = slot.method(1 + len(groups) if groups else 1).remote(
                tuple(calls), tuple(picks), lent, *args)
            expected_s = sum(mean_of(tasks[key].kind) or 0.0 for key in keys)
            kept = {key: (refs[1 + g], item) for g, members in enumerate(groups)
                    for item, key in enumerate(members)}
            inflight[refs[0] if groups else refs] = _Call(tuple(keys), slot, kept,
                                                          time.monotonic(), expected_s)
            slot.running += 1
            slot.queued_s += expected_s

        def hand_back(node_id: str, deadline_s: float) -> None:
            """A node is draining: re-queue what it runs that cannot finish in time."""
            mine = {ref: call for ref, call in inflight.items() if call.slot.node_id == node_id}
            expected_s = runtime_sum_s / runtime_n if runtime_n else math.inf
            seconds_left = deadline_s - time.time()
            now_s = time.monotonic()
            by_actor: dict[int, list[_Call]] = {}
            for call in mine.values():  # an actor runs its calls one at a time, in order sent
                by_actor.setdefault(id(call.slot), []).append(call)
            decision = plan_drain(
                [task for calls in by_actor.values() for task in queued_on_one_worker(
                    [(c.keys[0], c.started_s, expected_s * len(c.keys))
                     for c in sorted(calls, key=lambda c: c.started_s)], now_s)],
                seconds_left, now_s, opts.drain_margin_s)
            back = set(decision.hand_back)
            kept: list[str] = []
            handed: list[str] = []
            for ref, call in mine.items():
                if call.keys[0] not in back:
                    kept.extend(call.keys)
                    continue
                del inflight[ref]
                call.slot.running -= 1
                call.slot.queued_s -= call.expected_s
                handed.extend(call.keys)
                for key in call.keys:
                    state.lose(key)
                    if tm is not None:
                        tm.lost(key, call.slot.resources)
            self.drains.append(NodeDrain(node_id, time.time(), seconds_left, tuple(kept),
                                         tuple(handed)))
            forget_dropped()

        def busy_nodes() -> set[str]:
            """Nodes running a call, or holding a result a task still needs."""
            busy = {call.slot.node_id for call in inflight.values()}
            busy.update(n for k, n in where.items() if state.state[k] is TaskState.HELD)
            return busy

        def held_on(node_id: str) -> str:
            """What the run has on a node: calls running, results still needed, calls lost."""
            running = sum(1 for call in inflight.values() if call.slot.node_id == node_id)
            needed = sum(1 for k, n in where.items()
                         if n == node_id and state.state[k] is TaskState.HELD)
            parts = [f"{running} call{'s' * (running != 1)} running" if running else "",
                     f"{needed} result{'s' * (needed != 1)} still needed" if needed else "",
                     "a call lost there" if node_id in lost_work.nodes() else ""]
            return ", ".join(p for p in parts if p)

        def let_go() -> None:
            """End the actors of idle nodes the run's request no longer wants (scale-down)."""
            requested = self._requested()
            if requested is None:
                return
            pools = {n: pool_of(pool.tags_of.get(n, frozenset())) for n in pool.alive
                     if n not in pool.draining}
            pool.release(surplus_nodes(pools, requested, busy_nodes()))

        def depart(gone: set[str], alive_before: Mapping[str, frozenset[str]]) -> None:
            """Give each node gone since the last re-read its cause; interruptions go on."""
            requested = self._requested()
            pools_before: dict[tuple[str, str], int] = {}
            for tags in alive_before.values():
                p = pool_of(tags)
                pools_before[p] = pools_before.get(p, 0) + 1
            now = time.monotonic()
            for node_id in sorted(gone):
                tags = pool.tags_of.get(node_id, frozenset())
                itype, market = pool_of(tags)
                deadline = pool.draining.get(node_id)
                held = held_on(node_id)  # busy: running, holding or lately losing work
                cause = departure_cause(NodeExit(
                    node_id, itype, market, busy=bool(held),
                    notice=deadline is not None and math.isfinite(deadline),
                    draining=deadline is not None,
                    requested=None if requested is None else requested.get((itype, market), 0),
                    alive_before=max(1, pools_before.get((itype, market), 0))))
                self.departures.append(Departure(node_id, itype, market, cause, now, held))
                if tm is not None:
                    tm.departed(itype, cause)
                if cause is DepartureCause.INTERRUPTION:
                    if on_interruption is not None:
                        on_interruption(itype, market)
                    for decision in self.spot.node_lost(
                            tags, now, state.completed / max(1, len(state.state))):
                        if tm is not None:
                            tm.fallback(decision)

        def recover() -> None:
            nonlocal recomputed
            alive_before = {n: pool.tags_of.get(n, frozenset()) for n in pool.alive}
            gone = pool.sync()
            lost_work.still_alive(pool.alive, time.monotonic())
            state.max_bytes_in_flight = in_flight_bound(opts.max_bytes_in_flight,
                                                        pool.object_store_bytes)
            if gone:
                depart(gone, alive_before)
            for node_id, deadline_s in pool.newly_draining.items():
                hand_back(node_id, deadline_s)
            pool.retire_draining()
            let_go()
            dead = pool.dead_nodes
            for k in [k for k, n in where.items() if n in dead]:
                if state.state[k] is TaskState.HELD:
                    reset = state.lose(k)
                    recomputed += len(reset)
                    if tm is not None:
                        tm.recomputed(reset)
            forget_dropped()

        def system_failure(call: _Call, exc: RayError) -> None:
            """A call ended in a Ray error: requeue its tasks (or fail them) and recover."""
            nonlocal retries, recomputed
            for value_ref in {ref for ref, _ in call.kept.values()}:
                _discard(value_ref)
            slot = call.slot
            if not is_system_failure(exc):
                if len(call.keys) > 1:
                    # raised around one of the functions: run each alone to find which
                    for key in call.keys:
                        state.lose(key)
                        solo.add(key)
                    forget_dropped()
                    return
                failure = state.fail(call.keys[0], f"{exc.cause!r:.500}")  # type: ignore[attr-defined]
                if tm is not None:
                    tm.failed(call.keys[0], slot.resources, failure)
                forget_dropped()
                return
            retries += len(call.keys)
            lost_work.lost(slot.node_id, time.monotonic())
            if isinstance(exc, RayActorError):
                pool.replace(slot)
            # inputs gone with their node, before Ray reports the node dead
            lost_inputs = lost_input_keys(exc, {d: held[d][0] for key in call.keys
                                                for d in tasks[key].deps if d in held})
            for key in call.keys:
                if state.runs[key] >= opts.max_attempts:
                    failure = state.fail(key, f"lost {state.runs[key]} times, last: {exc!r:.300}")
                    if tm is not None:
                        tm.failed(key, slot.resources, failure)
                else:
                    reset = state.lose(key)
                    if tm is not None:
                        tm.lost(key, slot.resources)
                        tm.recomputed(k for k in reset if k != key)
            for dep in lost_inputs:
                if state.state[dep] is TaskState.HELD:
                    reset = state.lose(dep)
                    recomputed += len(reset)
                    if tm is not None:
                        tm.recomputed(reset)
            forget_dropped()
            recover()

        try:
            while not state.finished:
                depth = queue_depth(batch_size(runtime_sum_s, runtime_n, opts), opts)
                free = pool.free(depth)
                usable = pool.usable()
                requested = list(self._requested() or {})
                placement = Placement.of(classes, self.fleet.substitutions if self.fleet else None,
                                         planned)
                now_s = time.monotonic()
                choice = _chooser(placement, free, usable, requested, parked_since, now_s,
                                  opts.no_worker_timeout_s)

                while free:
                    key = unpark(choice)
                    if key is None:
                        key = state.take()
                        if key is None:
                            break
                    task = tasks[key]
                    by_zone = input_bytes_by_zone(task.deps, where, state.bytes_of,
                                                  pool.tags_of)
                    klass = (task.resources, input_zone(by_zone))
                    decided = choice(klass)
                    if decided is Choice.WAIT:
                        heapq.heappush(parked.setdefault(klass, []),
                                       (graph.priority[key], key))
                        parked_since.setdefault(klass, now_s)
                        continue
                    if decided is Choice.OWN:
                        parked_since.pop(klass, None)
                        allowed = candidates(placement, task.resources, free, klass[1])
                    else:
                        allowed = free
                    slot = self._pick(task.deps, allowed, where, state)
                    slot_zone = zone_of(slot.resources)
                    across_bytes = bytes_across(by_zone, slot_zone)
                    self.cross_zone_bytes += across_bytes
                    if tm is not None and across_bytes:
                        tm.cross_zone(across_bytes)
                    if klass[1] is not None and slot_zone != klass[1]:
                        self.cross_zone_tasks += 1
                        if klass[1] not in zones_left:
                            zones_left.add(klass[1])
                            log.warning("%s holds the inputs of %s but has no live node that "
                                        "may run it: it runs in %s, reading them across zones",
                                        klass[1], key, slot_zone)
                    state.start(key)
                    keys = [key]
                    if key not in solo:
                        own_sum_s, own_seen = runtime_of.get(task.kind, (0.0, 0))
                        own_size = batch_size(own_sum_s, int(own_seen), opts,
                                              state.not_started + 1, len(usable) * depth)
                        while len(keys) < own_size:
                            nxt = state.peek_ready()
                            if nxt is None or nxt in solo or not _joins(
                                    tasks[nxt], task, slot.node_id, where):
                                break
                            if state.take() is None:
                                break  # over the bytes-in-flight bound
                            state.start(nxt)
                            keys.append(nxt)
                    submit(slot, keys)
                    if slot.running >= depth:
                        free.remove(slot)
                if not inflight:
                    if state.finished:
                        break
                    if not usable or any(parked.values()):
                        # no worker yet, or tasks wait for their planned type to come up
                        now = time.perf_counter()
                        no_worker_since = no_worker_since or now
                        if not usable and now - no_worker_since > opts.no_worker_timeout_s:
                            raise RuntimeFailure(
                                f"no worker node with >= {opts.cpus_per_actor} CPU joined the "
                                f"cluster within {opts.no_worker_timeout_s:.0f} s; "
                                f"{len(state.state) - state.count(TaskState.RELEASED)} tasks left"
                            )
                        time.sleep(0.5)
                        recover()
                        continue
                    counts = {st.value: state.count(st) for st in TaskState}
                    raise GraphError(
                        f"no task is ready or running but the graph is not finished: {counts}, "
                        f"{state.bytes_in_flight} bytes in flight, {len(pool.slots)} actors"
                    )
                no_worker_since = None
                if time.monotonic() - pool.synced_at > RESYNC_S:
                    recover()
                pending = list(inflight)
                ready, _ = ray.wait(pending, num_returns=1, timeout=RESYNC_S)
                if not ready:
                    continue
                if len(pending) > 1:
                    ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                try:
                    outcomes: list[Any] | None = ray.get(ready)
                except RayError:
                    outcomes = None  # read them one by one to tell which failed
                for i, ref in enumerate(ready):
                    call = inflight.pop(ref, None)
                    if call is None:
                        continue  # handed back while this batch was read
                    call.slot.running -= 1
                    call.slot.queued_s -= call.expected_s
                    try:
                        outcome = outcomes[i] if outcomes is not None else ray.get(ref)
                    except RayError as exc:
                        system_failure(call, exc)
                        continue
                    statuses = outcome[0] if isinstance(outcome, tuple) else outcome
                    lost_work.came_back(call.slot.node_id, call.started_s)
                    resources = call.slot.resources
                    for key, (status, value) in zip(call.keys, statuses, strict=True):
                        if status.ok:
                            runtime_sum_s += status.runtime_s
                            runtime_n += 1
                            seen = runtime_of.setdefault(tasks[key].kind, [0.0, 0])
                            seen[0] += status.runtime_s
                            seen[1] += 1
                        cpu_s += status.cpu_s
                        busy_s += status.runtime_s
                        first_task_at_s = min(first_task_at_s, status.started_at_s)
                        if tm is not None:
                            tm.finished(key, resources, status)
                        if not status.ok:
                            failure = state.fail(key, status.error)
                            if tm is not None:
                                tm.skipped(failure)
                        elif key in sinks:
                            results[key] = value
                            state.complete(key, status.nbytes)
                            if tm is not None:
                                tm.result(key, value)
                            if on_result is not None:
                                on_result(key, value)
                        else:
                            state.complete(key, status.nbytes)
                            if state.state[key] is TaskState.HELD:
                                held[key] = call.kept[key]
                                where[key] = status.node_id
                        if status.ok and on_done is not None:
                            on_done(key, status.runtime_s)
                    forget_dropped()
                if pool.draining:
                    pool.retire_draining()  # after their results were read
                if progress is not None or tm is not None:
                    snapshot = progress_of(state, len(sinks), len(results), start, retries)
                    if tm is not None:
                        tm.progress(snapshot)
                    if progress is not None:
                        progress(snapshot)
            ended_at_s = time.time()  # the work's end; the actors' clean-up follows
            # nodes that left since the last re-read get their cause too (a loss near the end
            # would otherwise go unrecorded)
            alive_before = {n: pool.tags_of.get(n, frozenset()) for n in pool.alive}
            gone = pool.sync()
            if gone:
                depart(gone, alive_before)
        finally:
            pool.shutdown()
        wall_s = time.perf_counter() - start
        report = RunReport(results, tuple(state.failures), sum(state.runs.values()), retries,
                           recomputed, state.peak_bytes_in_flight, wall_s, dict(state.runs),
                           cpu_s, pool.cpus,
                           ended_at_s if math.isinf(first_task_at_s) else first_task_at_s,
                           ended_at_s, busy_s, tuple(self.departures),
                           self.cross_zone_tasks, self.cross_zone_bytes)
        if self.cross_zone_tasks:
            log.warning("%d tasks ran outside the zone holding their inputs (%s had no live "
                        "node for them); %d input bytes crossed zones", self.cross_zone_tasks,
                        ", ".join(sorted(zones_left)), self.cross_zone_bytes)
        # the report rides on the record (``run_report``) for whoever measures a whole command
        log.info("dispatched %d task runs on %g actor CPUs in %.2f s: %.2f CPU-s in tasks, "
                 "%.0f %% of the actors' CPU time since the first task started",
                 report.task_runs, pool.cpus, wall_s, cpu_s, 100.0 * report.cpu_share,
                 extra={"run_report": report})
        return report

    def _requested(self) -> dict[tuple[str, str], int] | None:
        """Nodes per pool the run's autoscaler request asks for now; ``None`` without one."""
        if self.fleet is None or self.fleet.bundles is None:
            return None
        return requested_per_pool(self.fleet.bundles)

    @staticmethod
    def _pick(deps: tuple[str, ...], candidates: list[_Slot], where: Mapping[str, str],
              state: DispatchState) -> _Slot:
        """The actor among ``candidates`` that holds most of the task's input bytes (ties: the
        least busy, by the seconds of work queued on it); without inputs, the least busy."""
        if not deps:
            return min(candidates, key=lambda s: (s.queued_s, s.running))
        local: dict[str, int] = {}
        for d in deps:
            node = where.get(d)
            if node is not None:
                local[node] = local.get(node, 0) + state.bytes_of.get(d, 0)
        return max(candidates, key=lambda s: (local.get(s.node_id, 0), -s.queued_s, -s.running))


def is_system_failure(exc: BaseException) -> bool:
    """Whether a Ray error means lost hardware (retry) rather than a deterministic error.

    A :class:`ray.exceptions.RayTaskError` whose cause is not itself a Ray
    error was raised by Python on the worker outside the task function
    (an input that cannot be unpickled, a result that cannot be pickled):
    running it again would fail the same way, so it is final. Everything
    else (a dead actor or node, a lost input object) is retried.
    """
    from ray.exceptions import RayError, RayTaskError

    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause is None or isinstance(cause, RayError)
    return True


def lost_input_keys(exc: BaseException, inputs: Mapping[str, Any]) -> list[str]:
    """The inputs (key -> ObjectRef) a failure says were lost; all of them if it cannot tell.

    Ray wraps a lost argument as a task error caused by an ``ObjectLostError``
    naming the object; that input is recomputed at once rather than waiting
    for the node to be declared dead (while it is not, every retry would fail
    on the same missing object).
    """
    from ray.exceptions import ObjectLostError, RayTaskError

    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if not isinstance(cause, ObjectLostError):
        return []
    lost_hex = getattr(cause, "object_ref_hex", None)
    named = [k for k, ref in inputs.items() if ref.hex() == lost_hex]
    return named or list(inputs)


def _discard(ref: Any) -> None:
    """Read an errored ObjectRef so Ray does not log it as an unhandled error."""
    import ray
    from ray.exceptions import RayError

    try:
        ray.get(ref, timeout=0)
    except (RayError, TimeoutError):
        pass
