"""``eochain ortho`` writes the campaign's product: the same bytes, pixels and metadata.

The command runs the campaign's ortho product of one scene in its own
process (:mod:`scheduler.runtime.one_product`); a campaign (the Flow API on
the in-process executor) writes the same file for the same scene, DEM and
parameters. Real data: the Gizeh colour crop and its SRTM tiles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from scheduler.cmd_ortho import ortho
from scheduler.runtime.flow import Driver, SceneInput

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
    assert tags["EOCHAIN_OP"] == "ortho" and str(image) in tags["EOCHAIN_INPUTS"]
    assert str(tmp_path) not in " ".join(tags.values())
    with rasterio.open(cli_out) as a, rasterio.open(campaign_out) as b:
        pixels = a.read()
        np.testing.assert_array_equal(pixels, b.read())
    assert (pixels != 0).mean() > 0.5  # a real ortho, not two empty grids
    assert cli_out.read_bytes() == campaign_out.read_bytes()
