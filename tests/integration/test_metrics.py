"""Metrics against a real Prometheus: a small ortho campaign scraped, every panel's query answered.

Prometheus is the Debian package's server, started by
``tests/services/prometheus.sh start`` (``make test`` does it and exports
``EOCHAIN_PROMETHEUS_URL``; without it this module starts a private instance
through the same script and stops it after). Exporters are registered through
file service discovery: the test writes ``[{"targets": ["127.0.0.1:PORT"]}]``
in the folder the running server's config names.

The campaign is real work: the ortho of two views of a synthetic scene
(64 px tiles, 54 tasks), run in-process by the runtime's serial executor with
every task function wrapped by :class:`scheduler.observe.metrics.InstrumentedTask`,
so task counts, durations, pixels, memory, products, area and progress come
from the run. The fleet around it is simulated by the test, since an
in-process run has no nodes: a spot ``c7g.large`` and an on-demand
``m7i.large`` (one scene each), the spot node interrupted after the first
scene with an on-demand fallback, one lost run retried and one recomputation.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.observe.metrics import LOOPBACK, CampaignMetrics, MetricsExporter, PlanTargets
from tests.conftest import PrometheusApi, poll_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "services" / "prometheus.sh"
DASHBOARDS = REPO / "dashboards"
RATE_INTERVAL = "5m"  # Grafana picks >= 4 scrape intervals; the whole run fits in 5m


@dataclass(frozen=True)
class Prometheus(PrometheusApi):
    targets_dir: Path


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    url = os.environ.get("EOCHAIN_PROMETHEUS_URL")
    env = dict(os.environ)
    started = False
    if not url:
        if shutil.which("prometheus") is None and os.geteuid() != 0:
            pytest.skip("no Prometheus: run `tests/services/prometheus.sh start` as root "
                        "(make test does) and export EOCHAIN_PROMETHEUS_URL")
        env["EOCHAIN_PROMETHEUS_STATE"] = str(tmp_path_factory.mktemp("prometheus"))
        out = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        if out.returncode != 0:
            raise AssertionError(f"prometheus.sh start failed:\n{out.stderr}")
        url = out.stdout.strip().rpartition("EOCHAIN_PROMETHEUS_URL=")[2]
        started = True
    try:
        config = yaml.safe_load(Prometheus(url, Path()).get("/api/v1/status/config")["yaml"])
        files = [f for job in config["scrape_configs"] for sd in job.get("file_sd_configs", [])
                 for f in sd["files"]]
        yield Prometheus(url.rstrip("/"), Path(files[0]).parent)
    finally:
        if started:
            subprocess.run([str(SCRIPT), "stop"], env=env, check=False, timeout=60)


@contextmanager
def _scraped(prom: Prometheus, exporter: MetricsExporter, name: str) -> Iterator[None]:
    """Have Prometheus scrape ``exporter`` (file service discovery) until the block ends."""
    target = f"{LOOPBACK}:{exporter.port}"
    path = prom.targets_dir / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [target], "labels": {"test": name}}]))
    tmp.replace(path)  # atomic: Prometheus never reads a half-written file

    def up() -> bool:
        active = prom.get("/api/v1/targets", state="active")["activeTargets"]
        return any(t["labels"].get("instance") == target and t["health"] == "up"
                   for t in active)

    try:
        poll_until(f"Prometheus to scrape {target}", up)
        yield
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Campaign:
    name: str
    metrics: CampaignMetrics
    exporter: MetricsExporter
    exposition: str
    end_s: float
    products: int


SPOT, ON_DEMAND = "c7g.large", "m7i.large"


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Any], str]:
    """Two views of one synthetic scene (256 x 256 px) and its DEM."""
    from ops.synthetic.scene import SceneSpec, generate_scene
    from scheduler.products.flow import SceneInput

    out = generate_scene(SceneSpec(width=256, height=256, seed=1),
                         tmp_path_factory.mktemp("scene"))
    inputs = [SceneInput(f"v{k}", str(out.out_dir / f"view_{k}.tif")) for k in (0, 1)]
    return inputs, str(out.out_dir / "dem.tif")


def _run_campaign(metrics: CampaignMetrics, scene: tuple[list[Any], str], out: Path,
                  declared: Callable[[], None]) -> int:
    """The real ortho workload (see the module docstring); returns the products written.

    ``declared()`` returns once Prometheus has scraped the task series at zero.
    """
    from scheduler.observe.metrics_hooks import instrument_graph
    from scheduler.products.driver import Driver
    from scheduler.runtime.dispatch import DispatchOptions, Progress, run_serial
    from scheduler.runtime.state import TaskGraph

    inputs, dem = scene
    flow = Driver(address="serial").get_flow(inputs).ortho(dem=dem, tile_px=64).write(out)
    products, failures = flow.plan()
    assert not failures, failures
    metrics.set_plan(PlanTargets(planned_cost_usd=1e-5, planned_makespan_s=2.0,
                                 deadline_s=3600.0))
    metrics.node_added("spot-0", SPOT, "spot", 0.0363)
    metrics.node_added("od-0", ON_DEMAND, "on-demand", 0.1008)
    graph = instrument_graph(TaskGraph.build([t for p in products for t in p.tasks]), metrics,
                             lambda task: SPOT if task.label == "v0" else ON_DEMAND)
    declared()
    interrupted = False

    def progress(p: Progress) -> None:
        nonlocal interrupted
        metrics.observe_progress(p)
        if p.products_done >= 1 and not interrupted:
            interrupted = True
            metrics.node_removed("spot-0")
            metrics.node_departed(SPOT, "interruption")  # the dispatcher's calls
            metrics.interrupted(SPOT)
            metrics.fallback(SPOT, "spot", "on-demand")
            metrics.node_added("od-1", SPOT, "on-demand", 0.0725)
            metrics.task_started("ortho_tile", SPOT)
            metrics.task_lost("ortho_tile", SPOT)
            metrics.recomputed("ortho_tile", 1)
            metrics.task_started("ortho_tile", ON_DEMAND)
            metrics.task_finished("ortho_tile", ON_DEMAND, 0.01)

    report = run_serial(graph, DispatchOptions(), progress)
    assert report.ok, report.failures
    return len(report.results)


@pytest.fixture(scope="module")
def campaign(prometheus: Prometheus, scene: tuple[list[Any], str],
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    name = f"it_{uuid.uuid4().hex[:8]}"
    metrics = CampaignMetrics(name)
    with MetricsExporter(metrics) as exporter, _scraped(prometheus, exporter, name):
        sel = f'{{campaign="{name}"}}'
        poll_until("a first scrape", lambda: prometheus.query(f"eochain_tiles_planned{sel}"))
        n = _run_campaign(metrics, scene, tmp_path_factory.mktemp("campaign"), lambda: poll_until(
            "the declared task series", lambda: prometheus.query(
                f"eochain_task_peak_memory_bytes_count{sel}")))
        poll_until("the final state in Prometheus", lambda: prometheus.query(
            f"sum(eochain_products_written_total{sel}) == {n} "
            f"and on () sum(eochain_tiles_remaining{sel}) == 0"))
        # the recording rules run every second: let them see the final state too
        poll_until("the recording rules", lambda: prometheus.query(
            f"campaign:eochain_cost_accrued_usd:sum{sel}"))
        with urllib.request.urlopen(exporter.url, timeout=10) as resp:
            text = resp.read().decode()
        yield Campaign(name, metrics, exporter, text, time.time(), n)


def test_exporter_binds_loopback(campaign: Campaign) -> None:
    host, port = campaign.exporter._server.server_address[:2]
    assert (host, port) == (LOOPBACK, campaign.exporter.port)
    assert campaign.exporter.url == f"http://127.0.0.1:{port}/metrics"


def test_exposition_passes_promtool_check_metrics(campaign: Campaign) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: run tests/services/prometheus.sh install")
    out = subprocess.run([promtool, "check", "metrics"], input=campaign.exposition,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), (
        out.stdout + out.stderr)
    assert "eochain_task_duration_seconds_bucket" in campaign.exposition


def test_scraped_values_match_the_run(prometheus: Prometheus, campaign: Campaign) -> None:
    sel = f'campaign="{campaign.name}"'

    def value(expr: str) -> float:
        result = prometheus.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    ledger = campaign.metrics.ledger()
    tiles = sum(s.tasks for s in ledger.stages)
    assert value(f"sum(eochain_tiles_planned{{{sel}}})") == tiles - 1  # one was a recompute
    assert value(f'sum(eochain_task_runs_total{{{sel}, outcome="ok"}})') == tiles
    assert value(f'sum(eochain_task_runs_total{{{sel}, outcome="lost"}})') == 1
    assert value(f"sum(eochain_spot_interruptions_total{{{sel}}})") == 1
    assert value(f"sum(eochain_products_written_total{{{sel}}})") == campaign.products == 2
    assert value(f'sum(eochain_nodes{{{sel}, market="spot"}})') == 0
    assert value(f'sum(eochain_nodes{{{sel}, market="on-demand"}})') == 2
    # accrued cost only grows: what Prometheus saw is at most what the ledger says now
    scraped = value(f"campaign:eochain_cost_accrued_usd:sum{{{sel}}}")
    assert 0 < scraped <= ledger.cost_usd


def test_rules_are_loaded_and_healthy(prometheus: Prometheus, campaign: Campaign) -> None:
    groups = prometheus.get("/api/v1/rules")["groups"]
    rules = {r["name"]: r for g in groups if g["name"] == "eochain"
             for r in g["rules"]}
    if not rules:
        pytest.skip("this Prometheus was not started by tests/services/prometheus.sh "
                    "(no eochain rules loaded)")
    alerts = {n for n, r in rules.items() if r["type"] == "alerting"}
    assert alerts == {"EochainCampaignStalled", "EochainCostOverPlan", "EochainDeadlineAtRisk",
                      "EochainInterruptionStorm", "EochainSpendOverPlan", "EochainDriverGone"}
    assert all(r["health"] == "ok" for r in rules.values()), {
        n: r.get("lastError") for n, r in rules.items() if r["health"] != "ok"}


def _panel_queries(path: Path) -> list[tuple[str, str]]:
    doc = json.loads(path.read_text())
    return [(f"{path.stem}/{panel['title']}/{target['refId']}", target["expr"])
            for panel in doc["panels"] for target in panel["targets"]]


def _substitute(expr: str, campaign: str) -> str:
    out = expr.replace("$__rate_interval", RATE_INTERVAL)
    out = out.replace("$campaign", campaign)  # a plain name: no regex escaping needed
    return out.replace("$instance_type", ".*")


# actors.json reads what Ray's nodes export (ray_eochain_actor_*), not the driver's
# exporter: test_runtime_actor_metrics.py runs its queries against a real Ray node.
@pytest.mark.parametrize("dashboard", sorted(p.name for p in DASHBOARDS.glob("*.json")
                                             if p.name != "actors.json"))
def test_every_panel_query_returns_data(prometheus: Prometheus, campaign: Campaign,
                                        dashboard: str) -> None:
    """Each target of each panel, with the campaign selected, returns a finite value."""
    queries = _panel_queries(DASHBOARDS / dashboard)
    assert queries
    # evaluated now (the 5m rate windows still cover the run): recording rules that
    # lagged behind the last scrape on a loaded machine catch up between retries
    assert time.time() - campaign.end_s < 240, "the campaign ran too long ago for 5m windows"

    def missing() -> list[str]:
        empty = []
        for where, expr in queries:
            data = prometheus.get("/api/v1/query", query=_substitute(expr, campaign.name))
            values = [float(r["value"][1]) for r in data["result"]]
            if not any(math.isfinite(v) for v in values):
                empty.append(f"{where}: {expr} -> {values}")
        return empty

    empty = missing()
    deadline = time.monotonic() + 20
    while empty and time.monotonic() < deadline:
        time.sleep(0.5)
        empty = missing()
    assert not empty, "\n".join(empty)


@pytest.mark.parametrize("variable", ["campaign", "instance_type"])
def test_dashboard_variables_list_the_campaign(prometheus: Prometheus, campaign: Campaign,
                                               variable: str) -> None:
    """The variables' ``label_values(metric, label)`` queries, as Grafana runs them."""
    doc = json.loads((DASHBOARDS / "progress.json").read_text())
    var = next(v for v in doc["templating"]["list"] if v["name"] == variable)
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
    assert m is not None, var["query"]
    match = m.group(1).replace("$campaign", campaign.name)
    values = set(prometheus.get(f"/api/v1/label/{m.group(2)}/values", **{"match[]": match}))
    expected = {campaign.name} if variable == "campaign" else {SPOT, ON_DEMAND}
    assert expected <= values if variable == "campaign" else values == expected


@pytest.mark.slow
def test_ray_campaign_reports_its_fleet_progress_and_cost(
        prometheus: Prometheus, scene: tuple[list[Any], str], tmp_path: Path) -> None:
    """A real campaign on a 2-node local Ray cluster; the spot node is killed mid-run.

    The fleet watcher (nodes), the dispatcher (task events, and the
    interruption: it tells a busy spot node lost from a scale-down) and the
    progress callback are the sources here: nodes, the interruption, cost
    and tiles remaining must come out right, and reach Prometheus.
    """
    from scheduler.observe.metrics_hooks import RayFleetWatcher
    from scheduler.products.driver import Driver
    from scheduler.runtime.dispatch import DispatchOptions, Progress
    from scheduler.testing.cluster import LocalCluster, NodeSpec

    inputs, dem = scene
    name = f"ray_{uuid.uuid4().hex[:8]}"
    metrics = CampaignMetrics(name)
    metrics.set_plan(PlanTargets(planned_cost_usd=1e-5, planned_makespan_s=5.0,
                                 deadline_s=3600.0))
    prices = {(SPOT, "spot"): 0.0363, (SPOT, "on-demand"): 0.0725,
              (ON_DEMAND, "on-demand"): 0.1008}
    nodes = [NodeSpec(1, resources={f"{SPOT}:spot": 1.0}),
             NodeSpec(1, resources={f"{ON_DEMAND}:on-demand": 1.0})]
    killed: list[int] = []
    sel = {"campaign": name}

    def sample(metric: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(metric, {**sel, **labels})

    with (LocalCluster(nodes) as cluster, MetricsExporter(metrics) as exporter,
          _scraped(prometheus, exporter, name),
          RayFleetWatcher(metrics, prices, interval_s=0.25) as watcher):
        assert sorted(watcher.alive.values()) == [(SPOT, "spot"), (ON_DEMAND, "on-demand")]
        spot_node = cluster.nodes[0]

        def spot_given_tiles() -> bool:
            """Whether the spot node was given a tile (its series exist from the call on)."""
            return any(sm.name == "eochain_task_runs_total"
                       and sm.labels.get("instance_type") == SPOT
                       and sm.labels.get("op") == "ortho_tile"
                       for m in metrics.registry.collect() for sm in m.samples)

        def progress(p: Progress) -> None:
            metrics.observe_progress(p)
            # once the spot node has work: a tile running there, or finished there and held
            # for its product's write. A spot node lost while busy is an interruption, an
            # idle one a failure. (Not "once it finished a tile": under load its actor may
            # still be starting when the other node has done every tile.)
            if not killed and p.tasks_done >= 4 and spot_given_tiles() \
                    and p.tasks_done < p.tasks_total - 2:
                cluster.remove_node(spot_node)  # a spot interruption: no warning
                killed.append(p.tasks_done)
                # the dispatcher gives a departure its cause once Ray declares the node dead;
                # hold the run until then, so the loss is not left to after its end
                poll_until("Ray to declare the spot node dead",
                           lambda: (SPOT, "spot") not in watcher.alive.values())
                # the fallback an autoscaler would make: the same type on demand
                metrics.fallback(SPOT, "spot", "on-demand")
                cluster.add_node(NodeSpec(1, resources={f"{SPOT}:on-demand": 1.0}))

        # room for retries while Ray has not yet declared the killed node dead
        options = DispatchOptions(max_attempts=20)
        report = (Driver(address=cluster.address, options=options, metrics=metrics)
                  .get_flow(inputs)
                  .ortho(dem=dem, tile_px=64).write(tmp_path / "out").run(progress=progress))
        assert killed, "the campaign ended before the interruption"
        assert report.ok, report.failures
        assert len(report.written) == 2
        poll_until("the watcher to report the lost spot node", lambda: sample(
            "eochain_spot_interruptions_total", instance_type=SPOT) == 1)
        q = f'{{campaign="{name}"}}'
        poll_until("Prometheus to see the interruption and the end", lambda: prometheus.query(
            f"sum(eochain_spot_interruptions_total{q}) == 1 "
            f"and on () sum(eochain_tiles_remaining{q}) == 0"))
    assert sample("eochain_nodes", instance_type=SPOT, market="spot") == 0
    assert sample("eochain_nodes", instance_type=SPOT, market="on-demand") == 1
    assert sample("eochain_nodes", instance_type=ON_DEMAND, market="on-demand") == 1
    assert sample("eochain_market_fallbacks_total", instance_type=SPOT, from_market="spot",
                  to_market="on-demand") == 1
    assert sample("eochain_tiles_remaining") == 0
    ledger = metrics.ledger()
    costs = {(n.instance_type, n.market): n.cost_usd for n in ledger.nodes}
    assert set(costs) == {(SPOT, "spot"), (SPOT, "on-demand"), (ON_DEMAND, "on-demand")}
    assert all(c > 0 for c in costs.values())
    # the spot node stopped billing when it died; the first on-demand one ran throughout
    node_s = {(n.instance_type, n.market): n.node_s for n in ledger.nodes}
    assert node_s[SPOT, "spot"] < node_s[ON_DEMAND, "on-demand"]
