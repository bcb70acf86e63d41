"""One product in this process, into one file: the executor of ``eochain ortho`` and ``dsm``.

The command line runs a campaign's product (:mod:`scheduler.products.product`,
built with ``store=None``), not a product of its own: the same plan task,
the same tile tasks and the same COG layout, tags and metadata, so the file
is the campaign's file: the same pixels in the same tiles and layout, with the
same tags (its deflate streams are ISA-L's, which does not promise one stream
per input: ``tests/cog_compare.py``). Only the executor differs, the way CARS
runs its applications on a sequential cluster:

* the product's task graph (any: a plan, tiles, tasks between them) runs
  here on ``workers`` threads, by default one per core this process may
  use (``taskset``, cgroup affinity), each thread with its own
  :class:`~scheduler.runtime.actors.TaskContext` as each Ray worker has
  one (a dataset handle is never shared between threads). The tasks' work
  (rasterio reads, numba kernels, OpenCV) releases the GIL, so tiles
  compute side by side; each thread's numba kernels run on that thread
  alone, the cores being taken by the tiles. With one worker the tasks run
  in the calling thread, in order, with the caller's context;
* the write task's tiles are streamed into its COG in the writer's order as
  they are computed, instead of being gathered first as
  :func:`~scheduler.runtime.dispatch.run_serial` gathers a sink's inputs,
  while the COG writer's own threads compress the blocks: reading,
  computing and compressing overlap. At most ``2 x workers`` tiles are
  admitted ahead of the one the writer waits for, and a task's result is
  dropped once every task reading it has run, so memory holds the plans and
  a bounded number of tiles, not the product;
* the COG goes to a path (atomically: on an error nothing is left there),
  with no STAC item and no manifest record.

What the worker threads' tasks leave in their contexts for the command (a
set of reasons, say) is merged into the caller's context at the end: sets
are united, other values kept where the caller has none; what can be closed
(datasets a worker kept open) is closed.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from scheduler.products.product import ProductPlan
from scheduler.runtime.actors import TaskContext
from scheduler.runtime.errors import FlowError
from scheduler.runtime.state import Task

#: Tiles admitted ahead of the one the writer waits for, per worker thread.
TILES_AHEAD_PER_WORKER = 2


@dataclass(frozen=True, slots=True)
class OneProductRun:
    """What a one-product run computed besides its tiles: the plan tasks' results by key."""

    path: Path
    shared: dict[str, object]
    tiles: int
    workers: int


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def run_to_file(product: ProductPlan, dest: Path,
                progress: Callable[[int], None] | None = None,
                ctx: TaskContext | None = None,
                on_tile: Callable[[NDArray[np.generic]], None] | None = None,
                workers: int | None = None) -> OneProductRun:
    """Run ``product`` in this process on ``workers`` threads and write its COG at ``dest``.

    ``progress(1)`` is called after each tile, ``on_tile(tile)`` before it is
    written (a command's summary of the product); both in the calling thread.
    """
    n_workers = default_workers() if workers is None else workers
    writer = product.writer
    kept = run_graph(product.tasks, lambda tiles: writer.write_file(dest, tiles), ctx=ctx,
                     workers=n_workers, on_tile=on_tile, progress=progress)
    return OneProductRun(dest, kept, len(product.tasks[-1].deps), n_workers)


def run_graph(tasks: Sequence[Task], consume: Callable[[Iterator[NDArray[np.generic]]], None],
              *, ctx: TaskContext | None = None, workers: int = 1,
              on_tile: Callable[[NDArray[np.generic]], None] | None = None,
              progress: Callable[[int], None] | None = None) -> dict[str, object]:
    """Run the tasks toward the last one (the sink), handing its inputs to ``consume`` in order.

    The sink's own function is not called: ``consume`` gets the iterator of
    its inputs (a COG writer's tiles). Returns the results of the tasks of
    kind "plan", by key. A task's error ends the run, after the running ones.
    """
    if workers < 1:
        raise FlowError(f"workers = {workers}, expected at least 1")
    run = _GraphRun(tuple(tasks), ctx or TaskContext(node_id="local"), workers)
    try:
        consume(run.tiles(on_tile, progress))
    finally:
        run.close()
    return run.kept


@dataclass(slots=True, eq=False)
class _GraphRun:
    """The product's tasks run toward its sink (the last task), tiles handed out in its order."""

    task_list: tuple[Task, ...]
    ctx: TaskContext
    workers: int
    tasks: dict[str, Task] = field(init=False)
    readers: dict[str, int] = field(init=False)
    dependents: dict[str, list[str]] = field(init=False)
    results: dict[str, object] = field(default_factory=dict)
    kept: dict[str, object] = field(default_factory=dict)
    wanted: dict[str, int] = field(default_factory=dict)
    unmet: dict[str, int] = field(default_factory=dict)
    ready: list[tuple[int, int, str]] = field(default_factory=list)
    running: dict[Future[object], str] = field(default_factory=dict)
    contexts: list[TaskContext] = field(default_factory=list)
    pool: ThreadPoolExecutor | None = None
    local: threading.local = field(default_factory=threading.local)
    tick: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.tasks = {t.key: t for t in self.task_list}
        self.readers = dict.fromkeys(self.tasks, 0)
        self.dependents = {k: [] for k in self.tasks}
        for t in self.task_list:
            for d in t.deps:
                if d not in self.tasks:
                    raise FlowError(f"task {t.key} reads {d}, which the product does not hold")
                self.readers[d] += 1
                self.dependents[d].append(t.key)
        if self.workers > 1:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tile",
                                           initializer=self._start_worker)

    def _start_worker(self) -> None:
        import numba  # the tasks' kernels: one thread each, the cores go to the tiles

        numba.set_num_threads(1)
        ctx = TaskContext(node_id=self.ctx.node_id, scratch_dir=self.ctx.scratch_dir)
        self.local.ctx = ctx
        self.contexts.append(ctx)

    def _call(self, task: Task, inputs: tuple[object, ...]) -> object:
        ctx = self.ctx if self.pool is None else self.local.ctx
        return task.fn(ctx, *inputs)

    def _want(self, key: str, rank: int) -> None:
        """Schedule ``key`` and what it reads (not yet scheduled) for the tile of order ``rank``."""
        stack = [key]
        while stack:
            k = stack.pop()
            if k in self.wanted:
                continue
            self.wanted[k] = rank
            deps = self.tasks[k].deps
            self.unmet[k] = sum(1 for d in deps if d not in self.results)
            if self.unmet[k] == 0:
                heapq.heappush(self.ready, (rank, next(self.tick), k))
            stack.extend(d for d in deps if d not in self.wanted)

    def _start_ready(self, awaited: str) -> None:
        """Start ready tasks, best rank first; in the calling thread only up to ``awaited``."""
        while self.ready and len(self.running) < self.workers and (
                self.pool is not None or awaited not in self.results):
            _, _, key = heapq.heappop(self.ready)
            task = self.tasks[key]
            inputs = tuple(self.results[d] for d in task.deps)
            if self.pool is None:
                self._store(key, self._call(task, inputs))
            else:
                self.running[self.pool.submit(self._call, task, inputs)] = key

    def _store(self, key: str, value: object) -> None:
        task = self.tasks[key]
        self.results[key] = value
        if task.kind == "plan":
            self.kept[key] = value
        for d in task.deps:
            self._read(d)
        for k in self.dependents[key]:  # once per input it reads from this task
            if k in self.unmet:
                self.unmet[k] -= 1
                if self.unmet[k] == 0:
                    heapq.heappush(self.ready, (self.wanted[k], next(self.tick), k))
        del self.unmet[key]

    def _read(self, key: str) -> None:
        """One reader of ``key`` has run: drop the result after its last."""
        self.readers[key] -= 1
        if self.readers[key] == 0:
            self.results.pop(key, None)

    def tiles(self, on_tile: Callable[[NDArray[np.generic]], None] | None,
              progress: Callable[[int], None] | None) -> Iterator[NDArray[np.generic]]:
        """The sink's inputs in its order, each as soon as it and those before it are done."""
        order = self.task_list[-1].deps
        ahead = TILES_AHEAD_PER_WORKER * self.workers
        admitted = 0
        for i, key in enumerate(order):
            while admitted < len(order) and admitted <= i + ahead:
                self._want(order[admitted], admitted)
                admitted += 1
            self._start_ready(key)
            while key not in self.results:
                if not self.running:
                    raise FlowError(f"tile {key} cannot run: a task it reads never became ready")
                done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
                for future in done:
                    # a task's error ends the run here
                    self._store(self.running.pop(future), future.result())
                self._start_ready(key)
            tile = self.results[key]
            if not isinstance(tile, np.ndarray):
                raise FlowError(f"{key}: a tile task returned {type(tile).__name__}, "
                                "expected an array")
            self._read(key)
            if on_tile is not None:
                on_tile(tile)
            yield tile
            if progress is not None:
                progress(1)

    def close(self) -> None:
        """Stop the workers (after their running tasks) and merge their contexts into ctx."""
        if self.pool is not None:
            for future in self.running:
                future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
        for worker_ctx in self.contexts:
            for key, value in worker_ctx.cache.items():
                mine = self.ctx.cache.get(key)
                if isinstance(value, set) and isinstance(mine, set):
                    mine |= value
                elif callable(close := getattr(value, "close", None)):
                    close()
                else:
                    self.ctx.cache.setdefault(key, value)
