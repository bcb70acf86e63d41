"""A real campaign on Ray with metrics on: the exporter's counters match what the run did.

A local Ray instance whose node names its instance type (``c7g.large:spot``)
runs the ortho of two synthetic views through the dispatcher with a
:class:`~scheduler.observe.metrics.CampaignMetrics`; the exporter's ``/metrics``,
scraped over HTTP at the end, must count every task of every operation as
done, run once, timed and measured on ``c7g.large``, and no tile remaining.
During the run the tiles-remaining gauge must equal the dispatcher's own
count of tasks not done at every progress step. A second, tiny graph whose
middle task raises checks the failed and skipped tasks.
"""

from __future__ import annotations

import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.observe.metrics import CampaignMetrics, MetricsExporter, op_name
from scheduler.products.driver import Driver
from scheduler.products.flow import SceneInput
from scheduler.ray_private import use_loopback
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress
from scheduler.runtime.state import Task, TaskGraph

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITYPE = "c7g.large"


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    use_loopback()
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, resources={f"{ITYPE}:spot": 2.0},
             include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


def _scrape(exporter: MetricsExporter) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exporter's ``/metrics`` page, by name and labels."""
    with urllib.request.urlopen(exporter.url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _get(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
         **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_ray_campaign_exports_task_metrics(ray_local: None, tmp_path: Path) -> None:
    from ops.synthetic.scene import SceneSpec, generate_scene

    scene = generate_scene(SceneSpec(width=192, height=192, seed=4), tmp_path / "scene")
    inputs = [SceneInput(f"v{k}", str(scene.out_dir / f"view_{k}.tif")) for k in (0, 1)]
    metrics = CampaignMetrics("rt-metrics")
    driver = Driver(options=DispatchOptions(), metrics=metrics)
    flow = driver.get_flow(inputs).ortho(dem=str(scene.out_dir / "dem.tif"),
                                         tile_px=64).write(tmp_path / "out")
    products, failures = flow.plan()
    assert not failures, failures
    expected = Counter(op_name(t.fn) for p in products for t in p.tasks)
    assert len(expected) >= 3, expected  # plan, tiles and write have their own operations

    remaining: list[tuple[float | None, int]] = []

    def progress(p: Progress) -> None:
        gauge = metrics.registry.get_sample_value("eochain_tiles_remaining",
                                                  {"campaign": "rt-metrics"})
        remaining.append((gauge, p.tasks_total - p.tasks_done))

    with MetricsExporter(metrics) as exporter:
        report = flow.run(progress=progress)
        assert report.ok, report.failures
        samples = _scrape(exporter)

    assert remaining and all(g == want for g, want in remaining), remaining[:10]
    assert remaining[-1][1] == 0
    camp = {"campaign": "rt-metrics"}
    assert _get(samples, "eochain_tiles_remaining", **camp) == 0
    assert _get(samples, "eochain_tiles_planned", **camp) == sum(expected.values())
    for op, n in expected.items():
        task = {**camp, "op": op}
        assert _get(samples, "eochain_tasks", **task, state="done") == n, op
        for state in ("pending", "running", "failed"):
            assert _get(samples, "eochain_tasks", **task, state=state) == 0, (op, state)
        series = {**task, "instance_type": ITYPE}
        assert _get(samples, "eochain_task_runs_total", **series, outcome="ok") == n, op
        assert _get(samples, "eochain_task_duration_seconds_count", **series) == n, op
        duration_sum = _get(samples, "eochain_task_duration_seconds_sum", **series)
        assert duration_sum is not None and duration_sum > 0, op
        # measured in the actor process: a Python worker holds tens of MiB at least
        assert _get(samples, "eochain_task_peak_memory_bytes_count", **series) == n, op
        memory_sum = _get(samples, "eochain_task_peak_memory_bytes_sum", **series)
        assert memory_sum is not None and memory_sum >= n * 16 * 2**20, op
        assert _get(samples, "eochain_task_retries_total", **task) == 0, op
    tile_op = next(op for op in expected if op.endswith("_tile"))
    pixels = _get(samples, "eochain_pixels_processed_total", **camp, op=tile_op,
                  instance_type=ITYPE)
    assert pixels is not None and pixels > 0, pixels
    assert _get(samples, "eochain_products_written_total", **camp, product="ortho") == 2
    area = _get(samples, "eochain_product_area_square_meters_total", **camp, product="ortho")
    assert area is not None and area > 0


def test_failed_task_and_its_descendants_leave_nothing_remaining(ray_local: None) -> None:
    def one(ctx: object) -> int:
        return 1

    def boom(ctx: object, x: int) -> int:
        raise ValueError(f"bad input {x}")

    def after(ctx: object, x: int) -> int:
        return x + 1

    graph = TaskGraph.build([Task("a", one), Task("b", boom, ("a",)),
                             Task("c", after, ("b",)), Task("d", after, ("a",))])
    metrics = CampaignMetrics("rt-fail")
    report = Dispatcher(DispatchOptions(), metrics).run(graph)
    assert [f.key for f in report.failures] == ["b"] and report.failures[0].skipped == ("c",)
    value = metrics.registry.get_sample_value
    camp = {"campaign": "rt-fail"}
    assert value("eochain_tiles_remaining", camp) == 0
    assert value("eochain_tasks", {**camp, "op": "boom", "state": "failed"}) == 1
    assert value("eochain_tasks", {**camp, "op": "after", "state": "failed"}) == 1  # skipped
    assert value("eochain_tasks", {**camp, "op": "after", "state": "done"}) == 1
    assert value("eochain_task_runs_total", {**camp, "op": "boom", "instance_type": ITYPE,
                                             "outcome": "failed"}) == 1
