"""CampaignMetrics: cost accrual, projection, task states and the ledger, on a fake clock.

The values are read back from the Prometheus registry (``get_sample_value``),
the way a scrape sees them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from planner.errors import PlanError
from planner.plan_document import PLAN_FORMAT, plan_document_from_dict
from scheduler.cli.progress import run_with_progress
from scheduler.observe.cost_report import OTHER, build_cost_report, format_cost_report
from scheduler.observe.errors import MetricsError
from scheduler.observe.metrics import CampaignMetrics, PlanTargets, node_type, op_name, project
from scheduler.observe.metrics_hooks import (
    InstrumentedTask,
    node_type_of,
    observe_campaign,
    prices_from_plan,
)
from scheduler.products.driver import Driver

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def metrics(clock: Clock) -> CampaignMetrics:
    return CampaignMetrics("c1", registry=CollectorRegistry(), clock=clock)


def _v(m: CampaignMetrics, name: str, **labels: str) -> float:
    value = m.registry.get_sample_value(name, {"campaign": m.campaign, **labels})
    assert value is not None, (name, labels)
    return value


def test_cost_accrues_per_node_second_and_stops_when_a_node_leaves(
        metrics: CampaignMetrics, clock: Clock) -> None:
    metrics.node_added("n1", "c7g.large", "spot", 3.6)        # 0.001 USD/s
    metrics.node_added("n2", "m7i.large", "on-demand", 7.2)   # 0.002 USD/s
    clock.now += 100
    metrics.node_removed("n1")
    metrics.interrupted("c7g.large")  # the dispatcher's call: it knows the cause
    clock.now += 50
    metrics.tick()
    acc = "eochain_cost_accrued_usd_total"
    assert _v(metrics, acc, instance_type="c7g.large", market="spot") == pytest.approx(0.1)
    assert _v(metrics, acc, instance_type="m7i.large", market="on-demand") == pytest.approx(0.3)
    assert metrics.accrued_usd == pytest.approx(0.4)
    assert _v(metrics, "eochain_fleet_burn_rate_usd_per_second") == pytest.approx(0.002)
    assert _v(metrics, "eochain_nodes", instance_type="c7g.large", market="spot") == 0
    assert _v(metrics, "eochain_spot_interruptions_total", instance_type="c7g.large") == 1
    metrics.node_removed("n1")  # seen twice (two observers): billed once
    assert _v(metrics, "eochain_nodes", instance_type="c7g.large", market="spot") == 0
    ledger = metrics.ledger()
    assert [(n.instance_type, n.node_s, n.nodes) for n in ledger.nodes] == [
        ("c7g.large", 100.0, 1), ("m7i.large", 150.0, 1)]
    assert ledger.cost_usd == pytest.approx(0.4)


def test_projection_extrapolates_throughput(metrics: CampaignMetrics, clock: Clock) -> None:
    metrics.set_plan(PlanTargets(planned_cost_usd=1.0, planned_makespan_s=400.0,
                                 deadline_s=1000.0))
    metrics.tasks_planned("ortho_tile", 10)
    metrics.node_added("n1", "c7g.large", "on-demand", 36.0)  # 0.01 USD/s
    # before anything is done the plan's makespan stands in for the ETA
    assert _v(metrics, "eochain_time_to_completion_seconds") == 400.0
    for _ in range(5):
        metrics.task_started("ortho_tile", "c7g.large")
        clock.now += 10
        metrics.task_finished("ortho_tile", "c7g.large", 10.0)
    # 5 done in 50 s: 5 more take 50 s; projected = 0.5 accrued + 0.01 x 50
    assert _v(metrics, "eochain_time_to_completion_seconds") == pytest.approx(50.0)
    assert _v(metrics, "eochain_cost_projected_usd") == pytest.approx(1.0)
    assert _v(metrics, "eochain_tiles_remaining") == 5
    assert _v(metrics, "eochain_tasks", op="ortho_tile", state="done") == 5
    assert _v(metrics, "eochain_deadline_timestamp_seconds") == metrics.start_s + 1000.0
    assert _v(metrics, "eochain_task_duration_seconds_count", op="ortho_tile",
              instance_type="c7g.large") == 5
    assert _v(metrics, "eochain_task_duration_seconds_bucket", op="ortho_tile",
              instance_type="c7g.large", le="10.0") == 5


def test_project_edge_cases() -> None:
    kw = {"accrued_usd": 2.0, "burn_usd_per_s": 0.1, "elapsed_s": 30.0}
    assert project(tasks_done=4, tasks_total=4, planned_makespan_s=None, **kw).eta_s == 0.0
    p = project(tasks_done=0, tasks_total=4, planned_makespan_s=100.0, **kw)
    assert p.eta_s == 70.0 and p.projected_cost_usd == pytest.approx(9.0)
    late = project(tasks_done=0, tasks_total=4, planned_makespan_s=10.0, **kw)
    assert late.eta_s == 0.0
    unknown = project(tasks_done=0, tasks_total=4, planned_makespan_s=None, **kw)
    assert math.isnan(unknown.eta_s) and math.isnan(unknown.projected_cost_usd)


def test_lost_runs_retries_and_recomputations(metrics: CampaignMetrics) -> None:
    metrics.tasks_planned("ortho_tile", 3)
    metrics.task_started("ortho_tile", "c7g.large")
    metrics.task_lost("ortho_tile", "c7g.large")
    assert _v(metrics, "eochain_tasks", op="ortho_tile", state="pending") == 3
    assert _v(metrics, "eochain_task_retries_total", op="ortho_tile") == 1
    assert _v(metrics, "eochain_task_runs_total", op="ortho_tile", instance_type="c7g.large",
              outcome="lost") == 1
    for _ in range(3):
        metrics.task_started("ortho_tile", "c7g.large")
        metrics.task_finished("ortho_tile", "c7g.large", 1.0)
    metrics.recomputed("ortho_tile", 2)
    assert _v(metrics, "eochain_tiles_remaining") == 2
    assert _v(metrics, "eochain_task_recomputations_total", op="ortho_tile") == 2
    metrics.task_started("ortho_tile", "c7g.large")
    metrics.task_finished("ortho_tile", "c7g.large", 1.0, ok=False)
    assert _v(metrics, "eochain_tasks", op="ortho_tile", state="failed") == 1
    # a failed task will not be done: it leaves the total
    assert _v(metrics, "eochain_tiles_planned") == 2


def test_bytes_read_across_zones_count_from_zero_and_are_billed(
        metrics: CampaignMetrics) -> None:
    assert _v(metrics, "eochain_cross_zone_input_bytes_total") == 0  # before the first move
    assert metrics.ledger().transfer_usd == 0
    nodes_usd = metrics.ledger().cost_usd
    metrics.cross_zone(3 * 2**20)
    metrics.cross_zone(2**20)
    assert _v(metrics, "eochain_cross_zone_input_bytes_total") == 4 * 2**20
    with pytest.raises(MetricsError, match=r"cross_zone\(-1\): expected nbytes >= 0"):
        metrics.cross_zone(-1)
    # the bytes at the inter-AZ rate, in the ledger, the accrued cost and the report's total
    ledger = metrics.ledger()
    assert ledger.transfer_usd == pytest.approx(4 * 2**20 / 1e9 * metrics.inter_az_usd_per_gb)
    assert ledger.transfer_usd > 0 and ledger.cost_usd == nodes_usd
    assert metrics.accrued_usd == pytest.approx(ledger.cost_usd + ledger.transfer_usd)
    report = build_cost_report(None, ledger)
    assert report.actual_cost_usd == pytest.approx(ledger.cost_usd + ledger.transfer_usd)
    transfer = [ln for ln in report.lines if ln.stage == "(transfer)"]
    assert [ln.actual_cost_usd for ln in transfer] == [pytest.approx(ledger.transfer_usd)]
    with pytest.raises(MetricsError, match="inter_az_usd_per_gb = -1"):
        CampaignMetrics("c", inter_az_usd_per_gb=-1)


def test_instrumented_task_reports_pixels_memory_products_and_failures(
        metrics: CampaignMetrics) -> None:
    import numpy as np

    class Writer:
        """Stands for a product writer: a geobox and a result with a uri."""

        geobox = type("G", (), {"transform": (0.5, 0.0, 0.0, 0.0, -0.5, 0.0),
                                "width": 200, "height": 100})()
        op = "ortho"

        def __call__(self, ctx: object) -> object:
            return type("Record", (), {"uri": "file:///x.tif"})()

    def tile(ctx: object) -> np.ndarray:
        return np.zeros((3, 16, 32), np.uint8)

    def broken(ctx: object) -> None:
        raise ValueError("corrupt")

    metrics.tasks_planned("tile", 1)
    metrics.tasks_planned("writer", 1)
    metrics.tasks_planned("broken", 1)
    InstrumentedTask(tile, metrics, "tile", "c7g.large")(None)
    InstrumentedTask(Writer(), metrics, "writer", "c7g.large")(None)
    with pytest.raises(ValueError, match="corrupt"):
        InstrumentedTask(broken, metrics, "broken", "c7g.large")(None)
    labels = {"op": "tile", "instance_type": "c7g.large"}
    assert _v(metrics, "eochain_pixels_processed_total", **labels) == 16 * 32
    assert _v(metrics, "eochain_task_peak_memory_bytes_count", **labels) == 1
    assert _v(metrics, "eochain_products_written_total", product="ortho") == 1
    assert _v(metrics, "eochain_product_area_square_meters_total", product="ortho") == 5000.0
    assert _v(metrics, "eochain_tasks", op="broken", state="failed") == 1
    ledger = metrics.ledger()
    # operations of no stage (the planner's stages name the runtime's: stereo_tile...)
    assert {(s.stage, s.tasks) for s in ledger.stages} == {(OTHER, 3)}
    assert build_cost_report(None, ledger).lines


def test_names_and_bad_values() -> None:
    class OrthoTileTask:
        def __call__(self) -> None: ...

    def dsm_merge() -> None: ...

    assert op_name(OrthoTileTask()) == "ortho_tile"
    assert op_name(dsm_merge) == "dsm_merge"
    assert node_type("c7g.large:spot") == ("c7g.large", "spot")
    assert node_type("m7i.2xlarge:on-demand") == ("m7i.2xlarge", "on-demand")
    with pytest.raises(MetricsError, match="'c7g.large:reserved'"):
        node_type("c7g.large:reserved")
    m = CampaignMetrics("c2", registry=CollectorRegistry())
    with pytest.raises(MetricsError, match="market 'preemptible'"):
        m.node_added("n", "c7g.large", "preemptible", 1.0)
    with pytest.raises(MetricsError, match="no such node"):
        m.node_removed("ghost")
    with pytest.raises(MetricsError, match="runtime_s = -1"):
        m.task_finished("op", "t", -1.0)
    with pytest.raises(PlanError, match="lacks 'deadline_s'"):
        PlanTargets.from_plan({"format": PLAN_FORMAT, "fleet": [], "total_cost_usd": 1.0,
                               "makespan_s": 2.0})
    with pytest.raises(MetricsError, match="campaign name is empty"):
        CampaignMetrics("")
    plan = PlanTargets.from_plan({"format": PLAN_FORMAT, "fleet": [], "total_cost_usd": 1.5,
                                  "makespan_s": 20.0, "deadline_s": 86400.0})
    assert plan == PlanTargets(1.5, 20.0, 86400.0)


def test_node_types_and_prices_for_the_fleet_watcher() -> None:
    assert node_type_of({"CPU": 2.0, "node:127.0.0.1": 1.0, "c7g.large:spot": 1.0}) == (
        "c7g.large", "spot")
    assert node_type_of(frozenset({"m7i.large:on-demand"})) == ("m7i.large", "on-demand")
    assert node_type_of({"CPU": 4.0, "node:127.0.0.1": 1.0}) == ("local", "on-demand")
    plan = {"format": PLAN_FORMAT, "fleet": [
        {"instance_type": "c7g.large", "market": "spot", "instances": 1, "price_usd_per_h": 0.03},
        {"instance_type": "c7g.large", "market": "on-demand", "instances": 1,
         "price_usd_per_h": 0.07}]}
    assert prices_from_plan(plan) == {("c7g.large", "spot"): 0.03,
                                      ("c7g.large", "on-demand"): 0.07}
    with pytest.raises(PlanError, match=r"fleet\[0\].*lacks 'price_usd_per_h'"):
        prices_from_plan({"format": PLAN_FORMAT, "fleet": [
            {"instance_type": "c7g.large", "market": "spot", "instances": 1}]})


def test_observe_campaign_serves_then_writes_the_report(tmp_path: Path) -> None:
    import json
    import urllib.error
    import urllib.request

    plan = {"format": PLAN_FORMAT, "total_cost_usd": 0.01, "makespan_s": 60.0,
            "deadline_s": 3600.0,
            "fleet": [{"instance_type": "local", "market": "on-demand", "instances": 1,
                       "price_usd_per_h": 0.5, "busy_instance_h": 0.01,
                       "tasks": {"ortho": 4}}]}
    lines: list[str] = []
    with observe_campaign("obs", plan, on_ray=False, report_dir=tmp_path,
                          echo=lines.append) as obs:
        m = obs.metrics
        m.node_added("n", "local", "on-demand", 0.5)
        m.tasks_planned("ortho_tile", 4)
        for _ in range(4):
            m.task_started("ortho_tile", "local")
            m.task_finished("ortho_tile", "local", 0.01)
        with urllib.request.urlopen(obs.exporter.url, timeout=5) as resp:
            text = resp.read().decode()
        assert 'eochain_cost_planned_usd{campaign="obs"} 0.01' in text
        url = obs.exporter.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=2)  # the exporter is closed with the block
    assert {p.name for p in tmp_path.iterdir()} == {"cost-report.txt", "cost-report.png",
                                                     "cost-ledger.json"}
    assert lines and lines[0].startswith("cost report: obs")
    assert "local" in lines[0] and "ortho" in lines[0]
    ledger = json.loads((tmp_path / "cost-ledger.json").read_text())
    assert ledger["stages"][0]["tasks"] == 4


#: A plan placing stereo, dsm and ortho on three node types (as `eochain plan` writes it).
THREE_TYPES_PLAN: dict[str, Any] = {
    "format": PLAN_FORMAT, "campaign": "c1", "total_cost_usd": 0.2, "makespan_s": 3000.0,
    "deadline_s": 7200.0, "startup_s": 60.0,
    "fleet": [
        {"instance_type": "m7g.2xlarge", "market": "spot", "instances": 1,
         "price_usd_per_h": 0.12, "busy_instance_h": 0.2, "tasks": {"stereo": 2}},
        {"instance_type": "c7g.xlarge", "market": "on-demand", "instances": 1,
         "price_usd_per_h": 0.145, "busy_instance_h": 0.5, "tasks": {"dsm": 2}},
        {"instance_type": "r7g.large", "market": "spot", "instances": 2,
         "price_usd_per_h": 0.04, "busy_instance_h": 0.4, "tasks": {"ortho": 4}},
    ]}


def _run_the_plan(metrics: CampaignMetrics, clock: Clock) -> float:
    """Feed ``metrics`` what a run of THREE_TYPES_PLAN reports; return the expected cost.

    The runtime's operations (a pair's stereo plan and tile, its DSM tile and writer, the
    scenes' ortho tiles and writers) land on the types the plan chose.
    """
    metrics.node_added("a", "m7g.2xlarge", "spot", 0.12)
    metrics.node_added("b", "c7g.xlarge", "on-demand", 0.145)
    clock.now += 60
    metrics.node_added("c", "r7g.large", "spot", 0.04)
    metrics.node_added("d", "r7g.large", "spot", 0.04)
    work = [("stereo_plan", "m7g.2xlarge", 30.0), ("stereo_tile", "m7g.2xlarge", 30.0),
            ("dsm_tile", "c7g.xlarge", 200.0), ("dsm_write", "c7g.xlarge", 5.0),
            ("ortho_tile", "r7g.large", 100.0), ("ortho_tile", "r7g.large", 100.0),
            ("ortho_tile", "r7g.large", 100.0), ("ortho_write", "r7g.large", 10.0)]
    for op, itype, runtime_s in work:
        metrics.task_started(op, itype)
        clock.now += runtime_s
        metrics.task_finished(op, itype, runtime_s)
    metrics.node_removed("a")            # t = 635 s
    clock.now += 900
    metrics.node_removed("c")            # t = 1535 s
    clock.now += 300                     # b and d run until the end, t = 1835 s
    metrics.finish()
    clock.now += 5000                    # after the run: nothing more is billed
    seconds = {"a": 635, "b": 1835, "c": 1535 - 60, "d": 1835 - 60}
    price = {"a": 0.12, "b": 0.145, "c": 0.04, "d": 0.04}
    return sum(seconds[n] * price[n] / 3600 for n in seconds)


def test_the_report_rows_are_the_plan_rows(metrics: CampaignMetrics, clock: Clock) -> None:
    """Runtime operations map onto the plan's stages: the (type, stage) rows are the same."""
    _run_the_plan(metrics, clock)
    plan = plan_document_from_dict(THREE_TYPES_PLAN)
    report = build_cost_report(plan, metrics.ledger())
    planned = {(r.instance_type, r.stage) for r in plan.stage_rows()}
    assert planned == {("m7g.2xlarge", "stereo"), ("c7g.xlarge", "dsm"), ("r7g.large", "ortho")}
    assert {(ln.instance_type, ln.stage) for ln in report.lines} == planned
    tasks = {(ln.instance_type, ln.stage): (ln.planned_tasks, ln.actual_tasks)
             for ln in report.lines}
    assert tasks == {("m7g.2xlarge", "stereo"): (2, 2), ("c7g.xlarge", "dsm"): (2, 2),
                     ("r7g.large", "ortho"): (4, 4)}


def test_one_cost_in_the_ledger_metrics_summary_progress_and_report(
        metrics: CampaignMetrics, clock: Clock, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Actual cost = node-seconds x price, shown identically everywhere."""
    expected = _run_the_plan(metrics, clock)
    ledger = metrics.ledger()
    assert ledger.cost_usd == pytest.approx(expected, rel=1e-12)
    assert metrics.accrued_usd == ledger.cost_usd
    scraped = sum(_v(metrics, "eochain_cost_accrued_usd_total", instance_type=t, market=m)
                  for t, m in (("m7g.2xlarge", "spot"), ("c7g.xlarge", "on-demand"),
                               ("r7g.large", "spot")))
    assert scraped == pytest.approx(expected, rel=1e-9)
    report = build_cost_report(THREE_TYPES_PLAN, ledger)
    assert report.actual_cost_usd == ledger.cost_usd
    assert sum(ln.actual_cost_usd for ln in report.lines) == pytest.approx(expected, rel=1e-9)
    assert f"${expected:,.4f}" in format_cost_report(report).splitlines()[-1]
    # the end-of-run summary of a run (an in-process flow) prints the same figure
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    flow = Driver(address="serial").get_flow([bad]).ortho(dem=tmp_path / "dem.tif").write(
        tmp_path / "out")
    run_with_progress(flow, metrics, quiet=True)
    assert f"cost so far: ${expected:.4f}" in capsys.readouterr().out
    assert metrics.ledger() == ledger  # the run had ended: the ledger stayed as it was
