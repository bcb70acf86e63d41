"""Task priorities that finish the branch at hand before opening new ones (after ``dask.order``).

A wide campaign is many small trees::

    stereo stereo stereo stereo        breadth-first runs every stereo tile,
        \\   /     \\   /                 then every DSM tile: all point clouds
         dsm       dsm                  are alive at once.
          |  \\      |
        ortho ortho ortho               depth-first walks to one final tile,
                                        then immediately runs whatever its
                                        results made ready.

:func:`depth_first_order` takes the final (sink) tasks in key order, so a
scene or pair is finished before the next is opened, and computes each by
an iterative post-order walk of its unfinished inputs (inputs in key order,
i.e. row-major tiles). Whenever a task completes, the tasks it made ready are
run next (pushed on top of the walk's stack): a DSM tile is gridded as soon
as its last stereo tile exists, and the ortho tiles waiting only on that DSM
tile follow, which releases intermediate data early.

:func:`live_bytes_profile` measures an order: a task's output is alive from
its completion until its last consumer completes; final products (tasks
without consumers) are written out and never counted. The reference is
:func:`breadth_first_order`, the topological generations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from planner.errors import DagError


def depth_first_order(graph: nx.DiGraph) -> list[Any]:
    """Every task once, inputs before consumers (see the module docstring)."""
    pred = graph._pred  # adjacency dicts: ~3x faster than the view API at 10^6 nodes
    succ = graph._succ
    missing = {n: len(p) for n, p in pred.items()}
    done: set[Any] = set()
    order: list[Any] = []
    sinks = sorted(n for n in graph if not succ[n])
    for sink in sinks:
        if sink in done:
            continue
        stack = [sink]
        while stack:
            node = stack[-1]
            if node in done:
                stack.pop()
                continue
            if missing[node]:
                todo = [p for p in pred[node] if p not in done]
                if len(todo) > 1:
                    todo.sort(reverse=True)
                stack.extend(todo)
                continue
            stack.pop()
            done.add(node)
            order.append(node)
            ready = []
            for s in succ[node]:
                missing[s] -= 1
                if missing[s] == 0:
                    ready.append(s)
            if ready:
                ready.sort(reverse=True)
                stack.extend(ready)
    if len(order) != graph.number_of_nodes():
        raise DagError(f"depth-first order covers {len(order)} of {graph.number_of_nodes()} "
                       "tasks; the graph has a cycle")
    return order


def breadth_first_order(graph: nx.DiGraph) -> list[Any]:
    """Topological generations, each in key order: the breadth-first reference."""
    return [n for gen in nx.topological_generations(graph) for n in sorted(gen)]


def priorities(order: Sequence[Any]) -> dict[Any, int]:
    """Task -> rank (0 runs first)."""
    return {n: i for i, n in enumerate(order)}


@dataclass(frozen=True, slots=True)
class LiveBytes:
    peak_bytes: int
    peak_at: int
    mean_bytes: float


def live_bytes_profile(graph: nx.DiGraph, order: Sequence[Any]) -> LiveBytes:
    """Peak and mean intermediate bytes alive when tasks run one at a time in ``order``."""
    succ = graph._succ
    pred = graph._pred
    nodes = graph._node
    remaining = {n: len(succ[n]) for n in graph}
    seen: set[Any] = set()
    live = 0
    peak = 0
    peak_at = 0
    total = 0.0
    for i, n in enumerate(order):
        for p in pred[n]:
            if p not in seen:
                raise DagError(f"order runs {n} before its input {p}; expected a topological "
                               "order")
        seen.add(n)
        if succ[n]:
            live += nodes[n]["cost"].output_bytes
        if live > peak:
            peak, peak_at = live, i
        for p in pred[n]:
            remaining[p] -= 1
            if remaining[p] == 0:
                live -= nodes[p]["cost"].output_bytes
        total += live
    if len(seen) != graph.number_of_nodes():
        raise DagError(f"order has {len(seen)} distinct tasks, the graph "
                       f"{graph.number_of_nodes()}; expected every task once")
    return LiveBytes(peak, peak_at, total / max(1, len(order)))
