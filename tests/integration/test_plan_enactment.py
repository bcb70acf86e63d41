"""The run enacts the plan: each stage on its planned node type, one measured cost, scale-downs.

A campaign of one synthetic stereo pair (a DSM, and an ortho of each view, on
tiny tiles) is planned with ``eochain plan --dem`` (the runtime's exact
tasks). The planner puts every stage on one type for a campaign this small,
so the plan's fleet is rewritten through :mod:`planner.plan_document` to put
stereo, dsm and ortho on three types (one node each, the plan's task counts
per stage, the catalog's prices), as a plan for a larger campaign would. A
``fake_multinode`` Ray head is started with that fleet's twin
(:func:`~scheduler.fleet.cluster_config.render_fake_multinode_config`: 1-CPU nodes
of the three types, none up at first), and ``eochain run --plan`` runs the
campaign on it. Then:

* every task ran on a node of its stage's planned type: the ledger's
  (stage, instance type) rows are the plan's placement, and nothing else;
* the cost report's (type, stage) rows equal the plan's rows, task counts
  included;
* the actual cost is the ledger's node-seconds x the plan's prices, and the
  summary and the report print that figure;
* nodes whose stage was done left during the run as the run's own
  scale-down (its request shrank as stereo and dsm finished), and none was
  counted as an interruption.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from planner.catalog import load_catalog
from planner.plan_document import FleetEntry, read_plan, write_plan
from scheduler.fleet.cluster_config import fleet_from_plan
from scheduler.observe.cost_report import RunLedger, build_cost_report
from tests.conftest import fake_cluster_env, fake_multinode_head

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REGION = "eu-west-3"
#: stage -> (instance type, market) the rewritten plan places it on
PLACED = {"stereo": ("m7g.xlarge", "spot"), "dsm": ("c7g.xlarge", "on-demand"),
          "ortho": ("r7g.xlarge", "spot")}


def _campaign(root: Path) -> tuple[Path, Path]:
    """A stereo pair of 160 px, its DSM and both views' orthos on 64-px tiles: (file, DEM).

    The DEM is the scene's true heights on a coarse grid around it (as the demo's). The
    orthos, at a fine GSD, outlast stereo and dsm by 10 s or more (about 5,000 small tiles
    on one 1-CPU node), so their nodes leave while the run goes on.
    """
    from ops.synthetic.scene import SceneSpec, generate_scene
    from scheduler.cli.demo_campaign import write_coarse_dem

    size = 160
    scene = generate_scene(SceneSpec(width=size, height=size, seed=3), root / "scene")
    lon0, lat0, lon1, lat1 = scene.footprint_lonlat
    entry = {"footprint": [lon0, lat0, lon1, lat1], "rows": size, "cols": size}
    campaign = {
        "name": "enact",
        "inputs": {"scenes": [{"id": "left", "uri": "scene/view_0.tif", **entry},
                              {"id": "right", "uri": "scene/view_1.tif", **entry}],
                   "pairs": [["left", "right"]]},
        "products": {"ortho": {"gsd_m": 0.03125}, "dsm": {"gsd_m": 1.0}},
        "tiling": {"tile_px": 64, "margin_px": 0},
        "data": {"region": REGION, "bucket": "unused"},
        "deadline_h": 1,
        "compute": {"regions": [REGION], "families": ["c7g", "m7g", "r7g"],
                    "markets": ["spot", "on-demand"]},
    }
    path = root / "campaign.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(campaign))))  # no YAML anchors
    return path, write_coarse_dem(scene.out_dir, root / "coarse_dem.tif")


def _python(*args: str, env: dict[str, str], timeout_s: float
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)


def _three_type_plan(planned: Path, out: Path) -> Path:
    """The plan at ``planned`` with its fleet rewritten to put each stage on its PLACED type."""
    doc = read_plan(planned)
    tasks: dict[str, int] = {}
    busy_h: dict[str, float] = {}
    for e in doc.fleet:
        n = sum(e.tasks.values())
        for stage, k in e.tasks.items():
            tasks[stage] = tasks.get(stage, 0) + k
            busy_h[stage] = busy_h.get(stage, 0.0) + (e.busy_instance_h * k / n if n else 0.0)
    assert set(tasks) == set(PLACED), tasks  # the campaign's stages, as planned
    catalog = load_catalog()
    prices = {(o.instance.name, o.market): o.price_usd_per_h
              for o in catalog.offers([REGION], catalog.families)}
    fleet = []
    for stage, (itype, market) in PLACED.items():
        info = catalog.instance_types[itype]
        fleet.append(FleetEntry(itype, market, 1, REGION, prices[(itype, market)], info.vcpus,
                                info.mem_gib, None, {stage: tasks[stage]}, busy_h[stage]))
    return write_plan(out, replace(doc, fleet=tuple(fleet)))


def test_the_run_enacts_the_plan_and_measures_its_cost(tmp_path: Path) -> None:
    campaign, dem = _campaign(tmp_path)
    env = fake_cluster_env()
    planned = _python("-m", "scheduler.cli.main", "plan", str(campaign), "--dem", str(dem),
                      "--runs", "0", "--out", str(tmp_path / "planned"), env=env, timeout_s=120)
    assert planned.returncode == 0, planned.stdout + planned.stderr[-3000:]
    plan_path = _three_type_plan(tmp_path / "planned" / "plan.json", tmp_path / "plan.json")
    plan = read_plan(plan_path)

    fleet = fleet_from_plan(plan, REGION, load_catalog())
    out = tmp_path / "out"
    # idle nodes leave after 2 s: the stereo and dsm nodes go while the orthos still run
    with fake_multinode_head(fleet, "eop", env, idle_timeout_minutes=2 / 60) as (address, _):
        run = _python("-c", "from scheduler.cli.run import run; run()", str(campaign),
                      "--plan", str(plan_path), "--dem", str(dem), "--address", address,
                      "--out", str(out), "--no-replan", "-q", env=env, timeout_s=300)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]

    ledger = RunLedger.from_dict(json.loads((out / "cost-ledger.json").read_text()))
    # every task ran on a node of its stage's planned type
    ran = {(s.stage, s.instance_type) for s in ledger.stages}
    assert ran == {(stage, itype) for stage, (itype, _) in PLACED.items()}, ledger.stages

    report = build_cost_report(plan, ledger)
    rows = {(ln.instance_type, ln.stage): (ln.planned_tasks, ln.actual_tasks)
            for ln in report.lines if ln.instance_type}
    assert rows == {(r.instance_type, r.stage): (r.tasks, r.tasks) for r in plan.stage_rows()}

    # one cost: node-seconds x the plan's price, in the ledger, the summary and the report
    prices = plan.prices()
    assert {(n.instance_type, n.market) for n in ledger.nodes} == set(PLACED.values())
    for n in ledger.nodes:
        assert n.node_s > 0 and n.price_usd_per_h == prices[(n.instance_type, n.market)]
    cost = sum(n.node_s * n.price_usd_per_h / 3600 for n in ledger.nodes)
    assert report.actual_cost_usd == pytest.approx(cost, rel=1e-12)
    assert f"cost so far: ${cost:.4f}" in run.stdout
    total = next(line for line in run.stdout.splitlines() if line.startswith("total"))
    assert f"${cost:,.4f}" in total

    # the stereo and dsm nodes left once their stages were done: the run's own scale-down
    left = next(line for line in run.stdout.splitlines() if line.startswith("nodes left:"))
    assert "scale-down" in left and "interruption" not in left, run.stdout
    assert "keeps being interrupted" not in run.stderr
