"""``eochain ortho`` end to end on a real crop, and its bad-input errors (nothing left behind)."""

from __future__ import annotations

import os
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rio_cogeo.cogeo import cog_validate

from ops.errors import GeometryError
from ops.ortho.orthorectify import HeightModel, default_geobox, orthorectify, plan_ortho, tile_jobs
from ops.raster.raster_io import COG_BLOCK_PX, overview_shapes
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import Dem
from planner.geometry.grid import GeoBox
from scheduler.cli.dsm import dsm
from scheduler.cli.ortho import ortho

pytestmark = pytest.mark.integration


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(ortho, [str(a) for a in args])
    return result.exit_code, result.output


def test_ortho_command_writes_a_valid_cog(shared_data: Path, tmp_path: Path) -> None:
    ventoux = shared_data / "ventoux"
    dest = tmp_path / "left_ortho.tif"
    code, output = _run(ventoux / "left_image.tif", "--dem", ventoux / "srtm", "--geoid",
                        ventoux / "geoid/egm96_15.gtx", "--tile-size", "256", "-q", "-o", dest)
    assert code == 0, output
    assert "EPSG:32631" in output and "0.51" in output
    valid, errors, _ = cog_validate(str(dest))
    assert valid, errors
    with rasterio.open(dest) as src:
        assert src.crs.to_string() == "EPSG:32631"
        assert src.nodata == 0 and src.dtypes[0] == "uint16"
        assert src.descriptions == ("band 1",)
        assert src.res == (0.51, 0.51)
        data = src.read(1)
    assert 0.6 < (data != 0).mean() < 0.95
    assert sorted(p.name for p in tmp_path.iterdir()) == ["left_ortho.tif"]


def test_ortho_command_honours_crs_and_gsd(shared_data: Path, tmp_path: Path) -> None:
    gizeh = shared_data / "gizeh"
    dest = tmp_path / "color.tif"
    code, output = _run(gizeh / "color1.tif", "--dem", gizeh / "srtm_dir", "--geoid",
                        shared_data / "ventoux/geoid/egm96_15.gtx", "--crs", "EPSG:3857",
                        "--gsd", "2", "--resampling", "bilinear", "-q", "-o", dest)
    assert code == 0, output
    with rasterio.open(dest) as src:
        assert src.crs.to_string() == "EPSG:3857" and src.res == (2.0, 2.0)
        assert src.count == 4
        assert np.isfinite(src.read()).all()


def test_image_without_rpc_is_an_error_naming_it(tmp_path: Path, shared_data: Path) -> None:
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=32, height=32, count=1, dtype="uint8",
                       crs="EPSG:32631", transform=rasterio.Affine(2, 0, 300000, 0, -2, 4800000)) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    dest = tmp_path / "out.tif"
    code, output = _run(plain, "--dem", shared_data / "ventoux/srtm", "-q", "-o", dest)
    assert code != 0 and "plain.tif" in output and "RPC" in output
    assert not dest.exists()


def test_dem_missing_the_footprint_is_an_error(tmp_path: Path, shared_data: Path) -> None:
    dest = tmp_path / "out.tif"
    dest.write_bytes(b"previous")
    code, output = _run(shared_data / "ventoux/left_image.tif", "--dem",
                        shared_data / "gizeh/srtm_dir", "--geoid",
                        shared_data / "ventoux/geoid/egm96_15.gtx", "-q", "--overwrite", "-o", dest)
    assert code != 0 and "gizeh/srtm_dir" in output and "cover" in output
    assert dest.read_bytes() == b"previous"


def test_truncated_image_is_an_error_and_leaves_nothing(tmp_path: Path, shared_data: Path) -> None:
    src = shared_data / "ventoux/left_image.tif"
    cut = tmp_path / "left_image.tif"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    shutil.copy(shared_data / "ventoux/left_image.geom", tmp_path / "left_image.geom")
    dest = tmp_path / "out.tif"
    code, output = _run(cut, "--dem", shared_data / "ventoux/srtm", "--geoid",
                        shared_data / "ventoux/geoid/egm96_15.gtx", "--tile-size", "128", "-q",
                        "-o", dest)
    assert code != 0 and "left_image.tif" in output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["left_image.geom", "left_image.tif"]


def test_grid_outside_the_footprint_is_an_error(shared_data: Path, tmp_path: Path) -> None:
    image = shared_data / "ventoux/left_image.tif"
    rpc = find_rpc(image)
    heights = HeightModel.from_dem(Dem.open(shared_data / "ventoux/srtm",
                                            geoid=shared_data / "ventoux/geoid/egm96_15.gtx"))
    near = default_geobox(rpc, (500, 500), heights)
    a, b, c, d, e, f = near.transform
    far = GeoBox(near.crs, (a, b, c + 5000.0, d, e, f), near.height, near.width)
    with pytest.raises(GeometryError, match="does not intersect the footprint"):
        plan_ortho(rpc, heights, far, (500, 500))
    plan = plan_ortho(rpc, heights, far, (500, 500), grid_step_px=16)
    with pytest.raises(GeometryError, match="does not intersect the footprint"):
        orthorectify(image, plan, tmp_path / "far.tif")
    assert not (tmp_path / "far.tif").exists()


def test_memory_stays_within_three_times_one_tile(shared_data: Path, tmp_path: Path) -> None:
    """tracemalloc peak over a whole run vs the largest (input window + output tile) bytes."""
    image = shared_data / "ventoux/left_image.tif"
    rpc = find_rpc(image)
    heights = HeightModel.from_dem(Dem.open(shared_data / "ventoux/srtm",
                                            geoid=shared_data / "ventoux/geoid/egm96_15.gtx"))
    plan = plan_ortho(rpc, heights, default_geobox(rpc, (500, 500), heights), (500, 500),
                      dtype="uint16")
    payloads = [
        (0 if src is None else src.size) * 2 + window.size * 2
        for window, src in tile_jobs(plan, 128)
    ]
    orthorectify(image, plan, tmp_path / "o.tif", tile_px=128)  # one-time caches, compilation
    tracemalloc.start()
    report = orthorectify(image, plan, tmp_path / "o.tif", tile_px=128)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.tiles == len(payloads) > 10
    # The COG writer holds 512 px blocks until they are complete and encoded: one
    # row of them per pyramid level, plus its encoding slots (2 per core, plus 2).
    row_blocks = sum(-(-w // COG_BLOCK_PX) for _, w in overview_shapes(*plan.geobox.shape))
    writer = (row_blocks + 2 * len(os.sched_getaffinity(0)) + 2) * COG_BLOCK_PX**2 * 2
    assert peak <= 3 * max(payloads) + writer, (peak, max(payloads), writer)


@pytest.fixture
def ventoux_copy(shared_data: Path, tmp_path: Path) -> Path:
    """The Ventoux left image and its .geom in a folder of the test's own."""
    for name in ("left_image.tif", "left_image.geom"):
        shutil.copy(shared_data / "ventoux" / name, tmp_path / name)
    return tmp_path / "left_image.tif"


def test_output_equal_to_an_input_is_refused(ventoux_copy: Path, shared_data: Path) -> None:
    srtm = shared_data / "ventoux/srtm"
    geoid = shared_data / "ventoux/geoid/egm96_15.gtx"
    image_bytes = ventoux_copy.read_bytes()
    geom = ventoux_copy.with_suffix(".geom")
    geom_bytes = geom.read_bytes()
    for target in (ventoux_copy, geom):
        code, output = _run(ventoux_copy, "--dem", srtm, "--geoid", geoid, "-q", "--overwrite",
                            "-o", target)
        assert code == 2 and "is an input of this command" in output and str(target) in output
    assert ventoux_copy.read_bytes() == image_bytes and geom.read_bytes() == geom_bytes
    result = CliRunner().invoke(dsm, [str(ventoux_copy), str(shared_data / "ventoux/right_image.tif"),
                                      "--dem", str(srtm), "--geoid", str(geoid), "-q",
                                      "--overwrite", "-o", str(ventoux_copy)])
    assert result.exit_code == 2 and "is an input of this command" in result.output
    assert ventoux_copy.read_bytes() == image_bytes


def test_an_existing_file_is_replaced_only_with_overwrite(ventoux_copy: Path,
                                                          shared_data: Path) -> None:
    dest = ventoux_copy.parent / "notes.txt"
    dest.write_text("someone else's file")
    args = [ventoux_copy, "--dem", shared_data / "ventoux/srtm", "--geoid",
            shared_data / "ventoux/geoid/egm96_15.gtx", "--gsd", "2", "-q", "-o", dest]
    code, output = _run(*args)
    assert code == 2 and "already exists; pass --overwrite" in output
    assert dest.read_text() == "someone else's file"
    code, output = _run(*args, "--overwrite")
    assert code == 0, output
    with rasterio.open(dest) as src:
        assert src.crs.to_string() == "EPSG:32631"


def test_unwritable_output_and_missing_dem_are_found_before_any_read(
    ventoux_copy: Path, shared_data: Path, tmp_path: Path,
) -> None:
    srtm = shared_data / "ventoux/srtm"
    code, output = _run(ventoux_copy, "--dem", srtm, "-q", "-o", tmp_path / "nope/out.tif")
    assert code == 2 and "does not exist; create it first" in output
    code, output = _run(ventoux_copy, "--dem", tmp_path / "no-dem", "-q", "-o",
                        tmp_path / "o.tif")
    assert code == 2 and "no-dem does not exist" in output and "--dem" in output
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            print("running as root: a read-only folder is writable, that case is not checked")
        else:
            code, output = _run(ventoux_copy, "--dem", srtm, "-q", "-o", ro / "o.tif")
            assert code == 2 and "is not writable" in output
    finally:
        ro.chmod(0o700)
