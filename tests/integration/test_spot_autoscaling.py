"""The plan's fleet scales up and down on Ray's ``fake_multinode`` autoscaler provider.

``render_fake_multinode_config`` turns a plan's fleet into the local twin of
the AWS cluster config (same node types and custom resources); a head started
with it (``RAY_FAKE_CLUSTER=1``) launches simulated nodes when a driver asks
for :func:`resource_request`'s bundles and lets them go when the request is
withdrawn and they sit idle. The driver runs in a subprocess, as the runtime
would, so this test process never connects to Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from planner.catalog import load_catalog
from scheduler.fleet.cluster_config import fleet_from_plan, resource_request
from tests.conftest import fake_cluster_env, fake_multinode_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRIVER = r"""
import json, sys, time
import ray
from ray.autoscaler.sdk import request_resources

address, bundles, wanted = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ray.init(address=address, log_to_driver=False)
request_resources(bundles=bundles)
deadline = time.monotonic() + 150
while True:
    have = {k: ray.cluster_resources().get(k, 0) for k in wanted}
    if all(have[k] >= v for k, v in wanted.items()):
        break
    if time.monotonic() > deadline:
        sys.exit(f"fleet did not come up: have {have}, wanted {wanted}")
    time.sleep(0.5)
print("UP", json.dumps(have), len([n for n in ray.nodes() if n["Alive"]]), flush=True)
request_resources(bundles=[])
deadline = time.monotonic() + 150
while len([n for n in ray.nodes() if n["Alive"]]) > 1:
    if time.monotonic() > deadline:
        sys.exit("idle nodes were not released")
    time.sleep(0.5)
print("DOWN", json.dumps({k: ray.cluster_resources().get(k, 0) for k in wanted}), flush=True)
"""


def test_fleet_scales_up_on_request_and_down_when_idle() -> None:
    plan = {"format": "eochain-plan/1", "fleet": [
        {"instance_type": "c7g.xlarge", "region": "eu-west-3", "market": "spot", "instances": 2},
        {"instance_type": "m7g.xlarge", "region": "eu-west-3", "market": "on-demand",
         "instances": 1}]}
    fleet = fleet_from_plan(plan, "eu-west-3", load_catalog())
    bundles = resource_request(fleet)  # one per node: the fake nodes' 1 CPU fits
    wanted = {"c7g.xlarge:spot": 2, "m7g.xlarge:on-demand": 1}
    env = fake_cluster_env()
    with fake_multinode_head(fleet, "eoa", env) as (address, _):
        driver = subprocess.run([sys.executable, "-c", DRIVER, address, json.dumps(bundles),
                                 json.dumps(wanted)], env=env, capture_output=True, text=True,
                                timeout=400, check=False)
        assert driver.returncode == 0, driver.stdout + driver.stderr[-3000:]
        lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in
                 driver.stdout.splitlines() if line.startswith(("UP ", "DOWN "))}
        have, alive = lines["UP"].rsplit(" ", 1)
        assert json.loads(have) == {k: float(v) for k, v in wanted.items()}
        assert int(alive) == 1 + 3  # the head and one node per bundle
        assert json.loads(lines["DOWN"]) == {k: 0 for k in wanted}
