"""Thin Ray actors: a cache, a node id, and a plain call of the task's function.

A task's function is ``fn(ctx, *inputs)`` where ``ctx`` is a
:class:`TaskContext`: a per-worker cache (DEM tiles, sensor models, open
datasets survive from one tile to the next), a scratch folder, and the id of
the node it runs on. :func:`execute` runs one task and never raises: an
exception of the function becomes a failed :class:`TaskStatus` (an
*application* failure, final for that task), so anything Ray raises to the
driver is a *system* failure (a lost node or worker) and is retried.

:class:`TileWorker` is the Ray actor; it adds nothing but the Ray plumbing
and its own Prometheus metrics (:mod:`scheduler.observe.actor_metrics`, via
Ray's metrics API: tasks, durations and peak memory as the actor saw them),
so everything here is testable without Ray (``execute(fn, TaskContext(), ...)``).

Small tasks travel in batches: :meth:`TileWorker.run_batch` runs several
tasks in one actor call (:func:`execute_batch`), so Ray's per-call cost
(submission, scheduling, one status object) is paid once per batch. The
values of a call's tasks that have the same consumers share one return
object, a tuple (a batch of tiles of one product: one object); each
consumer's call names the item it takes (``picks``). Ray's cost per object
(allocation and seal in the object store, pinning, the owner's bookkeeping,
the free) is paid once per group (``python -m benchmarks.campaign_efficiency``).
A sink's value comes back inline with the statuses, since the driver fetches
it anyway.

A kept array larger than :data:`PART_BYTES` travels as :class:`ArrayParts`
and is joined again on the actor that consumes it, unless its consumer takes
the pieces (the product writer writes them where they lie, sparing a copy of
every tile of the product): Ray copies every buffer
over 1 MiB into the object store with six threads it starts for that copy
(``parallel_memcopy``), which on a node whose cores all run tasks wait for a
core and take it from a task; 1 MiB pieces are copied by one ``memcpy``
(``python -m benchmarks.campaign_efficiency``: 2 MiB tiles cost their actor
about 1 ms less each).

An actor runs its kernels' parallel loops on as many threads as it has CPUs
(:func:`limit_kernel_threads`): numba would start one per core of the node
in every actor, and its OpenMP threads spin at each loop's end waiting for
the others, which the node's other actors have taken the cores from.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from scheduler.observe.actor_metrics import ActorMetrics
from scheduler.runtime.errors import FlowError

#: Largest buffer Ray copies into its object store without starting threads for it
#: (``kMemcopyDefaultThreshold`` of its serializer): kept arrays travel in pieces this size.
PART_BYTES = 1 << 20


class ArrayParts(NamedTuple):
    """An array in contiguous pieces of at most :data:`PART_BYTES` (views, not copies).

    The pieces are row bands of each plane (``value[..., r0:r1, :]`` for each
    index of the leading axes), in C order: a consumer that can take a tile
    by bands (:meth:`band_rows`, :meth:`~ops.raster.raster_io.CogWriter.write`
    with ``band``) uses them where they lie in the object store, without the
    copy of :meth:`join`.
    """

    shape: tuple[int, ...]
    parts: tuple[np.ndarray, ...]

    @classmethod
    def of(cls, value: object) -> object:
        """``value`` in pieces when it is a C-contiguous array over :data:`PART_BYTES`,
        else ``value`` itself."""
        if not isinstance(value, np.ndarray) or value.nbytes <= PART_BYTES \
                or not value.flags.c_contiguous:
            return value
        planes = (value.reshape(-1, *value.shape[-2:]) if value.ndim >= 2
                  else value.reshape(1, -1, 1))
        step = max(1, PART_BYTES // (planes.shape[2] * value.itemsize))
        return cls(value.shape, tuple(plane[r:r + step] for plane in planes
                                      for r in range(0, plane.shape[0], step)))

    def join(self) -> np.ndarray:
        """The array again (one copy)."""
        return np.concatenate(self.parts).reshape(self.shape)

    def band_rows(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(band, first row, (1, rows, cols) view)`` per piece of a (bands, rows, cols)
        array."""
        if len(self.shape) != 3:
            raise FlowError(f"a tile of shape {self.shape} handed to a consumer of "
                            "(bands, rows, cols) tiles; expected three dimensions")
        row = band = 0
        for part in self.parts:
            yield band, row, part[np.newaxis]
            row += part.shape[0]
            if row == self.shape[1]:
                band, row = band + 1, 0


def joined(value: object) -> object:
    """An input as its producer returned it (:class:`ArrayParts` joined)."""
    return value.join() if isinstance(value, ArrayParts) else value


@dataclass(slots=True)
class TaskContext:
    """What a task function may use besides its inputs: a cache kept between tasks."""

    node_id: str = ""
    cache: dict[str, object] = field(default_factory=dict)
    scratch_dir: str = field(default_factory=tempfile.gettempdir)
    #: threads a task may run its own work on (an actor's CPUs, and those lent to its
    #: batch by the node's idle actors); None: this process's cores
    threads: int | None = None

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        """The cached value for ``key``, built by ``factory()`` on first use."""
        if key not in self.cache:
            self.cache[key] = factory()
        return self.cache[key]


class TaskStatus(NamedTuple):
    """The small half of a task's result: outcome, size of the value, where and how long.

    A named tuple rather than a dataclass: one travels per task, and a tuple
    pickles several times faster than a slotted dataclass.
    """

    ok: bool
    nbytes: int
    runtime_s: float
    node_id: str
    pid: int
    error: str = ""
    #: Output pixels of an array result (rows x cols), 0 for other values.
    pixels: int = 0
    #: Peak resident memory of the worker process so far, after the task.
    peak_memory_bytes: int = 0
    #: CPU seconds the worker process spent during the task (all its threads).
    cpu_s: float = 0.0
    #: When the task started, epoch seconds.
    started_at_s: float = 0.0


def value_nbytes(value: object) -> int:
    """A cheap estimate of a result's size in bytes (arrays exactly, containers summed)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(value_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(value_nbytes(v) for v in value.values())
    return sys.getsizeof(value)


def execute(fn: Callable[..., object], ctx: TaskContext, *inputs: object) -> tuple[TaskStatus, object]:
    """Run ``fn(ctx, *inputs)``; an exception becomes a failed status naming it."""
    started_at_s = time.time()
    cpu_start = time.process_time()
    start = time.perf_counter()
    try:
        value = fn(ctx, *inputs)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which decides
        runtime_s = time.perf_counter() - start
        error = f"{type(exc).__name__}: {exc}"
        return TaskStatus(False, 0, runtime_s, ctx.node_id, os.getpid(), error,
                          peak_memory_bytes=peak_rss_bytes(),
                          cpu_s=time.process_time() - cpu_start,
                          started_at_s=started_at_s), None
    runtime_s = time.perf_counter() - start
    cpu_s = time.process_time() - cpu_start
    shape: tuple[int, ...] = value.shape if isinstance(value, np.ndarray) else ()
    pixels = int(shape[-1]) * int(shape[-2]) if len(shape) >= 2 else 0
    return TaskStatus(True, value_nbytes(value), runtime_s, ctx.node_id, os.getpid(),
                      pixels=pixels, peak_memory_bytes=peak_rss_bytes(), cpu_s=cpu_s,
                      started_at_s=started_at_s), value


#: One task of a batch: its function, how many of the batch's inputs are its own, and the
#: group of kept values its value joins (its consumers' return object), or -1 for a sink
#: (its value comes back inline with the statuses).
BatchCall = tuple[Callable[..., object], int, int]


def execute_batch(calls: tuple[BatchCall, ...], ctx: TaskContext, *inputs: object,
                  record: Callable[[Callable[..., object], TaskStatus], None] | None = None,
                  ) -> tuple[list[tuple[TaskStatus, object]], list[list[object]]]:
    """Run ``calls`` in order over the flat ``inputs``; never raises (see :func:`execute`).

    Returns ``(statuses, groups)``: per call its status and, for a sink, its
    value (``None`` for a kept one); ``groups[g]`` holds the values of the
    calls of group ``g``, in order (``None`` where the task failed). Inputs
    that travelled as :class:`ArrayParts` are joined first, unless the
    function says it takes them in pieces (``takes_array_parts = True``).
    """
    statuses: list[tuple[TaskStatus, object]] = []
    groups: list[list[object]] = []
    i = 0
    for fn, arity, group in calls:
        args = inputs[i:i + arity]
        if not getattr(fn, "takes_array_parts", False):
            args = tuple(map(joined, args))
        status, value = execute(fn, ctx, *args)
        i += arity
        if record is not None:
            record(fn, status)
        if group < 0:
            statuses.append((status, value))
            continue
        while len(groups) <= group:
            groups.append([])
        groups[group].append(value)
        statuses.append((status, None))
    return statuses, groups


def import_long_lived(modules: tuple[str, ...]) -> list[str]:
    """Import ``modules`` with the cyclic garbage collector paused, then freeze what the
    process holds (:func:`gc.freeze`); returns the imports that failed, with their error.

    The kernels' imports (numba's typing registries, llvmlite's bindings, GDAL's,
    pyproj's) make hundreds of thousands of objects that live as long as the
    worker. Each full collection walks them all: during the imports, and again
    whenever the tasks' allocations trigger one. Frozen, they are left out of
    every later collection (``python -m benchmarks.campaign_efficiency``, per
    actor and run: 0.19 CPU-s of collections, 0.14 s of them two full ones,
    became 0.04-0.06 s). Nothing frozen is freed: these are modules and the
    caches they fill, kept for the worker's life anyway.
    """
    import gc
    import importlib

    failed = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                failed.append(f"{name}: {exc}")
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return failed


def kernel_threads(cpus: float) -> int:
    """Threads of an actor's parallel loops for its CPU share: at least one."""
    return max(1, int(cpus))


def limit_kernel_threads(threads: int) -> None:
    """Run numba's parallel loops (``prange``) on ``threads`` threads in this process, as Ray
    does for OpenMP (``OMP_NUM_THREADS``, which numba ignores).

    numba reads ``NUMBA_NUM_THREADS`` when first imported, so an actor calls
    this before it loads the kernels; where numba is already loaded, the
    calling thread (the actor's, which runs its tasks) uses ``threads``.
    Why: by default every actor's loops take every core of the node, one
    actor per core, and numba's OpenMP threads spin at each loop's end until
    the slowest, descheduled by the other actors, catches up. ``python -m
    benchmarks.campaign_efficiency --repeat 5`` (2 actors on 2 cores, 800
    tiles, medians, exclusive lock): ``eochain run`` 20.2 -> 15.5 s, CPU-seconds
    in tasks 36.3 -> 27.4, in the actors outside them 2.1 -> 1.5 (single runs
    on a shared machine, tile tasks alone: 33.4 -> 21.2 CPU-s).
    """
    os.environ["NUMBA_NUM_THREADS"] = str(threads)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class TileWorker:
    """The Ray actor class (wrapped with ``ray.remote`` by the pool)."""

    def __init__(self, scratch_root: str | None, threads: int) -> None:
        """``threads``: of the kernels' parallel loops (:func:`limit_kernel_threads`), the
        actor's CPUs."""
        import ray

        limit_kernel_threads(threads)
        node_id = ray.get_runtime_context().get_node_id()
        scratch = tempfile.mkdtemp(prefix="eochain-worker-", dir=scratch_root)
        self.ctx = TaskContext(node_id=node_id, scratch_dir=scratch, threads=threads)
        self.metrics = ActorMetrics.create(node_id)

    def node_id(self) -> str:
        return self.ctx.node_id

    def preload(self, modules: tuple[str, ...]) -> list[str]:
        """Import the task functions' modules (and the kernels they load) ahead of the first
        task, so that a worker started while the driver surveys is ready when tasks come
        (:func:`import_long_lived`).

        Returns the imports that failed, with their error: nobody waits for this call,
        and a module that cannot load fails its tasks again, each naming the error.
        """
        return import_long_lived(modules)

    def run_batch(self, calls: tuple[BatchCall, ...], picks: tuple[tuple[int, int], ...],
                  lent: int, *groups: tuple[object, ...]) -> object:
        """Run a batch (:func:`execute_batch`); Ray's returns: the statuses, then each group.

        The tasks' inputs, in order, are ``groups[g][item]`` for each ``(g, item)``
        of ``picks`` (each group, another call's return object, is passed once).
        ``lent``: threads of idle actors of this node the batch's tasks may also run
        on (:attr:`TaskContext.threads`, :func:`~scheduler.runtime.dispatch.lent_threads`).
        Called with ``num_returns = 1 + groups made``; with nothing kept the one
        return is the list of (status, sink value).
        """
        inputs = [groups[g][item] for g, item in picks]
        own = self.ctx.threads
        if lent > 0 and own is not None:
            self.ctx.threads = own + lent
        try:
            statuses, made = execute_batch(calls, self.ctx, *inputs, record=self._record)
        finally:
            self.ctx.threads = own
        if not made:
            return statuses
        return (statuses, *(tuple(map(ArrayParts.of, values)) for values in made))

    def _record(self, fn: Callable[..., object], status: TaskStatus) -> None:
        if self.metrics is not None:
            self.metrics.record(fn, status.ok, status.runtime_s, status.peak_memory_bytes)

    def close(self) -> None:
        """Drop the caches and the scratch folder (the pool calls it before killing the actor)."""
        for value in self.ctx.cache.values():
            close = getattr(value, "close", None)
            if callable(close):
                close()  # open datasets
        self.ctx.cache.clear()
        shutil.rmtree(self.ctx.scratch_dir, ignore_errors=True)
