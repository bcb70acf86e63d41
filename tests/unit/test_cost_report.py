"""Cost report: attribution of planned and actual cost per instance type and stage, table, PNG."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.errors import PlanError
from planner.stages import STAGES
from scheduler.observe.cost_report import (
    IDLE,
    OTHER,
    TRANSFER,
    NodeUsage,
    RunLedger,
    StageUsage,
    build_cost_report,
    format_cost_report,
    nice_ticks,
    plot_cost_report,
    stage_of,
    write_cost_report,
)
from scheduler.observe.errors import CostReportError

pytestmark = pytest.mark.unit

PLAN: dict[str, Any] = {
    "format": "eochain-plan/1",
    "campaign": "demo",
    "total_cost_usd": 0.6,
    "makespan_s": 4000.0,
    "startup_s": 180.0,
    "cost_breakdown_usd": {"compute": 0.5, "transfer": 0.05, "startup": 0.05},
    "fleet": [
        {"instance_type": "c7g.large", "market": "spot", "instances": 2,
         "price_usd_per_h": 0.04, "busy_instance_h": 2.0, "tasks": {"ortho": 30, "dsm": 10}},
        {"instance_type": "m7i.large", "market": "on-demand", "instances": 1,
         "price_usd_per_h": 0.1, "busy_instance_h": 1.0, "tasks": {"dsm": 20}},
    ],
}

LEDGER = RunLedger(
    campaign="demo",
    wall_s=5000.0,
    nodes=(
        NodeUsage("c7g.large", "spot", 0.04, 2, 18000.0),
        NodeUsage("c7g.large", "on-demand", 0.072, 1, 5000.0),
        NodeUsage("m7i.large", "on-demand", 0.1, 1, 5400.0),
        NodeUsage("r7g.large", "spot", 0.05, 1, 3600.0),
    ),
    stages=(
        StageUsage("ortho", "c7g.large", 30, 300.0, 0.0, 1200.0),
        StageUsage("dsm", "c7g.large", 11, 100.0, 1000.0, 4000.0),
        StageUsage("dsm", "m7i.large", 20, 200.0, 500.0, 5000.0),
    ),
)


def _line(report: Any, itype: str, stage: str) -> Any:
    return next(ln for ln in report.lines if (ln.instance_type, ln.stage) == (itype, stage))


def test_planned_cost_is_split_by_task_count_with_startup() -> None:
    report = build_cost_report(PLAN, LEDGER)
    entry_usd = 0.04 * (2.0 + 2 * 180 / 3600)
    assert _line(report, "c7g.large", "ortho").planned_cost_usd == pytest.approx(
        entry_usd * 30 / 40)
    assert _line(report, "c7g.large", "dsm").planned_cost_usd == pytest.approx(entry_usd / 4)
    assert _line(report, "m7i.large", "dsm").planned_cost_usd == pytest.approx(
        0.1 * (1.0 + 0.05))
    assert _line(report, "", TRANSFER).planned_cost_usd == pytest.approx(0.05)
    # makespan of an entry: its busy hours spread over its instances, plus a start-up
    assert _line(report, "c7g.large", "ortho").planned_makespan_s == pytest.approx(3600 + 180)
    assert _line(report, "m7i.large", "dsm").planned_makespan_s == pytest.approx(3600 + 180)
    assert (report.planned_cost_usd, report.planned_makespan_s) == (0.6, 4000.0)


def test_actual_cost_is_split_by_busy_time_and_idle_types_show() -> None:
    report = build_cost_report(PLAN, LEDGER)
    c7g = 0.2 + 0.1  # both markets of the type
    assert _line(report, "c7g.large", "ortho").actual_cost_usd == pytest.approx(c7g * 0.75)
    assert _line(report, "c7g.large", "dsm").actual_cost_usd == pytest.approx(c7g * 0.25)
    assert _line(report, "m7i.large", "dsm").actual_cost_usd == pytest.approx(0.15)
    idle = _line(report, "r7g.large", IDLE)
    assert idle.actual_cost_usd == pytest.approx(0.05) and math.isnan(idle.planned_cost_usd)
    assert _line(report, "c7g.large", "dsm").actual_tasks == 11
    assert _line(report, "c7g.large", "dsm").actual_makespan_s == 3000.0
    assert report.actual_cost_usd == pytest.approx(0.5)
    assert report.actual_makespan_s == 5000.0


@given(st.lists(st.tuples(st.sampled_from(["a.large", "b.xlarge", "c.2xlarge"]),
                          st.sampled_from(["ortho", "dsm", "stereo"]),
                          st.floats(0.0, 1e4)), max_size=8, unique_by=lambda t: t[:2]),
       st.lists(st.tuples(st.sampled_from(["a.large", "b.xlarge", "d.large"]),
                          st.floats(0.0, 100.0)), max_size=5))
def test_actual_attribution_conserves_the_ledger_cost(
        stages: list[tuple[str, str, float]], nodes: list[tuple[str, float]]) -> None:
    ledger = RunLedger("p", 10.0,
                       tuple(NodeUsage(t, "spot", 1.0, 1, 3600.0 * c) for t, c in nodes),
                       tuple(StageUsage(s, t, 1, b, 0.0, 1.0) for t, s, b in stages))
    report = build_cost_report(None, ledger)
    # a type's node cost is split over its stages (shares sum to 1) or shows as (idle);
    # a stage on a type without nodes costs 0: the lines add up to the ledger
    total = sum(ln.actual_cost_usd for ln in report.lines)
    assert total == pytest.approx(ledger.cost_usd, rel=1e-9, abs=1e-9)
    assert all(ln.actual_cost_usd >= 0 for ln in report.lines)
    assert math.isnan(report.planned_cost_usd)


def test_table_lists_every_line_and_the_totals() -> None:
    report = build_cost_report(PLAN, LEDGER)
    table = format_cost_report(report)
    lines = table.splitlines()
    assert lines[0] == "cost report: demo"
    assert "instance type" in lines[1] and "makespan run" in lines[1]
    body = [ln for ln in lines if ln.startswith(("c7g", "m7i", "r7g", "-  ", "total"))]
    assert len([ln for ln in body if not ln.startswith("total")]) == len(report.lines)
    total = next(ln for ln in lines if ln.startswith("total"))
    assert "$0.6000" in total and "$0.5000" in total and "-17%" in total
    assert "1.11 h" in total and "1.39 h" in total
    assert len({len(ln) for ln in lines[1:]}) <= 2  # fixed width (rules and rows)


def test_plot_and_files(tmp_path: Path) -> None:
    import matplotlib.image

    report = build_cost_report(PLAN, LEDGER)
    txt, png = write_cost_report(report, tmp_path / "out")
    assert txt.read_text().startswith("cost report: demo")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.shape[0] >= 400 and image.shape[1] >= 800
    # planned and actual bars are drawn: the image is not one flat colour
    assert image[..., :3].std() > 0.05
    alone = plot_cost_report(build_cost_report(None, LEDGER), tmp_path / "noplan.png")
    assert alone.stat().st_size > 1000


def test_ledger_round_trips_and_bad_input_names_the_keys() -> None:
    assert RunLedger.from_dict(LEDGER.to_dict()) == LEDGER
    moved = RunLedger(LEDGER.campaign, LEDGER.wall_s, LEDGER.nodes, LEDGER.stages, 0.25)
    assert RunLedger.from_dict(moved.to_dict()) == moved
    assert LEDGER.to_dict()["cost_usd"] == pytest.approx(LEDGER.cost_usd)
    with pytest.raises(CostReportError, match="wall_s"):
        RunLedger.from_dict({"campaign": "x", "nodes": [], "stages": []})
    bad = dict(PLAN, fleet=[{"instance_type": "c7g.large", "market": "spot"}])
    with pytest.raises(PlanError, match=r"fleet\[0\]: instances is missing"):
        build_cost_report(bad, LEDGER)
    with pytest.raises(PlanError, match="lacks 'total_cost_usd'"):
        build_cost_report({"format": "eochain-plan/1", "fleet": []}, LEDGER)


def test_node_cost_is_node_seconds_times_price() -> None:
    for n in LEDGER.nodes:
        assert n.cost_usd == n.node_s * n.price_usd_per_h / 3600
    assert LEDGER.cost_usd == pytest.approx(
        (2 * 9000 * 0.04 + 5000 * 0.072 + 5400 * 0.1 + 3600 * 0.05) / 3600)


def test_every_runtime_operation_has_a_plan_stage() -> None:
    """The runtime's tasks (plan, tile, write of each product) in the planner's stages."""
    assert stage_of("stereo_plan") == stage_of("stereo_tile") == "stereo"
    assert stage_of("dsm_tile") == stage_of("dsm_write") == "dsm"
    assert stage_of("fusion_tile") == "fusion"
    assert stage_of("ortho_plan") == stage_of("ortho_tile") == stage_of("ortho_write") == "ortho"
    assert stage_of("dsm") == "dsm"  # an operation named after its stage
    assert {stage_of(f"{s}_tile") for s in STAGES} == set(STAGES)
    assert stage_of("write") == stage_of("_nap") == OTHER  # no "write" stage


def test_nice_ticks_reach_the_top_in_round_steps() -> None:
    assert nice_ticks(0.6) == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert nice_ticks(1.39) == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert nice_ticks(730.0) == pytest.approx([0.0, 200.0, 400.0, 600.0, 800.0])
    assert nice_ticks(0.0) == [0.0, 1.0]  # nothing to show: still an axis
    assert nice_ticks(float("nan")) == [0.0, 1.0]
