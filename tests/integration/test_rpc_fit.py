"""An RPC that does not describe its image is refused, with the reason and the fix.

The hostile inputs of issue 14, rebuilt from the real Gizeh crop (800 x 801
at row 5000, col 20500 of a Pléiades product about 13 600 x 40 000 px, whose
``.geom`` describes the whole product):

* the crop saved as PNG, or as a TIFF with its geotransform stripped, next to
  the product's ``.geom``: where it sits in the product is unknown;
* a crop origin that puts the image outside the RPC's validity box;
* an ortho (a map CRS) next to the raw image's ``.geom``;
* RPC tags in the image and a ``.geom`` beside it that disagree.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from ops.errors import RpcConflictError, RpcFitError
from ops.sensor.rpc_check import rpc_disagreement_px
from ops.sensor.rpc_io import find_rpc, read_rpc, write_rpc_tags

pytestmark = pytest.mark.integration

GIZEH_ORIGIN = (5000.0, 20500.0)


def _raster(path: Path, height: int, width: int, *, driver: str = "GTiff",
            transform: Affine | None = None, crs: str | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver=driver, width=width, height=height, count=1,
                           dtype="uint8", transform=transform or Affine.identity(),
                           crs=crs) as ds:
            ds.write(np.zeros((1, height, width), dtype=np.uint8))
    return path


def _with_geom(image: Path, geom: Path) -> Path:
    shutil.copy(geom, image.with_suffix(".geom"))
    return image


@pytest.mark.parametrize("driver", ["PNG", "GTiff"])
def test_crop_without_origin_beside_the_products_geom_is_refused(
    driver: str, tmp_path: Path, shared_data: Path
) -> None:
    suffix = ".png" if driver == "PNG" else ".tif"
    image = _with_geom(_raster(tmp_path / f"crop{suffix}", 801, 800, driver=driver),
                       shared_data / "gizeh/img1.geom")
    with pytest.raises(RpcFitError) as info:
        find_rpc(image)
    message = str(info.value)
    for part in (f"crop{suffix}", "801 x 800", "crop.geom", "states no crop origin",
                 "--rpc-origin"):
        assert part in message, message
    # stating the origin gives exactly the model of the original crop
    stated = find_rpc(image, origin=GIZEH_ORIGIN)
    original = find_rpc(shared_data / "gizeh/img1.tif")
    assert (stated.row_origin, stated.col_origin) == GIZEH_ORIGIN
    assert rpc_disagreement_px(stated, original) == 0.0


def test_a_whole_product_without_origin_is_accepted(tmp_path: Path, shared_data: Path) -> None:
    """A SkySat _RPC.TXT centred on a 1080 x 2588 px product, its box 1080 x 2534 px."""
    txt = shared_data / "rpc_fixtures/20191015_073816_ssc1d3_0011_basic_l1a_panchromatic_dn_RPC.TXT"
    image = _raster(tmp_path / "scene.tif", 1080, 2588)
    shutil.copy(txt, tmp_path / "scene_RPC.TXT")
    model = find_rpc(image)
    assert (model.row_origin, model.col_origin) == (0.0, 0.0)
    assert rpc_disagreement_px(model, read_rpc(txt)) == 0.0
    # ... while a quarter of it is a crop of unknown place
    small = _raster(tmp_path / "small.tif", 540, 1267)
    shutil.copy(txt, tmp_path / "small_RPC.TXT")
    with pytest.raises(RpcFitError, match="about 1080 x 2534 px"):
        find_rpc(small)


def test_origin_outside_the_validity_box_is_refused(tmp_path: Path, shared_data: Path) -> None:
    image = _with_geom(_raster(tmp_path / "far.tif", 801, 800,
                               transform=Affine(1, 0, 20500, 0, 1, 30000)),
                       shared_data / "gizeh/img1.geom")
    with pytest.raises(RpcFitError, match=r"far\.tif: its rows 30000\.\.30800 .* outside the "
                                          r"validity box 0\.\.13643"):
        find_rpc(image)


def test_stated_origin_must_match_the_files(tmp_path: Path, shared_data: Path) -> None:
    with pytest.raises(RpcFitError, match=r"origin \(1, 2\) given, .* states \(5000, 20500\)"):
        find_rpc(shared_data / "gizeh/img1.tif", origin=(1, 2))
    with pytest.raises(RpcFitError, match="two finite numbers"):
        find_rpc(shared_data / "gizeh/img1.tif", origin=(float("nan"), 0.0))


def test_ortho_given_as_raw_is_refused(tmp_path: Path, shared_data: Path) -> None:
    """A 0.5 m UTM grid starting where the raw crop's first pixel lies on the ground."""
    raw = find_rpc(shared_data / "gizeh/img1.tif")
    lon, lat = raw.localize(np.array([0.0]), np.array([0.0]), np.array([raw.height_off]))
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True).transform(
        float(lon[0]), float(lat[0]))
    ortho = _with_geom(_raster(tmp_path / "ortho.tif", 800, 800, crs="EPSG:32636",
                               transform=Affine(0.5, 0, x, 0, -0.5, y)),
                       shared_data / "gizeh/img1.geom")
    with pytest.raises(RpcFitError, match=r"ortho\.tif: image is georeferenced .* expected a "
                                          "raw sensor image"):
        find_rpc(ortho)
    with pytest.raises(RpcFitError, match="georeferenced"):
        find_rpc(ortho, origin=(0, 0))


def test_conflicting_rpc_sources_need_a_choice(tmp_path: Path, shared_data: Path) -> None:
    tags = find_rpc(shared_data / "gizeh/img1.tif")
    image = _raster(tmp_path / "scene.tif", 801, 800,
                    transform=Affine(1, 0, 20500, 0, 1, 5000))
    write_rpc_tags(image, tags)
    shutil.copy(shared_data / "gizeh/img2.geom", tmp_path / "scene.geom")
    with pytest.raises(RpcConflictError) as info:
        find_rpc(image)
    message = str(info.value)
    assert "disagree" in message and "scene.geom" in message and "scene.tif" in message
    assert "'embedded'" in message and "'sidecar'" in message
    embedded = find_rpc(image, rpc_source="embedded")
    assert rpc_disagreement_px(embedded, tags) < 1e-6
    sidecar = find_rpc(image, rpc_source="sidecar")
    img2 = read_rpc(shared_data / "gizeh/img2.geom")
    assert sidecar.source == str(tmp_path / "scene.geom")
    assert rpc_disagreement_px(sidecar, img2.with_origin(*GIZEH_ORIGIN)) == 0.0
    chosen = find_rpc(image, rpc_source=shared_data / "gizeh/img2.geom")
    assert rpc_disagreement_px(chosen, sidecar) == 0.0
    # sources that agree are no conflict
    shutil.copy(shared_data / "gizeh/img1.geom", tmp_path / "scene.geom")
    assert rpc_disagreement_px(find_rpc(image), tags) < 1e-6
