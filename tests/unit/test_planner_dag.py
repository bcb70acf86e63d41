"""The task DAG comes from operations' declarations; cycles and dangling inputs are errors.

Ops here are those of the stage vocabulary (:mod:`planner.stages`): ``stereo``
stands for "a" and ``dsm`` for "b" of the drawings.
"""

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
    return TaskKey({"a": "stereo", "b": "dsm"}[op], "x", 0, i)


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
    assert critical_path_s(g, {"stereo": "m7i", "dsm": "m7i"}) == pytest.approx(20.0)


def test_dangling_input_lists_keys() -> None:
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 5), 1),), COST),))
    with pytest.raises(DagError, match=r"stereo:x:0_5 \(needed by dsm:x:0_0\)"):
        build_dag([b])


def test_cycle_lists_keys() -> None:
    """a0 -> b0 -> a0"""
    a = ListOp("a", (TaskDeclaration(K("a", 0), ((K("b", 0), 1),), COST),))
    b = ListOp("b", (TaskDeclaration(K("b", 0), ((K("a", 0), 1),), COST),))
    with pytest.raises(DagError, match="cycle") as err:
        build_dag([a, b])
    assert "stereo:x:0_0" in str(err.value) and "dsm:x:0_0" in str(err.value)


def test_duplicate_keys_are_errors() -> None:
    a = ListOp("a", (TaskDeclaration(K("a", 0), (), COST),))
    with pytest.raises(DagError, match="already declared: stereo:x:0_0"):
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
        stereo.plan(p) -> stereo(p, i, j) -> dsm(p, i, j) -> dsm.write(p)
              \\______________________________^
        ortho.plan(s) -> ortho(s, k, l) -> ortho.write(s)       (on the DEM: no DSM input)
    """
    c = _campaign()
    g = campaign_dag(c, load_calibration(), ("c7g", "m7g"), with_external=True)  # type: ignore[arg-type]
    assert nx.is_directed_acyclic_graph(g)
    assert {k.op for k in g} == {"stereo.plan", "stereo", "dsm", "dsm.write", "ortho.plan",
                                 "ortho", "ortho.write"}
    assert g.graph["stages"] == ("stereo", "dsm", "ortho")
    expected = {"stereo.plan": set(), "stereo": {"stereo.plan"}, "dsm": {"stereo.plan", "stereo"},
                "dsm.write": {"dsm"}, "ortho.plan": set(), "ortho": {"ortho.plan"},
                "ortho.write": {"ortho"}}
    for k in g:
        assert {p.op for p in g.predecessors(k)} == expected[k.op], k
        cost = g.nodes[k]["cost"]
        assert cost.peak_mem_gib > 0
        assert (cost.cpu_s["c7g"] > 0) == (k.op in ("stereo", "dsm", "ortho"))
    # a DSM tile reads its own stereo tile (the points cover its margin), all of it
    dsm = next(k for k in g if k.op == "dsm" and k.row == 1 and k.col == 1)
    stereo = TaskKey("stereo", dsm.item, 1, 1)
    assert set(g.predecessors(dsm)) == {stereo, TaskKey("stereo.plan", dsm.item, 0, 0)}
    assert g.edges[stereo, dsm]["bytes"] == g.nodes[stereo]["cost"].output_bytes > 0
    # a writer reads every tile of its product
    n_tiles = sum(1 for k in g if k.op == "dsm" and k.item == dsm.item)
    assert g.in_degree(TaskKey("dsm.write", dsm.item, 0, 0)) == n_tiles > 1
    # ortho and stereo tiles read raw windows of their own scenes
    o = next(k for k in g if k.op == "ortho")
    (ext,) = g.nodes[o]["external"]
    assert o.item in ext.raster and ext.window.size > 0
    assert len(g.nodes[stereo]["external"]) == 2


def test_external_windows_not_kept_by_default() -> None:
    ops = CampaignOperations(_campaign(1), load_calibration(), ("c7g",))  # type: ignore[arg-type]
    g = build_dag(ops.operations())
    assert all("external" not in d for _, d in g.nodes(data=True))
    assert g.graph["operations"] == ("dsm", "ortho")


def test_layouts_by_hand() -> None:
    """
        pair a+b on 1 x 2 tiles:                     views g over pairs a+b, a+c on 1 x 1:
        stereo.plan -> stereo(0,0) -> dsm(0,0) ┐     stereo.plan -> stereo(g/a+b) -> dsm(g/a+b) ┐
                    -> stereo(0,1) -> dsm(0,1) ┴> dsm.write   \\--> stereo(g/a+c) -> dsm(g/a+c) ┴> fusion -> dsm.write
    """
    from planner.stages import dsm_tasks, ortho_tasks, parse_key, stage_of

    pair = list(dsm_tasks("a+b", 1, 2))
    assert [str(t.key) for t in pair] == [
        "stereo.plan:a+b:0_0", "stereo:a+b:0_0", "dsm:a+b:0_0", "stereo:a+b:0_1", "dsm:a+b:0_1",
        "dsm.write:a+b:0_0"]
    assert [str(k) for k in pair[2].inputs] == ["stereo.plan:a+b:0_0", "stereo:a+b:0_0"]
    assert [str(k) for k in pair[-1].inputs] == ["dsm:a+b:0_0", "dsm:a+b:0_1"]
    fused = {str(t.key): [str(k) for k in t.inputs] for t in dsm_tasks("g", 1, 1, ("a+b", "a+c"))}
    assert fused["fusion:g:0_0"] == ["stereo.plan:g:0_0", "dsm:g/a+b:0_0", "dsm:g/a+c:0_0"]
    assert fused["dsm.write:g:0_0"] == ["fusion:g:0_0"]
    assert [t.kind for t in ortho_tasks("s", 1, 1)] == ["plan", "tile", "write"]
    assert [stage_of(op) for op in ("stereo.plan", "dsm.write", "fusion", "ortho.write")] == [
        "stereo", "dsm", "fusion", "ortho"]
    assert parse_key("ortho.write:a+b/c:1_2") == TaskKey("ortho.write", "a+b/c", 1, 2)
    with pytest.raises(DagError, match="belongs to no stage"):
        stage_of("write")
    with pytest.raises(DagError, match="not op:item:row_col"):
        parse_key("s1/ortho/0001_0002")
    with pytest.raises(DagError, match="holds ':'"):
        list(ortho_tasks("a:b", 1, 1))


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
    for graph in (g, bare):  # with and without build_dag's per-stage edge totals
        sa, sb = sorted(summarise_stages(graph), key=lambda s: s.name, reverse=True)
        assert (sa.name, sa.n_tasks, sa.cpu_s["m7i"], sa.threads) == ("stereo", 2, 10.0, 1)
        assert sa.transfer_bytes == 105.0  # raw input + own output
        assert (sb.n_tasks, sb.threads, sb.peak_mem_gib) == (1, 2, 3.0)
        assert sb.transfer_bytes == 100 + 7 + 9


def test_store_reads_and_writes_declared() -> None:
    """What tasks read from and write to the object store, which S3 requests follow from:

        stereo.plan -> the headers of the pair's 2 views      ortho.plan -> its scene's header
        stereo tile -> a window of each view + a DEM row      ortho tile -> a window + a DEM row
        dsm.write   -> publishes its tiles' bytes             ortho.write -> likewise
    """
    from planner.overheads import (
        DagTraffic,
        Overheads,
        overhead_cost,
        publish_puts,
        store_requests,
    )

    c = _campaign(1)
    for with_external in (True, False):  # declared windows, else estimated from the footprint
        g = campaign_dag(c, load_calibration(), ("c7g",), with_external=with_external)  # type: ignore[arg-type]
        rows = g.graph["window_rows"]
        n = {op: sum(1 for k in g if k.op == op) for op in ("stereo", "ortho", "ortho.plan")}
        # headers: 2 views, 1 per scene (and windows that the estimate clips to nothing)
        assert rows[0] >= 2 + n["ortho.plan"]
        assert rows[1] >= n["stereo"] + n["ortho"]  # one DEM block row per tile
        assert sum(rows.values()) == 2 + n["ortho.plan"] + 3 * n["stereo"] + 2 * n["ortho"]
        if not with_external:
            # an interior tile of 2048 + 2 x 64 px reads that many rows of 0.5 m views: as
            # many for a 0.5 m ortho tile, twice as many for each view of a 1 m DSM tile
            assert rows[2048 + 2 * 64] > 0 and rows[2 * (2048 + 2 * 64)] > 0
        writers = [k for k in g if k.op.endswith(".write")]
        assert sorted(g.graph["published_bytes"]) == sorted(
            sum(g.edges[p, w]["bytes"] for p in g.predecessors(w)) for w in writers)
    # by hand: a 513-row window spans 1 + 512/512 block rows on average, plus its header
    traffic = DagTraffic(0.0, 0.0, 4, 1, {0: 1, 513: 2}, (20 * 2**20,))
    o = Overheads(raw_block_rows=512, multipart_part_bytes=8 * 2**20)
    req = store_requests(o, traffic)
    assert req.window_gets == 1 + 2 * 3
    assert req.puts == (3 + 2) + 3  # one upload of 3 parts, straight to the key; bookkeeping
    assert req.product_gets == 4
    # boto3 goes multipart from the threshold itself: a part's worth is create, part, complete
    assert [publish_puts(b, 8 * 2**20) for b in (8 * 2**20 - 1, 8 * 2**20, 16 * 2**20 + 1)] \
        == [1, 3, 5]
    once = overhead_cost(o, traffic, makespan_s=0.0, node_s=0.0, instances=0,
                         head_usd_per_h=0.0).requests_usd
    twice = overhead_cost(o, traffic, makespan_s=0.0, node_s=0.0, instances=0,
                          head_usd_per_h=0.0, tasks_run=8).requests_usd
    assert twice - once == pytest.approx(o.s3_get_usd_per_1000 * req.window_gets / 1000)
