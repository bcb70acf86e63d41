"""Size guards: the work a campaign or a product asks for, estimated before it is done."""

from __future__ import annotations

import math

import pytest

from planner.campaign import parse_campaign
from planner.errors import SizeLimitError
from planner.workload import (
    MAX_PRODUCT_BYTES,
    bbox_workload,
    campaign_workload,
    check_workload,
    grid_workload,
)

pytestmark = pytest.mark.unit


def test_grid_workload_counts_partial_tiles() -> None:
    w = grid_workload("x", 1000, 2049, 1024)
    assert w.tasks == 1 * 3 + 2 and w.output_px == 1000 * 2049 and w.output_bytes == 4 * 1000 * 2049


def test_bbox_workload_at_the_equator() -> None:
    """0.1 x 0.1 degrees at the equator at 1 m: 11,058 rows (110,574 m/deg) by 11,132 cols."""
    w = bbox_workload("x", (10.0, -0.05, 10.1, 0.05), 1.0, 1024)
    assert w.output_px == 11_058 * 11_132
    assert w.tasks == math.ceil(11_058 / 1024) * math.ceil(11_132 / 1024) + 2  # plan, writer


def test_campaign_workload_sums_orthos_and_two_tasks_per_dsm_tile() -> None:
    scene = {"footprint": [10.0, -0.05, 10.1, 0.05], "rows": 100, "cols": 100}
    c = parse_campaign({
        "name": "t",
        "inputs": {"scenes": [{"id": "a", **scene}, {"id": "b", **scene}], "pairs": [["a", "b"]]},
        "products": {"ortho": {"gsd_m": 1.0}, "dsm": {"gsd_m": 2.0}},
        "tiling": {"tile_px": 1024},
    })
    one = bbox_workload("a", (10.0, -0.05, 10.1, 0.05), 1.0, 1024)
    dsm = bbox_workload("a+b", (10.0, -0.05, 10.1, 0.05), 2.0, 1024, tasks_per_tile=2)
    w = campaign_workload(c)
    assert w.tasks == 2 * one.tasks + dsm.tasks
    assert w.output_px == 2 * one.output_px + dsm.output_px


def test_campaign_workload_counts_every_task_of_the_dag() -> None:
    """Orthos, a pair's DSM and a fused DSM of three views: plan, tiles, fusion, writers."""
    from planner.calibration import load_calibration
    from planner.catalog import load_catalog
    from planner.estimate import campaign_dag

    size = {"rows": 100, "cols": 100}
    c = parse_campaign({
        "name": "t",
        "inputs": {"scenes": [{"id": "a", "footprint": [10.0, -0.05, 10.1, 0.05], **size},
                              {"id": "b", "footprint": [10.01, -0.05, 10.11, 0.05], **size},
                              {"id": "c", "footprint": [10.02, -0.04, 10.12, 0.06], **size}],
                   "pairs": [["a", "b"]]},
        "products": {"ortho": {"gsd_m": 1.0}, "dsm": {"gsd_m": 2.0, "views": [["a", "b", "c"]]}},
        "tiling": {"tile_px": 1024},
    })
    graph = campaign_dag(c, load_calibration(), load_catalog().families)
    assert {k[0] for k in graph} >= {"fusion", "ortho.plan", "dsm.write"}
    assert campaign_workload(c).tasks == graph.number_of_nodes()


def test_tiny_gsd_is_refused_with_the_estimate_unless_allowed() -> None:
    w = bbox_workload("ortho of img1", (31.1319, 29.9765, 31.1383, 29.9811), 0.001, 1024)
    with pytest.raises(SizeLimitError) as err:
        check_workload(w, max_bytes=MAX_PRODUCT_BYTES)
    message = str(err.value)
    assert message.startswith("ortho of img1 would make")
    assert "TiB of output (limit 100 GiB)" in message and "--allow-large" in message
    check_workload(w, max_bytes=MAX_PRODUCT_BYTES, allow_large=True)


def test_small_work_passes() -> None:
    check_workload(grid_workload("x", 10_000, 10_000, 512))


def test_too_many_tasks_states_the_planner_memory() -> None:
    w = grid_workload("campaign 'x'", 4_000_000, 4_000_000, 1024)  # 3,907 x 3,907 tiles + plan + writer
    with pytest.raises(SizeLimitError) as err:
        check_workload(w, max_bytes=float("inf"))
    assert "15,264,651 tasks (limit 2,000,000; about 22.7 GiB of planner memory)" in str(err.value)
    assert w.describe().startswith("15,264,651 tasks, 58.2 TiB of output, about 22.7 GiB")
