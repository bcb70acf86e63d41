"""RPC models against GDAL's own RPC transformer, on every real fixture.

GDAL parses the container itself wherever it can (see
``benchmarks.rpc_agreement``), so these tests check our readers, the 1-based
DIMAP offsets, the crop origin and GDAL's +0.5 pixel convention together.
Written files (GeoTIFF tags, .RPB, .geom) are made in tmp_path and read back
both by GDAL and by us.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine, RPCTransformer

from benchmarks.rpc_agreement import (
    FIXTURES,
    TOLERANCE_PX,
    FixtureSpec,
    agreement,
    gdal_rowcol,
    grid_points,
)
from ops.errors import RpcFormatError
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc, read_rpc, write_geom, write_rpb, write_rpc_tags

pytestmark = pytest.mark.integration

PHR = "rpc_fixtures/PHR1B_P_201709281038393_SEN_PRG_FC_178609-001"


def _tiff(path: Path, transform: Affine | None = None, **extra: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=16, height=12, count=1,
                           dtype="uint8", transform=transform or Affine.identity(),
                           **extra) as ds:
            ds.write(np.zeros((1, 12, 16), dtype=np.uint8))
    return path


def _gdal_rpcs(path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return ds.rpcs


def _max_diff(a: RpcModel, b: RpcModel, shape: tuple[int, int]) -> float:
    rows, cols, hs = grid_points(shape, a, n=15, n_h=4)
    lon, lat = a.localize(rows, cols, hs)
    ra, ca = a.project(lon, lat, hs)
    rb, cb = b.project(lon, lat, hs)
    return float(max(np.max(np.abs(ra - rb)), np.max(np.abs(ca - cb))))


@pytest.mark.parametrize("spec", FIXTURES, ids=[s.name for s in FIXTURES])
def test_projection_and_round_trip_agree_with_gdal(spec: FixtureSpec, shared_data: Path) -> None:
    result = agreement(spec, shared_data, n=21, n_h=5)
    assert result.points == 21 * 21 * 5
    assert result.max_diff_px <= TOLERANCE_PX, result
    assert result.roundtrip_px <= TOLERANCE_PX, result


def test_same_model_from_tiff_tags_dimap_xml_and_geom(shared_data: Path) -> None:
    tags = read_rpc(shared_data / f"{PHR}.tif")
    geom = read_rpc(shared_data / f"{PHR}.geom")
    dimap = read_rpc(shared_data / (PHR.replace("/", "/RPC_") + ".XML"))
    # DIMAP says 11470.5 (1-based), the others 11469.5
    assert tags.line_off == geom.line_off == dimap.line_off == 11469.5
    box = (22940, 40000)
    assert _max_diff(tags, geom, box) <= TOLERANCE_PX
    assert _max_diff(tags, dimap, box) <= TOLERANCE_PX


def test_ventoux_geom_and_dimap_xml_agree(shared_data: Path) -> None:
    geom = read_rpc(shared_data / "ventoux/left_image.geom")
    dimap = read_rpc(shared_data / "ventoux/RPC_PHR1B_P_201308051042194_SEN_690908101-001.XML")
    assert _max_diff(geom, dimap, (42220, 38416)) <= TOLERANCE_PX


def test_find_rpc_attaches_the_crop_origin(shared_data: Path) -> None:
    crop = find_rpc(shared_data / "gizeh/img1.tif")
    assert (crop.row_origin, crop.col_origin) == (5000.0, 20500.0)
    assert crop.source.endswith("img1.geom")
    product = read_rpc(shared_data / "gizeh/img1.geom")
    lon, lat = crop.localize(400.0, 400.0, 100.0)
    row, col = product.project(lon, lat, 100.0)
    assert abs(float(row) - 5400.0) < 1e-6 and abs(float(col) - 20900.0) < 1e-6


def test_localisation_agrees_with_gdal_at_a_tight_threshold(shared_data: Path) -> None:
    # GDAL's default RPC_PIXEL_ERROR_THRESHOLD is 0.1 px (errors of 0.02 px seen here);
    # at 1e-9 its iteration gives up on some points, 1e-6 converges everywhere.
    model = read_rpc(shared_data / "rpc_fixtures/wv3_20.NTF")
    rows, cols, hs = grid_points((500, 500), model, n=11, n_h=3)
    lon, lat = model.localize(rows, cols, hs)
    with RPCTransformer(model.to_rasterio(), RPC_PIXEL_ERROR_THRESHOLD=1e-6,
                        RPC_MAX_ITERATIONS=100) as tr:
        glon, glat = tr.xy(rows, cols, hs, offset="center")
    r, c = model.project(np.asarray(glon), np.asarray(glat), hs)
    assert np.max(np.abs(r - rows)) <= TOLERANCE_PX
    assert np.max(np.abs(c - cols)) <= TOLERANCE_PX
    assert np.max(np.abs(np.asarray(glon) - lon)) < 1e-8
    assert np.max(np.abs(np.asarray(glat) - lat)) < 1e-8


def test_written_rpc_tags_are_read_by_gdal_and_by_us(tmp_path: Path,
                                                     shared_data: Path) -> None:
    crop = find_rpc(shared_data / "gizeh/img1.tif")
    plain = _tiff(tmp_path / "plain.tif")
    write_rpc_tags(plain, crop)
    rpc = _gdal_rpcs(plain)
    assert rpc is not None and rpc.line_off == crop.line_off - 5000.0
    rows, cols, hs = grid_points((801, 800), crop, n=9, n_h=3)
    lon, lat = crop.localize(rows, cols, hs)
    with RPCTransformer(rpc) as tr:
        gr, gc = gdal_rowcol(tr, lon, lat, hs)
    assert max(np.max(np.abs(gr - rows)), np.max(np.abs(gc - cols))) <= TOLERANCE_PX
    back = read_rpc(plain)
    assert (back.row_origin, back.col_origin) == (0.0, 0.0)
    assert _max_diff(crop, back, (801, 800)) <= TOLERANCE_PX
    # a crop-origin geotransform keeps product offsets in the tags
    shifted = _tiff(tmp_path / "shifted.tif", Affine(1, 0, 20500, 0, 1, 5000))
    write_rpc_tags(shifted, crop)
    again = read_rpc(shifted)
    assert (again.row_origin, again.col_origin) == (5000.0, 20500.0)
    assert again.line_off == pytest.approx(crop.line_off, abs=1e-9)
    assert _max_diff(crop, again, (801, 800)) <= TOLERANCE_PX


def test_write_rpc_tags_on_an_open_dataset(tmp_path: Path, shared_data: Path) -> None:
    model = read_rpc(shared_data / f"{PHR}.geom")
    path = tmp_path / "open.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8") as ds:
            ds.write(np.zeros((1, 8, 8), dtype=np.uint8))
            write_rpc_tags(ds, model)
    assert _max_diff(model, read_rpc(path), (128, 128)) <= TOLERANCE_PX


def test_written_rpb_is_read_by_gdal(tmp_path: Path, shared_data: Path) -> None:
    model = read_rpc(shared_data / "rpc_fixtures/rpc_WV2.xml")
    image = _tiff(tmp_path / "scene.tif")
    write_rpb(model, tmp_path / "scene.RPB")
    rpc = _gdal_rpcs(image)
    assert rpc is not None, "GDAL did not pick up the .RPB sidecar"
    from_gdal = RpcModel.from_rasterio(rpc, source="gdal")
    assert _max_diff(model, from_gdal, (20289, 28244)) <= TOLERANCE_PX
    # a 12 x 16 image beside a whole product's .RPB: its origin in the product must be stated
    assert _max_diff(model, find_rpc(image, origin=(0, 0)), (20289, 28244)) <= TOLERANCE_PX


def test_geom_sidecar_with_crop_geotransform(tmp_path: Path, shared_data: Path) -> None:
    product = read_rpc(shared_data / "ventoux/left_image.geom")
    image = _tiff(tmp_path / "crop.tif", Affine(1, 0, 5000, 0, 1, 5000))
    write_geom(product, tmp_path / "crop.geom")
    crop = find_rpc(image)
    assert (crop.row_origin, crop.col_origin) == (5000.0, 5000.0)
    assert _max_diff(crop, find_rpc(shared_data / "ventoux/left_image.tif"), (500, 500)) < 1e-9


def test_find_rpc_matches_a_dimap_xml_by_product_name(tmp_path: Path,
                                                      shared_data: Path) -> None:
    xml = shared_data / "ventoux/RPC_PHR1B_P_201308051042194_SEN_690908101-001.XML"
    (tmp_path / xml.name).symlink_to(xml)
    image = _tiff(tmp_path / "PHR1B_P_201308051042194_SEN_690908101-001.crop.tif",
                  Affine(1, 0, 5000, 0, 1, 5000))
    crop = find_rpc(image)
    assert crop.source == str(tmp_path / xml.name)
    assert (crop.row_origin, crop.col_origin) == (5000.0, 5000.0)
    left = find_rpc(shared_data / "ventoux/left_image.tif")
    assert _max_diff(crop, left, (500, 500)) <= TOLERANCE_PX


def test_image_without_rpc_is_a_clear_error(tmp_path: Path) -> None:
    image = _tiff(tmp_path / "bare.tif")
    with pytest.raises(RpcFormatError, match=r"bare\.tif: image holds no RPC"):
        read_rpc(image)
    with pytest.raises(RpcFormatError, match=r"bare\.tif: no RPC found; looked for") as info:
        find_rpc(image)
    for name in ("bare.geom", "bare.RPB", "bare_RPC.TXT", "RPC_<core>.XML"):
        assert name in str(info.value)
    (tmp_path / "RPC_OTHER_PRODUCT.XML").write_text("<Dimap_Document/>")
    with pytest.raises(RpcFormatError, match=r"not matching: RPC_OTHER_PRODUCT\.XML"):
        find_rpc(image)


def test_georeferenced_image_has_no_crop_origin(tmp_path: Path, shared_data: Path) -> None:
    model = read_rpc(shared_data / "rpc_fixtures/RGB.byte.rpc.vrt")
    image = _tiff(tmp_path / "geo.tif", Affine(1, 0, 300, 0, 1, 200), crs="EPSG:32618")
    write_rpc_tags(image, model)
    back = read_rpc(image)
    assert (back.row_origin, back.col_origin) == (0.0, 0.0)
    assert back.line_off == model.line_off
