"""Thin Ray actors: a cache, a node id, and a plain call of the task's function.

A task's function is ``fn(ctx, *inputs)`` where ``ctx`` is a
:class:`TaskContext`: a per-worker cache (DEM tiles, sensor models, open
datasets survive from one tile to the next), a scratch folder, and the id of
the node it runs on. :func:`execute` runs one task and never raises: an
exception of the function becomes a failed :class:`TaskStatus` (an
*application* failure, final for that task), so anything Ray raises to the
driver is a *system* failure (a lost node or worker) and is retried.

:class:`TileWorker` is the Ray actor; it adds nothing but the Ray plumbing
and its own Prometheus metrics (:mod:`scheduler.runtime.actor_metrics`, via
Ray's metrics API: tasks, durations and peak memory as the actor saw them),
so everything here is testable without Ray (``execute(fn, TaskContext(), ...)``).
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scheduler.runtime.actor_metrics import ActorMetrics

#: Results up to this size travel back inline with the status (Ray's own inline limit).
INLINE_BYTES = 100 * 1024


@dataclass(slots=True)
class TaskContext:
    """What a task function may use besides its inputs: a cache kept between tasks."""

    node_id: str = ""
    cache: dict[str, object] = field(default_factory=dict)
    scratch_dir: str = field(default_factory=tempfile.gettempdir)

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        """The cached value for ``key``, built by ``factory()`` on first use."""
        if key not in self.cache:
            self.cache[key] = factory()
        return self.cache[key]


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """The small half of a task's result: outcome, size of the value, where and how long."""

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
    start = time.perf_counter()
    try:
        value = fn(ctx, *inputs)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, which decides
        runtime_s = time.perf_counter() - start
        error = f"{type(exc).__name__}: {exc}"
        return TaskStatus(False, 0, runtime_s, ctx.node_id, os.getpid(), error,
                          peak_memory_bytes=peak_rss_bytes()), None
    runtime_s = time.perf_counter() - start
    shape: tuple[int, ...] = value.shape if isinstance(value, np.ndarray) else ()
    pixels = int(shape[-1]) * int(shape[-2]) if len(shape) >= 2 else 0
    return TaskStatus(True, value_nbytes(value), runtime_s, ctx.node_id, os.getpid(),
                      pixels=pixels, peak_memory_bytes=peak_rss_bytes()), value


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class TileWorker:
    """The Ray actor class (wrapped with ``ray.remote`` by the pool)."""

    def __init__(self, scratch_root: str | None = None) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        scratch = tempfile.mkdtemp(prefix="eochain-worker-", dir=scratch_root)
        self.ctx = TaskContext(node_id=node_id, scratch_dir=scratch)
        self.metrics = ActorMetrics.create(node_id)

    def node_id(self) -> str:
        return self.ctx.node_id

    def run(self, fn: Callable[..., object], *inputs: object) -> tuple[TaskStatus, object]:
        status, value = execute(fn, self.ctx, *inputs)
        if self.metrics is not None:
            self.metrics.record(fn, status.ok, status.runtime_s, status.peak_memory_bytes)
        return status, value

    def close(self) -> None:
        """Drop the caches and the scratch folder (the pool calls it before killing the actor)."""
        for value in self.ctx.cache.values():
            close = getattr(value, "close", None)
            if callable(close):
                close()  # open datasets
        self.ctx.cache.clear()
        shutil.rmtree(self.ctx.scratch_dir, ignore_errors=True)
