"""``eochain ortho``/``dsm`` write the campaign's product: the same bytes, pixels and metadata.

The commands run the campaign's product (:mod:`scheduler.products.product`)
in their own process (:mod:`scheduler.products.one_product`); a campaign (the
Flow API on the in-process executor) writes the same file for the same
scene(s), DEM and parameters. Real data: the Gizeh crops and their SRTM
tiles; a synthetic triplet for the fused multi-view DSM.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from ops.synthetic.scene import SceneSpec, generate_scene
from scheduler.cli.dsm import dsm
from scheduler.cli.ortho import ortho
from scheduler.products.driver import Driver
from scheduler.products.flow import SceneInput
from scheduler.products.product import SMALL_RESULT_BYTES, DsmStep, plan_views_dsm_product
from scheduler.products.stac import stac_key
from scheduler.products.store import open_store
from scheduler.runtime.dispatch import run_serial
from scheduler.runtime.state import TaskGraph
from tests.cog_compare import assert_same_cog
from tests.stac_validation import validate_stac

pytestmark = pytest.mark.integration


def _profile(path: Path) -> dict[str, object]:
    with rasterio.open(path) as src:
        return {
            "crs": src.crs.to_wkt(), "transform": src.transform, "shape": src.shape,
            "count": src.count, "dtypes": src.dtypes, "nodata": src.nodata,
            "descriptions": src.descriptions, "units": src.units, "tags": src.tags(),
            "band_tags": [src.tags(b) for b in src.indexes],
            "overviews": src.overviews(1), "block_shapes": src.block_shapes,
        }


def _campaign_ortho(image: Path, dem: Path, geoid: Path, dest: Path, **params: object) -> Path:
    report = (Driver(address="serial").get_flow([SceneInput(image.stem, str(image))])
              .ortho(dem=dem, geoid=geoid, **params)  # type: ignore[arg-type]
              .write(dest).run())
    assert report.ok, report.failures
    (record,) = report.written
    return dest / record.object_key


@pytest.mark.parametrize("cli_args, params", [
    (("--tile-size", "256"), {"tile_px": 256}),
    (("--tile-size", "128", "--gsd", "1.5", "--crs", "EPSG:3857", "--resampling", "bilinear"),
     {"tile_px": 128, "gsd_m": 1.5, "crs": "EPSG:3857", "resampling": "bilinear"}),
], ids=["defaults", "crs-gsd-bilinear"])
def test_ortho_command_writes_the_campaigns_product(
    shared_data: Path, tmp_path: Path, cli_args: tuple[str, ...], params: dict[str, object],
) -> None:
    image = shared_data / "gizeh/color1.tif"
    dem = shared_data / "gizeh/srtm_dir"
    geoid = shared_data / "ventoux/geoid/egm96_15.gtx"
    if not geoid.exists():
        pytest.skip(f"the EGM96 geoid grid is not at {geoid}")
    cli_out = tmp_path / "cli.tif"
    result = CliRunner().invoke(ortho, [str(image), "--dem", str(dem), "--geoid", str(geoid),
                                        *cli_args, "-q", "-o", str(cli_out)])
    assert result.exit_code == 0, result.output
    campaign_out = _campaign_ortho(image, dem, geoid, tmp_path / "campaign", **params)

    cli, campaign = _profile(cli_out), _profile(campaign_out)
    assert cli == campaign
    # the provenance names the inputs and parameters, nothing of the destination or the run
    tags = cli["tags"]
    assert isinstance(tags, dict)
    assert tags["EOCHAIN_OP"] == "ortho" and str(image.resolve()) in tags["EOCHAIN_INPUTS"]
    assert str(tmp_path) not in " ".join(tags.values())
    with rasterio.open(cli_out) as a, rasterio.open(campaign_out) as b:
        pixels = a.read()
        np.testing.assert_array_equal(pixels, b.read())
    assert (pixels != 0).mean() > 0.5  # a real ortho, not two empty grids
    assert_same_cog(cli_out, campaign_out)


@pytest.mark.parametrize("heights", ["ellipsoid", "geoid"])
def test_dsm_command_writes_the_campaigns_product(shared_data: Path, tmp_path: Path,
                                                  heights: str) -> None:
    gizeh = shared_data / "gizeh"
    geoid = shared_data / "ventoux/geoid/egm96_15.gtx"
    if not geoid.exists():
        pytest.skip(f"the EGM96 geoid grid is not at {geoid}")
    left, right, dem = gizeh / "img1.tif", gizeh / "img2.tif", gizeh / "srtm_dir"
    cli_out = tmp_path / "cli.tif"
    result = CliRunner().invoke(dsm, [str(left), str(right), "--dem", str(dem), "--geoid",
                                      str(geoid), "--gsd", "2", "--tile-size", "128",
                                      "--heights", heights, "-q", "-o", str(cli_out)])
    assert result.exit_code == 0, result.output
    report = (Driver(address="serial")
              .get_flow([SceneInput("img1", str(left)), SceneInput("img2", str(right))])
              .dsm([("img1", "img2")], dem=dem, geoid=geoid, gsd_m=2.0, tile_px=128,
                   heights=heights)
              .write(tmp_path / "campaign").run())
    assert report.ok, report.failures
    campaign_out = tmp_path / "campaign" / report.written[0].object_key

    cli, campaign = _profile(cli_out), _profile(campaign_out)
    assert cli == campaign
    assert cli["descriptions"] == (
        "height (m)", "supporting points (0 = interpolated)", "matching confidence (NCC)")
    tags = cli["tags"]
    assert isinstance(tags, dict) and tags["EOCHAIN_HEIGHTS"] == heights
    with rasterio.open(cli_out) as a, rasterio.open(campaign_out) as b:
        valid = (a.read(1) != a.nodata).mean()
        np.testing.assert_array_equal(a.read(), b.read())
    assert valid > 0.2  # a real DSM, not two empty grids
    assert_same_cog(cli_out, campaign_out)


def test_multiview_dsm_command_equals_its_product_on_the_serial_executor(
    tmp_path: Path,
) -> None:
    """Three views fused: a campaign names pairs, so the product is run as the campaign's
    executor runs it (:func:`run_serial` over its task graph, into a store)."""
    scene = generate_scene(SceneSpec(width=300, height=300, n_views=3, b_over_h=0.45, seed=21),
                           tmp_path / "triplet")
    views = [scene.out_dir / f"view_{k}.tif" for k in range(3)]
    cli_out = tmp_path / "cli.tif"
    # no DEM: the initial heights come from the images (the scene's own DEM is cut to it)
    result = CliRunner().invoke(dsm, [*map(str, views), "--pairs", "0-1,1-2",
                                      "--tile-size", "128", "-q", "-o", str(cli_out)])
    assert result.exit_code == 0, result.output
    assert "2 pairs fused" in result.output

    store = open_store(str(tmp_path / "campaign"))
    product = plan_views_dsm_product(
        [SceneInput(p.stem, str(p)) for p in views], DsmStep((), None, tile_px=128), store,
        view_pairs=[(0, 1), (1, 2)])
    # the images keep the flat surface here (little tilt): a few numbers in flight, and the
    # product says so where a DEM would be named
    plan_task = product.tasks[0]
    assert plan_task.kind == "plan" and plan_task.out_bytes == SMALL_RESULT_BYTES
    meta = product.writer.meta
    assert meta is not None
    provenance = meta.provenance
    assert provenance["dem"] is None
    assert provenance["initial_heights"].startswith("from the images, flat at ")
    assert "flat kept: terrain tilt" in provenance["initial_heights"]
    report = run_serial(TaskGraph.build(list(product.tasks)))
    assert report.ok, report.failures
    campaign_out = tmp_path / "campaign" / product.object_key
    item = json.loads((tmp_path / "campaign" / stac_key(product.object_key)).read_text())
    validate_stac(item)
    assert item["properties"]["eochain:initial_heights"] == provenance["initial_heights"]

    assert _profile(cli_out) == _profile(campaign_out)
    with rasterio.open(cli_out) as a:
        valid = (a.read(1) != a.nodata).mean()
    assert valid > 0.5
    assert_same_cog(cli_out, campaign_out)
