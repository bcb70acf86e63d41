"""``eochain ortho`` refuses silent wrong geometry, and its options answer each refusal.

Rebuilt from the real Ventoux crop (uint16, origin row 5000, col 5000 of the
product its ``.geom`` describes): the crop saved as PNG beside that
``.geom``, and SRTM heights (above EGM96) given without ``--geoid``.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning

from scheduler.cli.ortho import ortho

pytestmark = pytest.mark.integration


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(ortho, [str(a) for a in args])
    return result.exit_code, result.output


def test_png_crop_is_refused_then_placed_by_rpc_origin(shared_data: Path, tmp_path: Path) -> None:
    ventoux = shared_data / "ventoux"
    png = tmp_path / "left.png"
    with rasterio.open(ventoux / "left_image.tif") as src:
        pixels = src.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a PNG has no origin: the case
        with rasterio.open(png, "w", driver="PNG", width=500, height=500, count=1,
                           dtype="uint16") as dst:
            dst.write(pixels)
    shutil.copy(ventoux / "left_image.geom", tmp_path / "left.geom")
    common = ("--dem", ventoux / "srtm", "--geoid", ventoux / "geoid/egm96_15.gtx", "--gsd", "2",
              "-q")
    code, output = _run(png, *common, "-o", tmp_path / "refused.tif")
    assert code == 1, output
    assert "left.png" in output and "no crop origin" in output and "--rpc-origin" in output
    assert "Traceback" not in output and not (tmp_path / "refused.tif").exists()

    code, output = _run(png, *common, "--rpc-origin", "5000,5000", "-o", tmp_path / "png.tif")
    assert code == 0, output
    code, output = _run(ventoux / "left_image.tif", *common, "-o", tmp_path / "tif.tif")
    assert code == 0, output
    with rasterio.open(tmp_path / "png.tif") as a, rasterio.open(tmp_path / "tif.tif") as b:
        assert a.transform == b.transform and a.crs == b.crs
        np.testing.assert_array_equal(a.read(), b.read())

    code, output = _run(png, *common, "--rpc-origin", "5000;x", "-o", tmp_path / "bad.tif")
    assert code == 2 and "ROW,COL" in output


def test_srtm_without_geoid_is_refused_unless_heights_are_stated(shared_data: Path,
                                                                 tmp_path: Path) -> None:
    ventoux = shared_data / "ventoux"
    common = (ventoux / "left_image.tif", "--dem", ventoux / "srtm", "--gsd", "2", "-q")
    code, output = _run(*common, "-o", tmp_path / "refused.tif")
    assert code == 1, output
    assert "N44E005.hgt" in output and "EGM96" in output and "--geoid" in output
    assert not (tmp_path / "refused.tif").exists()
    code, output = _run(*common, "--dem-heights", "ellipsoid", "-o", tmp_path / "stated.tif")
    assert code == 0, output
    code, output = _run(*common, "--dem-max-holes", "2", "-o", tmp_path / "bad.tif")
    assert code == 2 and "0..1" in output
