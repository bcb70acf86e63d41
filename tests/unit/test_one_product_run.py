"""The one-product executor: any task graph, tiles in order, on several threads, bounded.

The graph of these tests (a plan, pairs of tiles sharing a middle task, a sink)::

    plan ─┬─> mid/0 ─┬─> tile/00 ─┐
          │          └─> tile/01 ─┤
          ├─> mid/1 ─┬─> tile/02 ─┼─> write
          │          └─> tile/03 ─┤
          └─> ...                 ┘
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray

from scheduler.products.one_product import TILES_AHEAD_PER_WORKER, run_graph
from scheduler.runtime.actors import TaskContext
from scheduler.runtime.errors import FlowError
from scheduler.runtime.state import Task

pytestmark = pytest.mark.unit

N_TILES = 12


@dataclass(frozen=True)
class Plan:
    def __call__(self, ctx: TaskContext) -> int:
        return 100


@dataclass(frozen=True)
class Mid:
    i: int

    def __call__(self, ctx: TaskContext, plan: int) -> int:
        return plan + 10 * self.i


@dataclass(frozen=True)
class Tile:
    i: int
    started: list[int]
    barrier: threading.Barrier | None = None
    fail: bool = False

    def __call__(self, ctx: TaskContext, mid: int) -> NDArray[np.int64]:
        self.started.append(self.i)
        ctx.cache.setdefault("threads", set()).add(threading.current_thread().name)  # type: ignore[attr-defined]
        if self.barrier is not None and self.i < 2:
            self.barrier.wait(timeout=60)  # passes only when tiles 0 and 1 run at once
        if self.fail and self.i == 5:
            raise ValueError("tile 5 is broken")
        return np.full((1, 2, 2), mid + self.i, dtype=np.int64)


def _never(ctx: TaskContext, *tiles: object) -> None:
    raise AssertionError("the sink's function is not called: its inputs go to consume")


def _graph(started: list[int], barrier: threading.Barrier | None = None,
           fail: bool = False) -> list[Task]:
    tasks = [Task("plan", Plan(), kind="plan")]
    tasks += [Task(f"mid/{m}", Mid(m), ("plan",), kind="stereo") for m in range(N_TILES // 2)]
    tiles = [Task(f"tile/{i:02d}", Tile(i, started, barrier, fail), (f"mid/{i // 2}",))
             for i in range(N_TILES)]
    return [*tasks, *tiles, Task("write", _never, tuple(t.key for t in tiles), kind="write")]


def _expected() -> list[int]:
    return [100 + 10 * (i // 2) + i for i in range(N_TILES)]


@pytest.mark.parametrize("workers", [1, 3])
def test_tiles_come_in_the_sinks_order_and_plans_are_kept(workers: int) -> None:
    started: list[int] = []
    got: list[int] = []
    ticks: list[int] = []
    ctx = TaskContext(node_id="here")
    barrier = threading.Barrier(2) if workers > 1 else None

    def consume(tiles: Iterator[NDArray[np.generic]]) -> None:
        got.extend(int(t[0, 0, 0]) for t in tiles)

    kept = run_graph(_graph(started, barrier), consume, ctx=ctx, workers=workers,
                     progress=ticks.append)
    assert got == _expected()
    assert kept == {"plan": 100}
    assert sorted(started) == list(range(N_TILES))  # each tile ran once
    assert ticks == [1] * N_TILES
    threads = ctx.cache["threads"]  # the workers' contexts, merged into the caller's
    assert isinstance(threads, set)
    if workers == 1:
        assert threads == {threading.current_thread().name}
    else:
        assert len(threads) >= 2 and threading.current_thread().name not in threads


def test_tiles_are_admitted_a_bounded_distance_ahead_of_the_writer() -> None:
    started: list[int] = []
    seen_at_first: list[int] = []

    def consume(tiles: Iterator[NDArray[np.generic]]) -> None:
        for n, _ in enumerate(tiles):
            if n == 0:
                seen_at_first.extend(started)

    run_graph(_graph(started), consume, workers=2)
    assert max(seen_at_first) <= TILES_AHEAD_PER_WORKER * 2


@pytest.mark.parametrize("workers", [1, 3])
def test_a_tasks_error_ends_the_run(workers: int) -> None:
    started: list[int] = []
    got: list[int] = []

    def consume(tiles: Iterator[NDArray[np.generic]]) -> None:
        got.extend(int(t[0, 0, 0]) for t in tiles)

    with pytest.raises(ValueError, match="tile 5 is broken"):
        run_graph(_graph(started, fail=True), consume, workers=workers)
    assert got == _expected()[:len(got)]
    if workers == 1:  # in the calling thread nothing runs ahead of the writer
        assert len(got) == 5 and max(started) == 5


def test_a_task_reading_an_unknown_key_is_refused() -> None:
    tasks = [Task("tile", Mid(0), ("plan",)), Task("write", _never, ("tile",), kind="write")]
    with pytest.raises(FlowError, match="tile reads plan, which the product does not hold"):
        run_graph(tasks, list, workers=1)
