"""Tile model invariants: tiles partition the geobox, windows and coordinates agree.

A 5 x 7 geobox cut into 2 x 3 tiles with a margin of 1::

    +---+---+-+      core windows: 3 tile rows x 3 tile columns,
    | 0 | 1 |2|      edge tiles smaller; each padded window is its core
    +---+---+-+      grown by the margin, clipped to the geobox.
    | 3 | 4 |5|
    +---+---+-+
    | 6 | 7 |8|
    +---+---+-+
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from planner.geometry.errors import GridError
from planner.geometry.grid import GeoBox, TileGrid, TileIndex, Window, utm_crs, utm_zone

pytestmark = pytest.mark.unit


def _geobox(height: int, width: int) -> GeoBox:
    return GeoBox("EPSG:32631", (0.5, 0.0, 300000.0, 0.0, -0.5, 4800000.0), height, width)


@given(
    height=st.integers(1, 300),
    width=st.integers(1, 300),
    tile_h=st.integers(1, 64),
    tile_w=st.integers(1, 64),
    margin=st.integers(0, 9),
)
def test_tiles_partition_the_geobox(
    height: int, width: int, tile_h: int, tile_w: int, margin: int
) -> None:
    grid = TileGrid(_geobox(height, width), tile_h, tile_w, margin)
    cover = np.zeros((height, width), dtype=np.int32)
    for idx in grid.tiles():
        core = grid.window(idx)
        cover[core.slices()] += 1
        padded = grid.padded_window(idx)
        # the padded window holds the core and stays inside the geobox and the margin
        assert padded.intersection(core) == core
        assert padded.row_off >= max(0, core.row_off - margin)
        assert padded.col_stop <= min(width, core.col_stop + margin)
        assert padded.row_off >= 0 and padded.row_stop <= height
    assert cover.min() == 1 and cover.max() == 1
    assert len(list(grid.tiles())) == len(grid)


def test_small_grid_matches_the_drawing() -> None:
    grid = TileGrid(_geobox(5, 7), 2, 3, margin=1)
    assert grid.shape == (3, 3)
    assert grid.window(TileIndex(2, 2)) == Window(4, 6, 1, 1)
    assert grid.padded_window(TileIndex(1, 1)) == Window(1, 2, 4, 5)


@given(st.integers(0, 499), st.integers(0, 299))
def test_xy_and_rowcol_are_inverse(row: int, col: int) -> None:
    box = GeoBox("EPSG:32631", (0.5, 0.1, 300000.0, -0.05, -0.5, 4800000.0), 500, 300)
    x, y = box.xy(row, col)
    r, c = box.rowcol(x, y)
    assert abs(float(r) - row) < 1e-6 and abs(float(c) - col) < 1e-6


def test_tile_geobox_pixels_are_the_parent_pixels() -> None:
    box = _geobox(100, 80)
    grid = TileGrid(box, 32, 32)
    idx = TileIndex(2, 1)
    sub = grid.tile_geobox(idx)
    core = grid.window(idx)
    np.testing.assert_allclose(sub.xy(0, 0), box.xy(core.row_off, core.col_off))
    assert (sub.height, sub.width) == (core.height, core.width)


def test_from_bounds_snaps_and_covers() -> None:
    box = GeoBox.from_bounds("EPSG:32631", 1001.2, 2000.1, 1099.9, 2049.7, 2.0)
    left, bottom, right, top = box.bounds
    assert left <= 1001.2 and bottom <= 2000.1 and right >= 1099.9 and top >= 2049.7
    assert left % 2.0 == 0.0 and top % 2.0 == 0.0


@given(
    st.lists(st.floats(-50, 50), min_size=1, max_size=20),
    st.lists(st.floats(-50, 50), min_size=1, max_size=20),
    st.floats(0, 5),
)
def test_bounding_window_contains_its_points(rows: list[float], cols: list[float], m: float) -> None:
    n = min(len(rows), len(cols))
    win = Window.bounding(rows[:n], cols[:n], margin_px=m)
    assert win.contains(rows[:n], cols[:n]).all()
    # and is tight: one pixel less on any side loses a point (without margin)
    tight = Window.bounding(rows[:n], cols[:n])
    assert tight.height <= np.ptp(rows[:n]) + 2 and tight.width <= np.ptp(cols[:n]) + 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Window(0, 0, -1, 3), "negative"),
        (lambda: GeoBox("EPSG:4326", (1, 0, 0, 0, 0, 0), 2, 2), "singular"),
        (lambda: GeoBox("", (1, 0, 0, 0, -1, 0), 2, 2), "crs is empty"),
        (lambda: TileGrid(_geobox(4, 4), 0, 2), "tile size"),
        (lambda: TileGrid(_geobox(4, 4), 2, 2).window(TileIndex(5, 0)), "outside"),
        (lambda: GeoBox.from_bounds("EPSG:32631", 5, 0, 1, 1, 1.0), "empty"),
    ],
)
def test_bad_grids_are_clear_errors(call: object, message: str) -> None:
    with pytest.raises(GridError, match=message):
        call()  # type: ignore[operator]


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (5.3, 60.4, "EPSG:32632"),      # Bergen: Norway exception (31 by the 6-degree rule)
        (180.0, 0.0, "EPSG:32660"),     # the closed east edge of zone 60, not zone 1
        (180.0, -10.0, "EPSG:32760"),
        (-180.0, 0.0, "EPSG:32601"),
        (15.6, 78.2, "EPSG:32633"),     # Svalbard exception
        (2.9, 60.4, "EPSG:32631"),      # west of the Norway exception
        (31.13, 29.98, "EPSG:32636"),   # Giza
    ],
)
def test_one_utm_rule_for_planner_and_ops(lon: float, lat: float, expected: str) -> None:
    from ops.raster.crs import utm_crs as ops_utm_crs

    assert utm_crs(lon, lat) == expected
    assert ops_utm_crs(lon, lat) == expected


@given(st.floats(-180.0, 180.0), st.floats(-80.0, 84.0))
def test_planner_and_ops_agree_on_every_utm_zone(lon: float, lat: float) -> None:
    from ops.raster.crs import utm_crs as ops_utm_crs

    zone = utm_zone(lon, lat)
    assert 1 <= zone <= 60
    assert ops_utm_crs(lon, lat) == utm_crs(lon, lat)


def test_outside_utm_is_a_grid_error() -> None:
    with pytest.raises(GridError, match=r"\(0.0, 85.0\).*polar"):
        utm_zone(0.0, 85.0)
