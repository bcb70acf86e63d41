"""The dispatcher's pure bookkeeping: order, the bytes bound, release, loss and recovery.

The graphs are small campaigns of scenes, each a fan-in of tiles to a write::

    s0/t0  s0/t1  s0/t2      s1/t0  s1/t1  s1/t2
        \\    |    /             \\    |    /
         s0/write                  s1/write

Real numpy kernels run through :func:`run_serial`; random loss schedules
(hypothesis) check that whatever is lost, every sink completes exactly with
the values of an undisturbed run and nothing stays held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.runtime.actors import TaskContext, execute
from scheduler.runtime.dispatch import (
    OBJECT_STORE_SHARE,
    DispatchOptions,
    Progress,
    in_flight_bound,
    run_serial,
)
from scheduler.runtime.errors import FlowError, GraphError
from scheduler.runtime.options import MIN_OBJECT_STORE_BYTES, local_object_store_bytes
from scheduler.runtime.state import DispatchState, Task, TaskGraph, TaskState

pytestmark = pytest.mark.unit

TILE_BYTES = 8 * 8 * 8


@dataclass(frozen=True, slots=True)
class Ramp:
    """A tile: a float64 ramp offset by ``seed``."""

    seed: int

    def __call__(self, ctx: TaskContext) -> np.ndarray:
        return np.arange(64, dtype=np.float64).reshape(8, 8) + self.seed


def total(ctx: TaskContext, *tiles: np.ndarray) -> float:
    return float(sum(t.sum() for t in tiles))


def add(ctx: TaskContext, *values: float) -> float:
    return float(sum(values))


def broken(ctx: TaskContext) -> np.ndarray:
    raise ValueError("scene s1: TIFF truncated")


def campaign(scenes: int, tiles: int, fail_scene: int | None = None) -> TaskGraph:
    tasks = []
    for s in range(scenes):
        keys = []
        for t in range(tiles):
            fn = broken if (s == fail_scene and t == 0) else Ramp(100 * s + t)
            tasks.append(Task(f"s{s}/t{t}", fn, (), TILE_BYTES, f"s{s}"))
            keys.append(f"s{s}/t{t}")
        tasks.append(Task(f"s{s}/write", total, tuple(keys), 8, f"s{s}"))
    return TaskGraph.build(tasks)


def expected_sum(s: int, tiles: int) -> float:
    return float(sum(np.arange(64).sum() + 64 * (100 * s + t) for t in range(tiles)))


def test_serial_run_computes_every_sink() -> None:
    report = run_serial(campaign(3, 4))
    assert report.ok
    assert report.results == {f"s{s}/write": expected_sum(s, 4) for s in range(3)}
    assert report.task_runs == 15


def test_depth_first_keeps_one_scene_alive_breadth_first_all() -> None:
    graph = campaign(6, 5)
    depth = run_serial(graph, DispatchOptions(max_bytes_in_flight=1 << 30))
    breadth = run_serial(graph.with_priority(graph.breadth_first_priority()),
                         DispatchOptions(max_bytes_in_flight=1 << 30))
    assert depth.results == breadth.results
    assert depth.peak_bytes_in_flight == 5 * TILE_BYTES + 8
    assert breadth.peak_bytes_in_flight == 30 * TILE_BYTES + 8


def test_bytes_bound_limits_what_starts_but_never_stalls() -> None:
    graph = campaign(2, 4)
    state = DispatchState(graph, max_bytes_in_flight=2 * TILE_BYTES)
    first = state.take()
    assert first is not None
    state.start(first)
    second = state.take()
    assert second is not None
    state.start(second)
    assert state.take() is None  # a third tile would exceed the bound
    state.complete(first)
    state.complete(second)
    # nothing runs, two tiles are held: the next task starts even over the bound
    third = state.take()
    assert third is not None and third.startswith("s0/")


def test_results_are_released_after_their_last_consumer() -> None:
    graph = campaign(1, 3)
    state = DispatchState(graph, 1 << 20)
    for _ in range(3):
        key = state.take()
        assert key is not None
        state.start(key)
        state.complete(key)
    assert state.count(TaskState.HELD) == 3
    assert state.take() == "s0/write"
    state.start("s0/write")
    released = state.complete("s0/write")
    assert sorted(released) == ["s0/t0", "s0/t1", "s0/t2", "s0/write"]
    assert state.finished and state.bytes_in_flight == 0


def test_application_failure_skips_descendants_and_the_rest_completes() -> None:
    report = run_serial(campaign(3, 3, fail_scene=1))
    assert set(report.results) == {"s0/write", "s2/write"}
    (failure,) = report.failures
    assert failure.label == "s1" and "TIFF truncated" in failure.error
    assert failure.skipped == ("s1/write",)
    state = DispatchState(campaign(2, 2), 1 << 20)
    for key in iter(state.take, None):
        state.start(key)
    state.fail("s0/t0", "corrupt")  # and s0/write skipped
    assert state.not_started == state.count(TaskState.WAITING, TaskState.READY) == 1


def test_losing_a_released_input_recomputes_it() -> None:
    """Two-level chain a -> b -> c: b is HELD, a RELEASED; losing b re-runs a then b."""
    tasks = [Task("a", Ramp(1), (), 10), Task("b", total, ("a",), 10), Task("c", total, ("b",))]
    state = DispatchState(TaskGraph.build(tasks), 1 << 20)
    for key in ("a", "b"):
        assert state.take() == key
        state.start(key)
        state.complete(key)
    assert state.state["a"] is TaskState.RELEASED
    reset = state.lose("b")
    assert sorted(reset) == ["a", "b"]
    assert state.take() == "a"
    assert state.state["b"] is TaskState.WAITING


def test_graph_errors_name_the_task() -> None:
    with pytest.raises(GraphError, match="needs 'ghost'"):
        TaskGraph.build([Task("a", total, ("ghost",))])
    with pytest.raises(GraphError, match="cycle"):
        TaskGraph.build([Task("a", total, ("b",)), Task("b", total, ("a",))])
    with pytest.raises(GraphError, match="twice"):
        TaskGraph.build([Task("a", total), Task("a", total)])
    # a task with a stage has a key of the stage vocabulary, of that stage
    assert Task("dsm.write:a+b:0_0", total, stage="dsm").stage == "dsm"
    with pytest.raises(GraphError, match="expected its key's stage 'stereo'"):
        Task("stereo.plan:a+b:0_0", total, stage="dsm")
    with pytest.raises(GraphError, match="not op:item:row_col"):
        Task("a/dsm/0001_0002", total, stage="dsm")


def test_execute_turns_exceptions_into_failed_status() -> None:
    status, value = execute(broken, TaskContext())
    assert not status.ok and value is None
    assert status.error.startswith("ValueError: scene s1")


@given(losses=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 50)), max_size=12),
       bound=st.integers(1, 12))
def test_random_losses_never_lose_a_product(losses: list[tuple[int, int]], bound: int) -> None:
    """Simulate node loss: at step i, the j-th running-or-held task is lost.

    A consumer whose input is lost while it runs either fails (Ray cannot
    fetch the input) or completes (it had fetched it before): both happen.
    """
    graph = campaign(3, 3)
    state = DispatchState(graph, bound * TILE_BYTES)
    values: dict[str, object] = {}
    copies: dict[str, object] = {}  # what a worker may still hold after the store lost it
    results: dict[str, object] = {}
    running: list[str] = []
    schedule = dict(losses)
    ctx = TaskContext()
    step = 0
    while not state.finished:
        step += 1
        assert step < 10_000, "no progress"
        assert state.not_started == state.count(TaskState.WAITING, TaskState.READY)
        key = state.take()
        if key is not None:
            state.start(key)
            running.append(key)
        if step in schedule:
            alive = running + [k for k, s in state.state.items() if s is TaskState.HELD]
            if alive:
                victim = sorted(alive)[schedule[step] % len(alive)]
                state.lose(victim)
                if victim in running:
                    running.remove(victim)
                for k in state.dropped:
                    values.pop(k, None)
                state.dropped.clear()
                continue
        if key is None and running:
            key = running.pop(0)
            task = graph.tasks[key]
            fetched = all(d in copies for d in task.deps)
            if all(state.state[d] is TaskState.HELD for d in task.deps) or (
                fetched and step % 2 == 0
            ):
                # inputs held, or (lost since, but) already fetched by the worker
                status, value = execute(task.fn, ctx, *(copies[d] for d in task.deps))
                if task.key.endswith("write"):
                    assert key not in results or results[key] == value
                    results[key] = value
                else:
                    values[key] = value
                    copies[key] = value
                state.complete(key, status.nbytes)
            else:  # an input vanished under it: Ray fails the call
                state.lose(key)
            for k in state.dropped:
                values.pop(k, None)
            state.dropped.clear()
    assert results == {f"s{s}/write": expected_sum(s, 3) for s in range(3)}
    assert state.count(TaskState.HELD) == 0 and state.bytes_in_flight == 0
    assert state.completed == len(graph.tasks)


def test_progress_counts_tiles_apart_from_plans_and_writes() -> None:
    tasks = [Task("p", Ramp(0), kind="plan"), Task("t0", total, ("p",)),
             Task("t1", total, ("p",)), Task("w", add, ("t0", "t1"), kind="write")]
    seen: list[Progress] = []
    run_serial(TaskGraph.build(tasks), progress=seen.append)
    last = seen[-1]
    assert (last.tiles_done, last.tiles_total) == (2, 2)
    assert (last.tasks_done, last.tasks_total) == (4, 4)
    assert (last.products_done, last.products_total) == (1, 1)
    assert [p.tiles_done for p in seen] == [0, 1, 2, 2]


def test_batch_size_follows_the_mean_runtime() -> None:
    from scheduler.runtime.dispatch import batch_size

    opts = DispatchOptions(max_batch=64, batch_target_s=0.02)
    many = 1000  # runtimes seen: past the slow start
    assert batch_size(0.0, 0, opts) == 1  # nothing seen yet: one task per call
    assert batch_size(many * 1e-6, many, opts) == 64  # no-op tiles: as many as allowed
    assert batch_size(many * 0.005, many, opts) == 4
    assert batch_size(many * 0.5, many, opts) == 1  # real tiles go alone
    # slow start: at most twice the runtimes seen, whatever their mean (an empty tile first)
    assert [batch_size(n * 1e-6, n, opts) for n in (1, 3, 20, 40)] == [2, 6, 40, 64]
    assert batch_size(0.5 + 2 * 1e-6, 3, opts) == 1  # a slow one among them: its mean rules
    # the end of a run: half an even share of the last 17 tasks over 4 open calls, then of
    # what is left
    assert batch_size(many * 1e-6, many, opts, tasks_left=17, calls_open=4) == 3
    assert batch_size(many * 1e-6, many, opts, tasks_left=9, calls_open=4) == 2
    assert batch_size(many * 1e-6, many, opts, tasks_left=1, calls_open=4) == 1
    assert batch_size(many * 1e-6, many, opts, tasks_left=1000, calls_open=4) == 64
    assert batch_size(0.0, many, DispatchOptions(max_batch=1)) == 1
    with pytest.raises(GraphError, match="max_batch = 0"):
        DispatchOptions(max_batch=0)


def test_a_batch_runs_in_order_groups_consumed_values_and_isolates_failures() -> None:
    from scheduler.runtime.actors import execute_batch

    def add(ctx: TaskContext, a: int, b: int) -> int:
        return a + b

    def boom(ctx: TaskContext) -> int:
        raise ValueError("tile 3 is corrupt")

    calls = ((add, 2, 0), (boom, 0, -1), (add, 2, 1), (add, 2, 0), (add, 2, -1))
    statuses, groups = execute_batch(calls, TaskContext(), 1, 2, 10, 20, 5, 6, 7, 8)
    assert [s.ok for s, _ in statuses] == [True, False, True, True, True]
    assert groups == [[3, 11], [30]]  # consumed values travel in their consumers' groups
    assert [v for _, v in statuses] == [None, None, None, None, 15]  # a sink's rides inline
    assert statuses[1][0].error == "ValueError: tile 3 is corrupt"
    assert all(s.cpu_s >= 0.0 and s.started_at_s > 0.0 for s, _ in statuses)


def test_arrays_in_pieces_are_joined_unless_the_function_takes_the_pieces() -> None:
    from scheduler.runtime.actors import ArrayParts, execute_batch

    class TakesPieces:
        takes_array_parts = True

        def __call__(self, ctx: TaskContext, tile: object) -> str:
            return type(tile).__name__

    def kind(ctx: TaskContext, tile: object) -> str:
        return type(tile).__name__

    parts = ArrayParts.of(np.zeros((1, 1024, 1024), np.uint16))
    statuses, _ = execute_batch(((kind, 1, -1), (TakesPieces(), 1, -1)), TaskContext(),
                                parts, parts)
    assert [v for _, v in statuses] == ["ndarray", "ArrayParts"]


def test_the_last_sinks_work_is_interleaved_so_they_finish_side_by_side() -> None:
    """Three products p (plan) -> t0, t1 (tiles) -> w (write), depth first::

        a.p a.t0 a.t1 a.w  b.p b.t0 b.t1 b.w  c.p c.t0 c.t1 c.w

    with two actors b and c take turns from where b.p stood; a keeps its place.
    """
    tasks = []
    for name in "abc":
        tasks.append(Task(f"{name}.p", lambda ctx: 0))
        tasks += [Task(f"{name}.t{i}", lambda ctx, p: 0, (f"{name}.p",)) for i in range(2)]
        tasks.append(Task(f"{name}.w", lambda ctx, *t: 0, (f"{name}.t0", f"{name}.t1")))
    order = [t.key for t in tasks]
    graph = TaskGraph.build(tasks, {k: i for i, k in enumerate(order)})
    staggered = graph.finishing_together(2)
    assert sorted(order, key=staggered.priority.__getitem__) == [
        "a.p", "a.t0", "a.t1", "a.w",
        "b.p", "c.p", "b.t0", "c.t0", "b.t1", "c.t1", "b.w", "c.w"]
    assert graph.finishing_together(1) is graph  # one actor: nothing to overlap
    assert sorted(order, key=graph.finishing_together(5).priority.__getitem__) == [
        f"{n}.{step}" for step in ("p", "t0", "t1", "w") for n in "abc"]  # more actors: all


def test_large_arrays_travel_in_pieces_ray_copies_without_threads() -> None:
    from scheduler.runtime.actors import PART_BYTES, ArrayParts, joined

    tile = np.arange(3 * 700 * 1000, dtype=np.uint16).reshape(3, 700, 1000)  # 4.2 MB
    parts = ArrayParts.of(tile)
    assert isinstance(parts, ArrayParts)
    # row bands of each band: 524 rows of 2000 bytes, then the band's last 176
    assert [p.shape for p in parts.parts] == [(524, 1000), (176, 1000)] * 3
    assert all(p.nbytes <= PART_BYTES for p in parts.parts)
    assert all(np.shares_memory(p, tile) for p in parts.parts)  # views: no copy made
    back = joined(parts)
    assert isinstance(back, np.ndarray) and back.dtype == tile.dtype
    np.testing.assert_array_equal(back, tile)
    for band, row, rows in parts.band_rows():  # where a writer puts each piece
        np.testing.assert_array_equal(rows, tile[band:band + 1, row:row + rows.shape[1]])
    assert [(b, r) for b, r, _ in parts.band_rows()] == [(b, r) for b in range(3)
                                                        for r in (0, 524)]
    flat = np.arange(600_000, dtype=np.float64)  # 4.8 MB in one dimension
    pieces = ArrayParts.of(flat)
    assert isinstance(pieces, ArrayParts) and np.array_equal(joined(pieces), flat)
    with pytest.raises(FlowError, match=r"tile of shape \(600000,\).*three dimensions"):
        next(pieces.band_rows())
    small = np.zeros((1, 512, 1024), np.uint16)  # exactly 1 MiB: one memcpy already
    assert ArrayParts.of(small) is small and joined(small) is small
    strided = tile[:, ::2]
    assert ArrayParts.of(strided) is strided  # not contiguous: Ray copies it in-band
    assert ArrayParts.of("record") == "record"


def test_actors_queue_more_calls_only_while_full_batches_are_short() -> None:
    from scheduler.runtime.dispatch import queue_depth

    opts = DispatchOptions(tasks_per_actor=2, small_task_calls=8)
    assert queue_depth(1, opts) == 2
    assert queue_depth(6, opts) == 2  # a batch cut at batch_target_s: two calls keep it fed
    assert queue_depth(64, opts) == 8
    assert queue_depth(64, DispatchOptions(tasks_per_actor=16, small_task_calls=8)) == 16


def test_in_flight_bound_keeps_results_within_the_object_stores() -> None:
    assert in_flight_bound(1 << 30, 0) == 1 << 30  # unknown stores: the option
    assert in_flight_bound(1 << 30, 256 << 20) == int(OBJECT_STORE_SHARE * (256 << 20))
    assert in_flight_bound(64 << 20, 1 << 30) == 64 << 20  # the option when smaller


def test_local_object_store_leaves_the_run_its_bytes_in_flight() -> None:
    gib = 1 << 30
    store = local_object_store_bytes(gib, 24 * gib, 24 * gib)
    assert in_flight_bound(gib, store) == gib  # the store does not cut the option's bound
    assert in_flight_bound(gib, store - 2) < gib  # and is the smallest that does not
    assert local_object_store_bytes(gib, 2 * gib, None) == int(0.3 * 2 * gib)  # Ray's default
    assert local_object_store_bytes(gib, 24 * gib, 1 * gib) == int(0.95 * gib)  # /dev/shm
    assert local_object_store_bytes(1 << 20, 24 * gib, None) == MIN_OBJECT_STORE_BYTES


def test_idle_actors_of_the_node_lend_their_threads_only_when_nothing_waits() -> None:
    from scheduler.runtime.dispatch import lent_threads
    from scheduler.runtime.pool import _Slot

    mine, idle, busy, elsewhere = (_Slot(None, "n1", frozenset()), _Slot(None, "n1", frozenset()),
                                   _Slot(None, "n1", frozenset(), running=1),
                                   _Slot(None, "n2", frozenset()))
    slots = [mine, idle, busy, elsewhere]
    assert lent_threads(mine, slots, 2, others_waiting=False) == 2  # the idle one on its node
    assert lent_threads(mine, slots, 2, others_waiting=True) == 0  # a task will take it
    idle.running = 1
    assert lent_threads(mine, slots, 2, others_waiting=False) == 0
