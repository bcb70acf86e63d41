"""The task DAG: one node per (operation, scene or pair, tile), edges from declared inputs.

Edges are never written by hand. Each :class:`Operation` lists its tasks and,
for each, *declares* what it needs (:class:`TaskDeclaration`): the upstream
tasks whose output it reads, with the bytes read from each, and the windows
of raw rasters (:class:`planner.geometry.grid.InputWindow`). :func:`build_dag` turns
the declarations into a ``networkx.DiGraph``::

        stereo.plan(p)              an edge u -> v means "v reads u's output";
         /     |      \\             its ``bytes`` attribute is how much
    stereo(p,0,0)  |   stereo(p,0,1)  node attribute ``cost``: a TaskCost with
         |     |         |            CPU-seconds per instance family, threads,
     dsm(p,0,0) ...  dsm(p,0,1)       peak memory and output bytes
            \\        /
           dsm.write(p)

Task keys, stages and each product's layout come from :mod:`planner.stages`;
the graph records the stages present (``graph.graph["stages"]``, in
:data:`~planner.stages.STAGES` order), the bytes read from other tasks per
consumer stage (``graph.graph["edge_bytes_by_stage"]``) and what tasks read
from and write to the object store, which the S3 requests follow from
(:func:`planner.overheads.store_requests`): the raw windows read, counted by
their rows (``graph.graph["window_rows"]``), and the bytes of each product
published (``graph.graph["published_bytes"]``).

At plan time the declarations come from a cheap footprint estimate
(:mod:`planner.estimate`); the runtime plugs in exact ones by passing its own
``Operation`` objects (for instance, input windows computed from the RPCs).
A cycle, or an input that no operation produces (dangling), is a
:class:`~planner.errors.DagError` that lists the keys involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import networkx as nx

from planner.errors import DagError
from planner.geometry.grid import InputWindow
from planner.stages import STAGES, TaskKey, stage_of

__all__ = ["GIB", "Operation", "TaskCost", "TaskDeclaration", "TaskKey", "build_dag",
           "critical_path_s", "task_cost"]

GIB = 2**30


@dataclass(frozen=True, slots=True)
class TaskCost:
    """Estimated resources of one task. Operations share one object between same-size tiles."""

    cpu_s: Mapping[str, float]
    threads: int
    peak_mem_gib: float
    output_bytes: int
    input_bytes: int = 0

    def __post_init__(self) -> None:
        if self.threads < 1 or self.peak_mem_gib < 0 or self.output_bytes < 0:
            raise DagError(
                f"TaskCost threads={self.threads}, peak_mem_gib={self.peak_mem_gib}, "
                f"output_bytes={self.output_bytes}; expected threads >= 1 and sizes >= 0")
        if any(v < 0 for v in self.cpu_s.values()):
            raise DagError(f"TaskCost cpu_s={dict(self.cpu_s)} has a negative entry")

    def runtime_s(self, family: str) -> float:
        """Wall time on ``threads`` vCPUs of ``family``."""
        return self.cpu_s[family] / self.threads


@dataclass(frozen=True, slots=True)
class TaskDeclaration:
    """What one task needs: upstream tasks with bytes read from each, raw windows, cost."""

    key: TaskKey
    inputs: Sequence[tuple[TaskKey, int]]
    cost: TaskCost
    external: tuple[InputWindow, ...] = ()
    #: rows of each raw raster window it reads from the object store (0: the header only,
    #: as a plan task reads its views' RPCs); declared even when ``external`` is not kept
    window_rows: tuple[int, ...] = ()
    #: bytes of the product it publishes to the object store (a writer), else 0
    published_bytes: int = 0


class Operation(Protocol):
    """A kernel applied tile by tile; the planner only sees its declarations."""

    @property
    def name(self) -> str: ...

    def declarations(self) -> Iterator[TaskDeclaration]:
        """Every task of this operation with its declared inputs and cost."""
        ...


def _listing(keys: Iterable[object], limit: int = 8) -> str:
    items = [str(k) for k in keys]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def build_dag(operations: Iterable[Operation], *, keep_external: bool = False) -> nx.DiGraph:
    """The task DAG of ``operations`` (see the module docstring).

    ``keep_external`` stores each task's raw input windows on its node as
    ``external`` (the runtime needs them; planning a million tiles does not).
    """
    graph: nx.DiGraph = nx.DiGraph()
    # Filled through networkx's documented dict-of-dicts structure (_node, _succ,
    # _pred; an edge's attribute dict is shared by both directions) rather than
    # add_nodes_from/add_edges_from: 2-3x faster at a million tasks.
    node = graph._node
    succ = graph._succ
    pred = graph._pred
    ops = []
    clash: list[TaskKey] = []
    window_rows: dict[int, int] = {}
    published: list[int] = []
    for op in operations:
        ops.append(op.name)
        for decl in op.declarations():
            key = decl.key
            if key in node:
                clash.append(key)
                continue
            for rows in decl.window_rows:
                window_rows[rows] = window_rows.get(rows, 0) + 1
            if decl.published_bytes:
                published.append(decl.published_bytes)
            node[key] = ({"cost": decl.cost, "external": decl.external} if keep_external
                         else {"cost": decl.cost})
            succ[key] = {}
            pred[key] = {src: {"bytes": nbytes} for src, nbytes in decl.inputs}
        if clash:
            raise DagError(f"operation {op.name!r} declares task keys already declared: "
                           f"{_listing(clash)}")
    needed_by: dict[TaskKey, TaskKey] = {}
    in_bytes: dict[str, int] = {}
    stage_by_op = {op: stage_of(op) for op in {key[0] for key in node}}
    for dst, inputs in pred.items():
        if not inputs:
            continue
        total = 0
        for src, data in inputs.items():
            out = succ.get(src)
            if out is None:
                needed_by[src] = dst
            else:
                out[dst] = data
                total += data["bytes"]
        stage = stage_by_op[dst[0]]
        in_bytes[stage] = in_bytes.get(stage, 0) + total
    if needed_by:
        raise DagError(
            f"dangling inputs: {len(needed_by)} declared inputs have no producing task; "
            f"{_listing(f'{k} (needed by {v})' for k, v in needed_by.items())}; "
            f"operations present: {', '.join(ops)}")
    if not _is_acyclic(pred, succ):
        cycle = nx.find_cycle(graph)
        raise DagError(f"the task graph has a cycle: "
                       f"{' -> '.join(str(u) for u, _ in cycle)} -> {cycle[0][0]}")
    graph.graph["operations"] = tuple(ops)
    graph.graph["stages"] = tuple(s for s in STAGES if s in stage_by_op.values())
    graph.graph["edge_bytes_by_stage"] = in_bytes  # bytes read from other tasks, per consumer
    graph.graph["window_rows"] = window_rows  # raw windows read from the store: rows -> count
    graph.graph["published_bytes"] = tuple(published)  # one entry per product published
    return graph


def _is_acyclic(pred: Mapping[Any, Mapping[Any, Any]],
                succ: Mapping[Any, Mapping[Any, Any]]) -> bool:
    """Kahn's algorithm on the raw adjacency dicts (networkx's check is ~3x slower here)."""
    missing = {n: len(p) for n, p in pred.items()}
    ready = [n for n, k in missing.items() if k == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for s in succ[n]:
            missing[s] -= 1
            if missing[s] == 0:
                ready.append(s)
    return seen == len(missing)


def task_cost(graph: nx.DiGraph, key: TaskKey) -> TaskCost:
    cost: TaskCost = graph.nodes[key]["cost"]
    return cost


def critical_path_s(graph: nx.DiGraph, family_of_stage: Mapping[str, str]) -> float:
    """Longest chain of task runtimes, each stage on the family given (its fastest)."""
    finish: dict[TaskKey, float] = {}
    best = 0.0
    for key in nx.topological_sort(graph):
        start = max((finish[p] for p in graph.predecessors(key)), default=0.0)
        cost = graph.nodes[key]["cost"]
        end = start + cost.runtime_s(family_of_stage[stage_of(key[0])])
        finish[key] = end
        best = max(best, end)
    return best
