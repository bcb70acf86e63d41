"""The in-process executor: a task graph run in this process, without Ray, in priority order,
with the dispatcher's bookkeeping (:class:`~scheduler.runtime.state.DispatchState`); for
tests and tiny runs.
"""

from __future__ import annotations

import time

from scheduler.runtime.actors import TaskContext, execute
from scheduler.runtime.errors import GraphError
from scheduler.runtime.options import DispatchOptions
from scheduler.runtime.report import ProgressFn, RunReport, progress_of
from scheduler.runtime.state import DispatchState, TaskGraph


def run_serial(
    graph: TaskGraph,
    options: DispatchOptions | None = None,
    progress: ProgressFn | None = None,
    ctx: TaskContext | None = None,
) -> RunReport:
    """Run the graph in this process, in priority order, with the same bookkeeping."""
    options = options or DispatchOptions()
    ctx = ctx or TaskContext(node_id="local")
    state = DispatchState(graph, options.max_bytes_in_flight)
    values: dict[str, object] = {}
    results: dict[str, object] = {}
    start = time.perf_counter()
    sinks = set(graph.sinks())
    while not state.finished:
        key = state.take()
        if key is None:
            raise GraphError("no task is ready but the graph is not finished (inconsistent state)")
        task = graph.tasks[key]
        state.start(key)
        status, value = execute(task.fn, ctx, *(values[d] for d in task.deps))
        if status.ok:
            if key in sinks:
                results[key] = value
            else:
                values[key] = value
            state.complete(key, status.nbytes)
        else:
            state.fail(key, status.error)
        for k in state.dropped:
            values.pop(k, None)
        state.dropped.clear()
        if progress is not None:
            progress(progress_of(state, len(sinks), len(results), start, 0))
    runs = sum(state.runs.values())
    return RunReport(results, tuple(state.failures), runs, 0, 0, state.peak_bytes_in_flight,
                     time.perf_counter() - start, dict(state.runs))

