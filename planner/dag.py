"""The task DAG: one node per (operation, scene or pair, tile), edges from declared inputs.

Edges are never written by hand. Each :class:`Operation` lists its tasks and,
for each, *declares* what it needs (:class:`TaskDeclaration`): the upstream
tasks whose output it reads, with the bytes read from each, and the windows
of raw rasters (:class:`planner.grid.InputWindow`). :func:`build_dag` turns
the declarations into a ``networkx.DiGraph``::

    stereo(p,0,0)  stereo(p,0,1)        an edge u -> v means "v reads u's output";
          \\        /                   its ``bytes`` attribute is how much
           dsm(p,0,0)                   node attribute ``cost``: a TaskCost with
               |                        CPU-seconds per instance family, threads,
          ortho(s,0,0)                  peak memory and output bytes

At plan time the declarations come from a cheap footprint estimate
(:mod:`planner.estimate`); the runtime plugs in exact ones by passing its own
``Operation`` objects (for instance, input windows computed from the RPCs).
A cycle, or an input that no operation produces (dangling), is a
:class:`~planner.errors.DagError` that lists the keys involved.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import networkx as nx

from planner.errors import DagError
from planner.grid import InputWindow

GIB = 2**30


class TaskKey(NamedTuple):
    """A task: operation name, scene or pair id, tile row and tile column.

    A named tuple rather than a dataclass: graphs of a million tasks hash
    these keys millions of times, and tuple hashing runs in C.
    """

    op: str
    item: str
    row: int
    col: int

    def __str__(self) -> str:
        return f"{self.op}:{self.item}:{self.row}_{self.col}"


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
    inputs: tuple[tuple[TaskKey, int], ...]
    cost: TaskCost
    external: tuple[InputWindow, ...] = ()


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
    edges: list[tuple[TaskKey, TaskKey, dict[str, int]]] = []
    needed_by: dict[TaskKey, TaskKey] = {}
    ops = []
    for op in operations:
        ops.append(op.name)
        nodes = []
        for decl in op.declarations():
            attrs: dict[str, object] = {"cost": decl.cost}
            if keep_external:
                attrs["external"] = decl.external
            nodes.append((decl.key, attrs))
            for src, nbytes in decl.inputs:
                edges.append((src, decl.key, {"bytes": nbytes}))
        clash = [k for k, _ in nodes if k in graph]
        counts = Counter(k for k, _ in nodes)
        clash += [k for k, c in counts.items() if c > 1] if len(counts) != len(nodes) else []
        if clash:
            raise DagError(f"operation {op.name!r} declares task keys already declared: "
                           f"{_listing(clash)}")
        graph.add_nodes_from(nodes)
    for src, dst, _ in edges:
        if src not in graph:
            needed_by[src] = dst
    if needed_by:
        raise DagError(
            f"dangling inputs: {len(needed_by)} declared inputs have no producing task; "
            f"{_listing(f'{k} (needed by {v})' for k, v in needed_by.items())}; "
            f"operations present: {', '.join(ops)}")
    graph.add_edges_from(edges)
    if not nx.is_directed_acyclic_graph(graph):
        cycle = nx.find_cycle(graph)
        raise DagError(f"the task graph has a cycle: "
                       f"{' -> '.join(str(u) for u, _ in cycle)} -> {cycle[0][0]}")
    graph.graph["operations"] = tuple(ops)
    return graph


def task_cost(graph: nx.DiGraph, key: TaskKey) -> TaskCost:
    cost: TaskCost = graph.nodes[key]["cost"]
    return cost


def critical_path_s(graph: nx.DiGraph, family_of_op: Mapping[str, str]) -> float:
    """Longest chain of task runtimes, each op on the family given (its fastest)."""
    finish: dict[TaskKey, float] = {}
    best = 0.0
    for key in nx.topological_sort(graph):
        start = max((finish[p] for p in graph.predecessors(key)), default=0.0)
        cost = graph.nodes[key]["cost"]
        end = start + cost.runtime_s(family_of_op[key[0]])
        finish[key] = end
        best = max(best, end)
    return best
