"""A real Prometheus finds running campaigns on its own, and tells when a driver is gone.

The Prometheus of ``tests/services/prometheus.sh`` reads the file_sd folder
that eochain's runs keep (``$EOCHAIN_PROMETHEUS_TARGETS``, as
``dashboards/prometheus.yml`` does); the test never writes a target itself:

1. a run (``observe_campaign``, the runtime's own entry point) is scraped
   while it lives, its planned spot series exist at zero, and it leaves the
   target list when it ends;
2. a driver process killed with SIGKILL leaves its target behind: it goes
   down and ``EochainDriverGone`` becomes active for that campaign.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.observe.metrics_hooks import observe_campaign
from tests.conftest import PrometheusApi, poll_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tests" / "services" / "prometheus.sh"
PLAN = {"format": "eochain-plan/1", "total_cost_usd": 2.0, "makespan_s": 600.0,
        "deadline_s": 3600.0, "fleet": [
    {"instance_type": "c7g.large", "market": "spot", "instances": 2, "price_usd_per_h": 0.03},
    {"instance_type": "m7i.large", "market": "on-demand", "instances": 1,
     "price_usd_per_h": 0.1}]}


class Prom(PrometheusApi):
    def targets(self, campaign: str) -> list[dict[str, Any]]:
        active = self.get("/api/v1/targets", state="active")["activeTargets"]
        return [t for t in active if t["labels"].get("campaign") == campaign]


@pytest.fixture(scope="module")
def targets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("eochain-targets")


@pytest.fixture(scope="module")
def prom(targets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    if not os.access(SCRIPT, os.X_OK):
        pytest.skip(f"{SCRIPT} is not executable")
    env = {**os.environ, "EOCHAIN_PROMETHEUS_STATE": str(tmp_path_factory.mktemp("prom")),
           "EOCHAIN_PROMETHEUS_TARGETS": str(targets_dir)}
    out = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    if out.returncode != 0:
        if "not root" in out.stderr:
            pytest.skip(f"no Prometheus and not root to install it: {out.stderr.strip()}")
        raise AssertionError(f"prometheus.sh start failed:\n{out.stderr}")
    try:
        yield Prom(out.stdout.strip().rpartition("EOCHAIN_PROMETHEUS_URL=")[2])
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, timeout=60)


def test_a_run_is_found_scraped_and_forgotten(prom: Prom, targets_dir: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOCHAIN_PROMETHEUS_TARGETS", str(targets_dir))
    name = f"found_{uuid.uuid4().hex[:8]}"
    sel = f'campaign="{name}"'
    with observe_campaign(name, PLAN, on_ray=False):
        assert len(list(targets_dir.glob("eochain-*.json"))) == 1
        poll_until("Prometheus to scrape the run", lambda: [
            t for t in prom.targets(name) if t["health"] == "up"])
        # the planned spot type's series exist before any event, at zero
        interruptions = poll_until("the interruption series", lambda: prom.query(
            f"eochain_spot_interruptions_total{{{sel}}}"))
        assert [(r["metric"]["instance_type"], r["value"][1]) for r in interruptions] == [
            ("c7g.large", "0")]
        fallbacks = prom.query(f"eochain_market_fallbacks_total{{{sel}}}")
        assert [(r["metric"]["instance_type"], r["metric"]["from_market"], r["value"][1])
                for r in fallbacks] == [("c7g.large", "spot", "0")]
        assert prom.query(f"eochain_cost_planned_usd{{{sel}}} == 2")
    assert not list(targets_dir.glob("eochain-*.json"))
    poll_until("Prometheus to drop the ended run", lambda: not prom.targets(name))


def test_a_killed_driver_raises_driver_gone(prom: Prom, targets_dir: Path) -> None:
    name = f"killed_{uuid.uuid4().hex[:8]}"
    code = ("import time\nfrom scheduler.observe.metrics_hooks import observe_campaign\n"
            f"with observe_campaign({name!r}, on_ray=False):\n"
            "    print('listening', flush=True)\n    time.sleep(600)\n")
    env = {**os.environ, "EOCHAIN_PROMETHEUS_TARGETS": str(targets_dir)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        poll_until("Prometheus to scrape the driver", lambda: [
            t for t in prom.targets(name) if t["health"] == "up"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # no clean exit: the file stays, the target goes down, the alert becomes active
        assert [p for p in targets_dir.glob("eochain-*.json") if name in p.read_text()]
        alerts = poll_until("EochainDriverGone", lambda: prom.query(
            f'ALERTS{{alertname="EochainDriverGone", campaign="{name}"}}'))
        assert alerts[0]["metric"]["severity"] == "critical"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        for path in targets_dir.glob("eochain-*.json"):
            if name in path.read_text():
                path.unlink()
