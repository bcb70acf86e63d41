"""The task DAG comes from operations' declarations; cycles and dangling inputs are errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx
import pytest

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.dag import TaskCost, TaskDeclaration, TaskKey, build_dag, critical_path_s
from planner.errors import DagError
from planner.estimate import CampaignOperations, campaign_dag

pytestmark = pytest.mark.unit

COST = TaskCost({"m7i": 10.0}, 1, 1.0, 100)


@dataclass(frozen=True)
class ListOp:
    """An operation whose declarations are given as a list (a second real implementation)."""

    name: str
    decls: tuple[TaskDeclaration, ...]

    def declarations(self) -> Iterator[TaskDeclaration]:
        return iter(self.decls)


def K(op: str, i: int) -> TaskKey:
    return TaskKey(op, "x", 0, i)


def test_edges_follow_declarations() -> None:
    """
        a0   a1
         \\  /
          b0
    """
    a = ListOp("a", (TaskDeclaration(K("a", 0), (), COST), TaskDeclaration(K("a", 1), (), COST)))
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 0), 7), (K("a", 1), 9)), COST),))
    g = build_dag([a, b])
    assert set(g.edges) == {(K("a", 0), K("b", 0)), (K("a", 1), K("b", 0))}
    assert g.edges[K("a", 1), K("b", 0)]["bytes"] == 9
    assert g.nodes[K("b", 0)]["cost"] is COST
    assert critical_path_s(g, {"a": "m7i", "b": "m7i"}) == pytest.approx(20.0)


def test_dangling_input_lists_keys() -> None:
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 5), 1),), COST),))
    with pytest.raises(DagError, match=r"a:x:0_5 \(needed by b:x:0_0\)"):
        build_dag([b])


def test_cycle_lists_keys() -> None:
    """a0 -> b0 -> a0"""
    a = ListOp("a", (TaskDeclaration(K("a", 0), ((K("b", 0), 1),), COST),))
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 0), 1),), COST),))
    with pytest.raises(DagError, match="cycle") as err:
        build_dag([a, b])
    assert "a:x:0_0" in str(err.value) and "b:x:0_0" in str(err.value)


def test_duplicate_keys_are_errors() -> None:
    a = ListOp("a", (TaskDeclaration(K("a", 0), (), COST),))
    with pytest.raises(DagError, match="already declared: a:x:0_0"):
        build_dag([a, a])


def _campaign(pairs: int = 2) -> object:
    return parse_campaign({
        "name": "t",
        "inputs": {"survey": {"pairs": pairs, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 6}},
        "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
        "tiling": {"tile_px": 2048, "margin_px": 64},
        "data": {"region": "eu-west-3", "bucket": "b"}, "deadline_h": 24,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g", "m7g"]}})


def test_estimated_campaign_dag_structure() -> None:
    """
        stereo(i-1..i+1, j-1..j+1)  ->  dsm(i, j)  ->  ortho(scene, k, l)
    """
    c = _campaign()
    g = campaign_dag(c, load_calibration(), ("c7g", "m7g"), with_external=True)  # type: ignore[arg-type]
    assert nx.is_directed_acyclic_graph(g)
    ops = {k.op for k in g}
    assert ops == {"stereo", "dsm", "ortho"}
    for k in g:
        preds = {p.op for p in g.predecessors(k)}
        assert preds == {"stereo": set(), "dsm": {"stereo"}, "ortho": {"dsm"}}[k.op]
        cost = g.nodes[k]["cost"]
        assert cost.cpu_s["c7g"] > 0 and cost.peak_mem_gib > 0
    # an interior DSM tile reads its 3x3 stereo neighbourhood, mostly its own tile
    dsm = max((k for k in g if k.op == "dsm"), key=lambda k: g.in_degree(k))
    sizes = sorted(g.edges[p, dsm]["bytes"] for p in g.predecessors(dsm))
    assert g.in_degree(dsm) == 9 and sizes[-1] >= 2048 // 64 * sizes[-2]
    # ortho tiles read raw windows of their own scene
    o = next(k for k in g if k.op == "ortho")
    (ext,) = g.nodes[o]["external"]
    assert o.item in ext.raster and ext.window.size > 0


def test_external_windows_not_kept_by_default() -> None:
    ops = CampaignOperations(_campaign(1), load_calibration(), ("c7g",))  # type: ignore[arg-type]
    g = build_dag(ops.operations())
    assert all("external" not in d for _, d in g.nodes(data=True))
    assert g.graph["operations"] == ("stereo", "dsm", "ortho")


def test_stage_summary_by_hand() -> None:
    """
        a0(in 5, out 100)  a1(in 5, out 100)
               \\ 7          / 9
                b0 (out 100)
    """
    from planner.frontier import summarise_stages

    cost_a = TaskCost({"m7i": 10.0}, 1, 1.0, 100, 5)
    cost_b = TaskCost({"m7i": 40.0}, 2, 3.0, 100)
    a = ListOp("a", (TaskDeclaration(K("a", 0), (), cost_a),
                     TaskDeclaration(K("a", 1), (), cost_a)))
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 0), 7), (K("a", 1), 9)), cost_b),))
    g = build_dag([a, b])
    bare = nx.DiGraph(g)
    bare.graph.clear()
    for graph in (g, bare):  # with and without build_dag's per-op edge totals
        sa, sb = sorted(summarise_stages(graph), key=lambda s: s.name)
        assert (sa.name, sa.n_tasks, sa.cpu_s["m7i"], sa.threads) == ("a", 2, 10.0, 1)
        assert sa.transfer_bytes == 105.0  # raw input + own output
        assert (sb.n_tasks, sb.threads, sb.peak_mem_gib) == (1, 2, 3.0)
        assert sb.transfer_bytes == 100 + 7 + 9
