"""Input-window declarations contain every output pixel's projection (real Pléiades RPC).

The property: for a map tile anywhere over the Gizeh crop's footprint, of
any size and pixel size, every output pixel centre projected through the
RPC at *any* height in the declared range lies inside the declared window
(shrunk by the requested margin), or the window is None because no pixel
lands on the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ops.errors import GeometryError
from ops.raster.crs import lonlat_transformer, utm_crs
from ops.sensor.footprint import declare_input_window, tile_samples
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc
from planner.geometry.grid import GeoBox

pytestmark = pytest.mark.unit

GIZEH_SHAPE = (800, 801)


@pytest.fixture(scope="module")
def gizeh_rpc(shared_data: Path) -> RpcModel:
    return find_rpc(shared_data / "gizeh" / "img1.tif")


def _centre(rpc: RpcModel) -> tuple[str, float, float]:
    lon, lat = rpc.localize(np.array([400.0]), np.array([400.0]), np.array([60.0]))
    crs = utm_crs(float(lon[0]), float(lat[0]))
    x, y = lonlat_transformer(crs, inverse=True).transform(lon, lat)
    return crs, float(x[0]), float(y[0])


def _pixel_projections(
    rpc: RpcModel, tile: GeoBox, heights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(tile.height), np.arange(tile.width), indexing="ij")
    x, y = tile.xy(rows, cols)
    lon, lat = lonlat_transformer(tile.crs).transform(x, y)
    return rpc.project(lon, lat, heights.reshape(rows.shape), check=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dx_m=st.floats(-350.0, 350.0),
    dy_m=st.floats(-350.0, 350.0),
    height=st.integers(1, 120),
    width=st.integers(1, 120),
    gsd_m=st.floats(0.2, 3.0),
    h_lo=st.floats(-50.0, 200.0),
    h_span=st.floats(0.0, 300.0),
    margin_px=st.sampled_from([0.0, 1.0, 2.5]),
    seed=st.integers(0, 2**31 - 1),
)
def test_every_pixel_projects_inside_declared_window(
    gizeh_rpc: RpcModel,
    dx_m: float,
    dy_m: float,
    height: int,
    width: int,
    gsd_m: float,
    h_lo: float,
    h_span: float,
    margin_px: float,
    seed: int,
) -> None:
    crs, x0, y0 = _centre(gizeh_rpc)
    tile = GeoBox(crs, (gsd_m, 0.0, x0 + dx_m, 0.0, -gsd_m, y0 + dy_m), height, width)
    window = declare_input_window(gizeh_rpc, (h_lo, h_lo + h_span), tile, GIZEH_SHAPE, margin_px)
    heights = np.random.default_rng(seed).uniform(h_lo, h_lo + h_span, height * width)
    # Extremes too: the segment ends are where the window is tightest.
    heights[: min(2, heights.size)] = [h_lo, h_lo + h_span][: min(2, heights.size)]
    rows, cols = _pixel_projections(gizeh_rpc, tile, heights)
    on_image = (
        (rows >= -0.5) & (rows <= GIZEH_SHAPE[0] - 0.5)
        & (cols >= -0.5) & (cols <= GIZEH_SHAPE[1] - 0.5)
    )
    if window is None:
        assert not on_image.any()
        return
    assert window.clip(*GIZEH_SHAPE) == window
    core = window
    # Shrink by the margin, except where the window was clipped at the image edge.
    r_lo = core.row_off - 0.5 + (margin_px if core.row_off > 0 else -np.inf)
    r_hi = core.row_stop - 0.5 - (margin_px if core.row_stop < GIZEH_SHAPE[0] else -np.inf)
    c_lo = core.col_off - 0.5 + (margin_px if core.col_off > 0 else -np.inf)
    c_hi = core.col_stop - 0.5 - (margin_px if core.col_stop < GIZEH_SHAPE[1] else -np.inf)
    inside = (rows >= r_lo) & (rows <= r_hi) & (cols >= c_lo) & (cols <= c_hi)
    assert inside[on_image].all()


def test_window_is_tight(gizeh_rpc: RpcModel) -> None:
    """A 64 m tile at 0.5 m over a flat 10 m range needs ~130 px, not the whole image."""
    crs, x0, y0 = _centre(gizeh_rpc)
    tile = GeoBox(crs, (0.5, 0.0, x0, 0.0, -0.5, y0), 128, 128)
    window = declare_input_window(gizeh_rpc, (60.0, 70.0), tile, GIZEH_SHAPE, margin_px=2.0)
    assert window is not None
    assert 128 <= window.height <= 160 and 128 <= window.width <= 160


def test_tile_off_the_image_declares_nothing(gizeh_rpc: RpcModel) -> None:
    crs, x0, y0 = _centre(gizeh_rpc)
    tile = GeoBox(crs, (0.5, 0.0, x0 + 2000.0, 0.0, -0.5, y0), 64, 64)
    assert declare_input_window(gizeh_rpc, (0.0, 100.0), tile, GIZEH_SHAPE, 2.0) is None


def test_bad_height_range_and_margin_are_refused(gizeh_rpc: RpcModel) -> None:
    crs, x0, y0 = _centre(gizeh_rpc)
    tile = GeoBox(crs, (0.5, 0.0, x0, 0.0, -0.5, y0), 8, 8)
    with pytest.raises(GeometryError, match="hmin <= hmax"):
        declare_input_window(gizeh_rpc, (100.0, 0.0), tile, GIZEH_SHAPE, 1.0)
    with pytest.raises(GeometryError, match="margin"):
        declare_input_window(gizeh_rpc, (0.0, 1.0), tile, GIZEH_SHAPE, -1.0)


def test_samples_cover_the_outer_pixel_edges() -> None:
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, 0.0), 5, 70)
    rows, cols = tile_samples(box, spacing_px=32)
    assert rows.min() == -0.5 and rows.max() == 4.5
    assert cols.min() == -0.5 and cols.max() == 69.5
    assert np.diff(np.unique(cols)).max() <= 32
