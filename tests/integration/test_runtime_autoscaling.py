"""A run with a plan scales the ``fake_multinode`` cluster up for the plan's type, then down.

The head (``RAY_FAKE_CLUSTER=1``, no CPU of its own) is started with
:func:`~scheduler.fleet.cluster_config.render_fake_multinode_config` for a plan of
one spot ``c7g.xlarge``; a driver subprocess runs a tiny ortho campaign
through ``Driver(plan=...)``. The tasks can only run
on a node the autoscaler launches for the runtime's request, so the run
finishing shows the node came up; after the run the request is withdrawn and
the idle node must leave (polled with a deadline). The run reports to
campaign metrics as ``eochain run`` does (the dispatcher, and a
:class:`~scheduler.observe.metrics_hooks.RayFleetWatcher` kept until the node has
left): the run's own scale-down of a spot node is not an interruption.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from planner.catalog import load_catalog
from scheduler.fleet.cluster_config import fleet_from_plan
from tests.conftest import fake_cluster_env, fake_multinode_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

PLAN = {"format": "eochain-plan/1", "budget_usd": 10.0, "fleet": [
    {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 1,
     "tasks": {"ortho": 10}}]}

DRIVER = r"""
import json, sys, time
from pathlib import Path
import ray
from ops.synthetic.scene import SceneSpec, generate_scene
from scheduler.observe.metrics import CampaignMetrics
from scheduler.observe.metrics_hooks import RayFleetWatcher
from scheduler.runtime.dispatch import DispatchOptions
from scheduler.products.flow import SceneInput
from scheduler.products.driver import Driver

address, plan, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
scene = generate_scene(SceneSpec(width=128, height=128, seed=3), out / "scene")
pools = set()
said = []

def alive_pools():
    return sorted(k for n in ray.nodes() if n["Alive"] for k in n["Resources"]
                  if k.endswith((":spot", ":on-demand")))

def watch(p):
    pools.update(alive_pools())

metrics = CampaignMetrics("autoscaling")
driver = Driver(address=address, plan=plan, say=said.append,
                options=DispatchOptions(no_worker_timeout_s=90.0), metrics=metrics)
driver.connect()
watcher = RayFleetWatcher(metrics, {}, interval_s=0.5).start()
report = (driver.get_flow([SceneInput("a", str(scene.out_dir / "view_0.tif"))])
          .ortho(dem=str(scene.out_dir / "dem.tif"), tile_px=64)
          .write(out / "products").run(watch))
print("RUN", json.dumps({"ok": report.ok, "written": len(report.written),
                         "pools": sorted(pools), "said": said}), flush=True)
deadline = time.monotonic() + 60
while alive_pools():
    if time.monotonic() > deadline:
        sys.exit(f"idle nodes were not released: {alive_pools()}")
    time.sleep(0.5)
print("DOWN", len([n for n in ray.nodes() if n["Alive"]]), flush=True)
watcher.poll()
watcher.stop()
spot = {"campaign": "autoscaling", "instance_type": "c7g.xlarge"}
print("METRICS", json.dumps({
    "spot_nodes": metrics.registry.get_sample_value("eochain_nodes", {**spot, "market": "spot"}),
    "interruptions": metrics.registry.get_sample_value("eochain_spot_interruptions_total",
                                                       spot)}), flush=True)
"""


def test_a_run_with_a_plan_brings_up_its_type_and_lets_it_go() -> None:
    fleet = fleet_from_plan(PLAN, "eu-west-3", load_catalog())
    env = fake_cluster_env()
    with fake_multinode_head(fleet, "eor", env) as (address, temp):
        driver = subprocess.run([sys.executable, "-c", DRIVER, address, json.dumps(PLAN),
                                 str(temp / "run")], env=env, cwd=ROOT, capture_output=True,
                                text=True, timeout=240, check=False)
        assert driver.returncode == 0, driver.stdout + driver.stderr[-3000:]
        lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in
                 driver.stdout.splitlines() if line.startswith(("RUN ", "DOWN ", "METRICS "))}
        run = json.loads(lines["RUN"])
        assert run["ok"] and run["written"] == 1, run
        assert run["pools"] == ["c7g.xlarge:spot"], run  # the plan's type, and only it
        assert run["said"] == [], run  # no interruption, no fallback
        assert lines["DOWN"] == "1"  # only the head is left
        # the watcher saw the spot node come and go; its leaving, idle after the run
        # withdrew its request, is the run's own scale-down, not an interruption
        assert json.loads(lines["METRICS"]) == {"spot_nodes": 0.0, "interruptions": 0.0}
