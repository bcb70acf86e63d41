"""The plan of a run is its DAG: the planner costs the tasks, keys, stages and edges it dispatches.

For a campaign whose scenes are files, ``eochain plan --dem`` surveys the
products as ``eochain run`` does and hands the planner their grids
(:func:`scheduler.cli.plan.surveyed_graph`); the planner's DAG must then be
the runtime's :class:`~scheduler.runtime.state.TaskGraph` of the same
campaign::

    stereo.plan:P ──> stereo:P:r_c ──> dsm:P:r_c ──> dsm.write:P
         └──────────────────────────────^
    ortho.plan:S ──> ortho:S:r_c ──> ortho.write:S

Real data (the Gizeh pair, skipped with the reason where absent) and a
synthetic pair.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from ops.stereo.pair import input_windows
from ops.synthetic.scene import SceneSpec, generate_scene
from planner.calibration import load_calibration
from planner.catalog import load_catalog
from planner.estimate import surveyed_dag
from planner.stages import parse_key, stage_of
from scheduler.cli.plan import plan, surveyed_graph
from scheduler.cli.run import campaign_flow
from scheduler.cli.scene_survey import load_surveyed_campaign
from scheduler.observe.metrics import op_name
from scheduler.products.driver import Driver
from scheduler.products.kernels import StereoPlanTask, StereoTileTask
from scheduler.products.product import ProductPlan
from scheduler.runtime.errors import FlowError
from scheduler.runtime.state import TaskGraph

pytestmark = pytest.mark.integration


def _campaign_file(path: Path, images: tuple[Path, Path], tile_px: int) -> Path:
    path.write_text(
        "name: task-model\n"
        "inputs:\n"
        "  scenes:\n"
        + "".join(f"    - uri: {image}\n" for image in images)
        + f"  pairs: [[{images[0].stem}, {images[1].stem}]]\n"
        "products:\n"
        "  ortho: {gsd_m: 1.0}\n"
        "  dsm: {gsd_m: 1.0}\n"
        f"tiling: {{tile_px: {tile_px}, margin_px: 16}}\n")
    return path


def _planned_and_run(campaign_file: Path, dem: Path, geoid: Path | None
                     ) -> tuple[nx.DiGraph, TaskGraph]:
    """The planner's DAG and the runtime's graph; scene footprints from the RPCs' height
    range (a synthetic scene's DEM covers the scene, not the RPCs' whole range)."""
    geoid_s = None if geoid is None else str(geoid)
    campaign = load_surveyed_campaign(campaign_file)
    catalog = load_catalog()
    planned = surveyed_graph(campaign, campaign_file, str(dem), geoid_s, load_calibration(),
                             catalog.families)
    assert planned is not None
    placement = {"stereo": ("c7g.xlarge:spot",), "dsm": ("r7g.xlarge:spot",),
                 "ortho": ("m7g.large:on-demand",)}
    flow = campaign_flow(campaign, campaign_file, Driver(address="serial"), dem=str(dem),
                         geoid=geoid_s, tile_px=None, dest=None, placement=placement)
    products, failures = flow.survey()
    assert not failures
    _assert_same_windows(products)
    # each stage's tasks, its plan and write tasks included, on the types placed for it
    assert all(t.resources == placement[t.stage] for p in products for t in p.tasks)
    return planned, TaskGraph.build([t for p in products for t in p.tasks])


def _assert_same_windows(products: list[ProductPlan]) -> None:
    """Each stereo tile reads what the plan declares it reads: both views' raw windows,
    declared once, while surveying (the task carries them)."""
    planned = surveyed_dag([p.surveyed for p in products], load_calibration(), ("c7g",),
                           with_external=True)
    seen = 0
    for product in products:
        plan_task = product.tasks[0].fn
        assert isinstance(plan_task, StereoPlanTask) or product.surveyed.kind == "ortho"
        for task in product.tasks:
            if isinstance(task.fn, StereoTileTask):
                assert isinstance(plan_task, StereoPlanTask)
                expected = input_windows(plan_task.pair_plan(task.fn.pair), task.fn.inputs)
                assert planned.nodes[parse_key(task.key)]["external"] == expected
                seen += len(expected) == 2 and all(w.window.size > 0 for w in expected)
    assert seen > 0


def _assert_same(planned: nx.DiGraph, run: TaskGraph) -> None:
    assert {str(k) for k in planned} == set(run.tasks)
    assert {(str(u), str(v)) for u, v in planned.edges} == {
        (d, k) for k, t in run.tasks.items() for d in t.deps}
    for key in planned:
        task = run.tasks[str(key)]
        assert task.stage == stage_of(key.op), key
        assert op_name(task.fn).startswith(task.stage), (key, op_name(task.fn))
        assert parse_key(task.key) == key
    # a DSM tile reads its own stereo tile; an ortho tile only its scene's plan (on the DEM)
    for key, task in run.tasks.items():
        k = parse_key(key)
        if k.op == "dsm":
            assert [parse_key(d).op for d in task.deps] == ["stereo.plan", "stereo"]
        if k.op == "ortho":
            assert [parse_key(d).op for d in task.deps] == ["ortho.plan"]


def _wide_dem(dem: Path, out: Path, pad_px: int = 400) -> Path:
    """The scene's DEM at its mean height, ``pad_px`` wider on each side: a synthetic scene's
    own DEM is cut to it, where stereo's DEM reach (matching context) goes beyond."""
    with rasterio.open(dem) as src:
        height = float(src.read(1).mean())
        t = src.transform
        profile = dict(src.profile, width=src.width + 2 * pad_px, height=src.height + 2 * pad_px,
                       transform=Affine(t.a, t.b, t.c - pad_px * t.a, t.d, t.e,
                                        t.f - pad_px * t.e))
        tags = src.tags()
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(np.full((1, profile["height"], profile["width"]), height, np.float32))
        dst.update_tags(**tags)
    return out


def test_the_plan_of_synthetic_files_is_the_runs_dag(tmp_path: Path) -> None:
    scene = generate_scene(SceneSpec(width=300, height=300, seed=3), tmp_path / "s")
    images = (scene.out_dir / "view_0.tif", scene.out_dir / "view_1.tif")
    campaign = _campaign_file(tmp_path / "c.yaml", images, 128)
    dem = _wide_dem(scene.out_dir / "dem.tif", tmp_path / "wide-dem.tif")
    planned, run = _planned_and_run(campaign, dem, None)
    _assert_same(planned, run)
    stages = {t.stage for t in run.tasks.values()}
    assert stages == {"stereo", "dsm", "ortho"} and planned.graph["stages"] == (
        "stereo", "dsm", "ortho")
    assert sum(1 for k in planned if k.op == "dsm") > 1  # tiled, not one tile


def test_eochain_plan_of_the_gizeh_files_costs_the_runs_tasks(shared_data: Path,
                                                              tmp_path: Path) -> None:
    gizeh = shared_data / "gizeh"
    dem, geoid = gizeh / "srtm_dir", shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    campaign = _campaign_file(tmp_path / "gizeh.yaml",
                              (gizeh / "img1.tif", gizeh / "img2.tif"), 256)
    planned, run = _planned_and_run(campaign, dem, geoid)
    _assert_same(planned, run)
    result = CliRunner().invoke(plan, [str(campaign), "--dem", str(dem), "--geoid", str(geoid),
                                       "--runs", "0", "--out", str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    assert f": {len(run.tasks)} tasks, {sum(len(t.deps) for t in run.tasks.values())} edges" \
        in result.output
    assert "the run's, on the products' surveyed grids" in result.output


def test_a_group_of_views_is_planned_and_run_as_stereo_dsm_fusion(tmp_path: Path) -> None:
    """Three views, one DSM: per tile each pair's stereo and dsm tasks, then a fusion task::

        stereo.plan:G ──> stereo:G/a+b:r_c ──> dsm:G/a+b:r_c ──┐
                      ──> stereo:G/b+c:r_c ──> dsm:G/b+c:r_c ──┴──> fusion:G:r_c ──> dsm.write:G
    """
    from scheduler.products.flow import SceneInput

    scene = generate_scene(SceneSpec(width=200, height=200, n_views=3, b_over_h=0.45, seed=21),
                           tmp_path / "triplet")
    views = [SceneInput(f"v{k}", str(scene.out_dir / f"view_{k}.tif")) for k in range(3)]
    dem = _wide_dem(scene.out_dir / "dem.tif", tmp_path / "wide-dem.tif")
    flow = (Driver(address="serial").get_flow(views).dsm([], views=[["v0", "v1", "v2"]],
                                                           dem=dem, tile_px=128)
            .write(tmp_path / "out"))
    products, failures = flow.survey()
    assert not failures
    _assert_same_windows(products)
    (product,) = products
    with pytest.raises(FlowError, match=r"stages \['write'\] are not stages"):
        flow.place({"write": ("c7g.large:spot",)})
    run = TaskGraph.build(product.tasks)
    planned = surveyed_dag([product.surveyed], load_calibration(), ("c7g",))
    _assert_same(planned, run)
    fusion = [k for k in run.tasks if parse_key(k).op == "fusion"]
    assert fusion and all(
        [parse_key(d).op for d in run.tasks[k].deps] == ["stereo.plan"] + ["dsm"] * len(
            product.surveyed.pairs) for k in fusion)
    assert len(product.surveyed.pairs) >= 2
    report = flow.run()
    assert report.ok, report.failures
    (record,) = report.written
    with rasterio.open(tmp_path / "out" / record.object_key) as src:
        assert src.count == 3 and (src.read(1) != src.nodata).mean() > 0.5
