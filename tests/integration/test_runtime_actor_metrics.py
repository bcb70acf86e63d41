"""The actors export their own metrics through Ray: counts per operation match the run.

A local Ray instance whose node names its instance type (``c7g.large:spot``)
runs a small graph through the dispatcher: three ``source`` tasks, a
``double`` of each, a ``total`` of the three and one ``boom`` that raises
(an application failure). The node's Ray metrics agent, scraped over HTTP on
the port ``ray.nodes()`` reports, must then show, summed over the worker
processes, one ``ray_eochain_actor_tasks_total`` per task by operation and
outcome, as many duration observations, and a peak memory gauge for every
worker that ran something. Ray flushes its metrics every few seconds, so the
scrape is polled until it matches or a deadline passes. The eochain families
of the page must also pass ``promtool check metrics``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from scheduler.observe.metrics_hooks import observe_campaign, publish_campaign_name
from scheduler.ray_private import use_loopback
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions
from scheduler.runtime.state import Task, TaskGraph

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROM_SCRIPT = REPO / "tests" / "services" / "prometheus.sh"
ITYPE = "c7g.large"
CAMPAIGN = "actors-it"
DEADLINE_S = 60.0
#: The labels Ray adds to every sample of a custom metric, in CamelCase.
RAY_LABEL = re.compile(r'\b(Component|NodeAddress|SessionName|Version|WorkerId)(=")')


@pytest.fixture(scope="module")
def ray_local() -> Iterator[str]:
    """A local Ray instance; yields the URL of its node's Prometheus metrics page."""
    use_loopback()
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, resources={f"{ITYPE}:spot": 2.0},
             include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
             _system_config={"metrics_report_interval_ms": 1000})
    try:
        (node,) = [n for n in ray.nodes() if n["Alive"]]  # type: ignore[no-untyped-call]
        yield f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
    finally:
        ray.shutdown()


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text: str = resp.read().decode()
    return text


def _sums(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """eochain samples summed over Ray's own labels (worker, session, ...), by name and labels."""
    ours = {"campaign", "op", "instance_type", "outcome", "le"}
    sums: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("ray_eochain_"):
                key = (s.name, frozenset((k, v) for k, v in s.labels.items() if k in ours))
                sums[key] = sums.get(key, 0.0) + s.value
    return sums


def _eochain_families(text: str) -> str:
    """The ``ray_eochain_*`` families of a page, Ray's own label names in snake_case.

    Ray's metrics and the labels it adds to every sample (``WorkerId``,
    ``SessionName``, ...) are not ours to lint; a scrape config can map them
    with ``labelmap``. Our names and labels are checked as they are.
    """
    keep: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        name = fields[2] if line.startswith("#") and len(fields) > 2 else line
        if name.startswith("ray_eochain_"):
            keep.append(RAY_LABEL.sub(lambda m: _snake(m[1]) + m[2], line))
    return "\n".join(keep) + "\n"


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def test_actors_export_task_counts_durations_and_memory(
        ray_local: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def source(ctx: object, k: int = 0) -> int:
        return 1

    def double(ctx: object, x: int) -> int:
        return 2 * x

    def total(ctx: object, *xs: int) -> int:
        return sum(xs)

    def boom(ctx: object) -> int:
        raise ValueError("boom on purpose")

    tasks = [Task(f"s{k}", source) for k in range(3)]
    tasks += [Task(f"d{k}", double, (f"s{k}",)) for k in range(3)]
    tasks += [Task("t", total, ("d0", "d1", "d2")), Task("b", boom)]
    monkeypatch.setenv("EOCHAIN_PROMETHEUS_TARGETS", str(tmp_path))
    with observe_campaign(CAMPAIGN, on_ray=True):  # as `eochain run`: publishes the name
        report = Dispatcher(DispatchOptions()).run(TaskGraph.build(tasks))
    assert [f.key for f in report.failures] == ["b"], report.failures
    assert report.results["t"] == 6
    ok = Counter({"source": 3, "double": 3, "total": 1})
    failed = Counter({"boom": 1})

    def matches(sums: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> bool:
        for outcome, want in (("ok", ok), ("failed", failed)):
            for op, n in want.items():
                labels = frozenset({"campaign": CAMPAIGN, "op": op, "instance_type": ITYPE,
                                    "outcome": outcome}.items())
                if sums.get(("ray_eochain_actor_tasks_total", labels)) != n:
                    return False
        return True

    deadline = time.monotonic() + DEADLINE_S
    text = _scrape(ray_local)
    while not matches(_sums(text)) and time.monotonic() < deadline:
        time.sleep(0.5)
        text = _scrape(ray_local)
    sums = _sums(text)
    counted = {k: v for k, v in sums.items() if k[0] == "ray_eochain_actor_tasks_total"}
    assert matches(sums), counted
    assert sum(counted.values()) == len(tasks)  # nothing else, no other instance type

    for op, n in (ok + failed).items():
        series = frozenset({"campaign": CAMPAIGN, "op": op, "instance_type": ITYPE}.items())
        assert sums.get(("ray_eochain_actor_task_duration_seconds_count", series)) == n, op
        total_s = sums.get(("ray_eochain_actor_task_duration_seconds_sum", series))
        assert total_s is not None and 0 < total_s < 60, (op, total_s)
        inf = series | {("le", "+Inf")}
        assert sums.get(("ray_eochain_actor_task_duration_seconds_bucket", inf)) == n, op

    memory = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == "ray_eochain_actor_peak_memory_bytes"
              and s.labels.get("instance_type") == ITYPE and s.labels.get("campaign") == CAMPAIGN]
    # one gauge per worker process that ran a task; a Python worker holds tens of MiB
    assert memory and all(v >= 16 * 2**20 for v in memory), memory

    promtool = shutil.which("promtool")
    if promtool is not None:  # tests/services/prometheus.sh install brings it
        out = subprocess.run([promtool, "check", "metrics"], input=_eochain_families(text),
                             capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A private Prometheus (tests/services/prometheus.sh); yields its URL and targets folder."""
    state = tmp_path_factory.mktemp("prom")
    env = {**os.environ, "EOCHAIN_PROMETHEUS_STATE": str(state),
           "EOCHAIN_PROMETHEUS_TARGETS": str(tmp_path_factory.mktemp("eochain-targets"))}
    out = subprocess.run([str(PROM_SCRIPT), "start"], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    if out.returncode != 0:
        if "not root" in out.stderr:
            pytest.skip(f"no Prometheus and not root to install it: {out.stderr.strip()}")
        raise AssertionError(f"prometheus.sh start failed:\n{out.stderr}")
    try:
        yield out.stdout.strip().rpartition("EOCHAIN_PROMETHEUS_URL=")[2], state / "targets"
    finally:
        subprocess.run([str(PROM_SCRIPT), "stop"], env=env, check=False, timeout=60)


def _query(url: str, expr: str) -> list[float]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{url}/api/v1/query?{q}", timeout=10) as resp:
        doc = json.load(resp)
    return [float(r["value"][1]) for r in doc["data"]["result"]]


def test_actor_dashboard_panels_have_data(ray_local: str,
                                          prometheus: tuple[str, Path]) -> None:
    """Prometheus scrapes the Ray node; every actors.json query, campaign selected, has data.

    Ray reports the node's metrics every second here (``metrics_report_interval_ms``),
    so the long graph's series grow while Prometheus scrapes them.
    """
    url, targets = prometheus
    node = urllib.parse.urlsplit(ray_local).netloc
    (targets / "ray.json.tmp").write_text(json.dumps([{"targets": [node]}]))
    (targets / "ray.json.tmp").replace(targets / "ray.json")

    def slow(ctx: object) -> int:
        time.sleep(1.5)
        return 4

    # tasks spread over ~15 s of the same actors: every series is scraped before and after
    # it grows (the first sample of a series shows no increase to rate())
    publish_campaign_name(CAMPAIGN)
    report = Dispatcher(DispatchOptions()).run(
        TaskGraph.build([Task(f"slow{k}", slow) for k in range(20)]))
    assert not report.failures, report.failures
    deadline = time.monotonic() + DEADLINE_S

    doc = json.loads((REPO / "dashboards" / "actors.json").read_text())
    queries = [(p["title"], t["expr"].replace("$__rate_interval", "5m")
                .replace("$campaign", CAMPAIGN).replace("$instance_type", ".*"))
               for p in doc["panels"] for t in p["targets"]]

    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in queries
                if not any(math.isfinite(v) for v in _query(url, expr))]

    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        missing = empty()
    assert not missing, "\n".join(missing)
