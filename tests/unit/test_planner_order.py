"""Depth-first order: every task once, inputs first, and far fewer live bytes than breadth-first."""

from __future__ import annotations

from typing import Any

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.calibration import load_calibration
from planner.campaign import parse_campaign
from planner.dag import TaskCost
from planner.errors import DagError
from planner.estimate import campaign_dag
from planner.order import breadth_first_order, depth_first_order, live_bytes_profile

pytestmark = pytest.mark.unit


def _random_dag(seed: int, n: int, p: float) -> nx.DiGraph:
    g = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    dag = nx.DiGraph((u, v) for u, v in g.edges if u < v)
    dag.add_nodes_from(range(n))
    for k in dag:
        dag.nodes[k]["cost"] = TaskCost({"f": 1.0}, 1, 1.0, 10 + k)
    return dag


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 60), st.floats(0.0, 0.3))
def test_order_is_topological_and_complete(seed: int, n: int, p: float) -> None:
    g = _random_dag(seed, n, p)
    for order in (depth_first_order(g), breadth_first_order(g)):
        assert sorted(order) == sorted(g.nodes)
        rank = {k: i for i, k in enumerate(order)}
        assert all(rank[u] < rank[v] for u, v in g.edges)
        prof = live_bytes_profile(g, order)
        assert prof.peak_bytes >= 0


def test_live_bytes_by_hand() -> None:
    """
        a(10)  b(20)     final c has no consumer: never counted
           \\  /
            c
    """
    g = nx.DiGraph([("a", "c"), ("b", "c")])
    for k, size in (("a", 10), ("b", 20), ("c", 99)):
        g.nodes[k]["cost"] = TaskCost({"f": 1.0}, 1, 1.0, size)
    assert live_bytes_profile(g, ["a", "b", "c"]).peak_bytes == 30
    with pytest.raises(DagError, match="before its input"):
        live_bytes_profile(g, ["a", "c", "b"])


def _wide_campaign() -> Any:
    return parse_campaign({
        "name": "wide",
        "inputs": {"survey": {"pairs": 12, "bbox": [4.6, 43.4, 6.6, 44.6], "scene_km": 10}},
        "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
        "tiling": {"tile_px": 1024, "margin_px": 32},
        "data": {"region": "eu-west-3", "bucket": "b"}, "deadline_h": 24,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"]}})


def test_depth_first_peak_is_under_a_quarter_of_breadth_first() -> None:
    g = campaign_dag(_wide_campaign(), load_calibration(), ("c7g",))
    dfo = live_bytes_profile(g, depth_first_order(g))
    bfo = live_bytes_profile(g, breadth_first_order(g))
    assert dfo.peak_bytes * 4 <= bfo.peak_bytes
    # and a DSM tile runs right after its stereo tile: finish the branch first
    order = depth_first_order(g)
    assert [k.op for k in order[:5]] == ["stereo.plan", "stereo", "dsm", "stereo", "dsm"]
