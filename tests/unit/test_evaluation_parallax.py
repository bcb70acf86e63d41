"""The truth-free DSM check's pure parts: parallax map, implied height error, surface offset."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

from ops.errors import StereoError
from ops.evaluation.parallax import (
    global_parallax,
    implied_height_error,
    measure_parallax,
    surface_offset,
)


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=shape)
    return ndi.gaussian_filter(noise, 1.2)


def test_parallax_recovers_a_known_subpixel_shift_with_radiometric_change() -> None:
    base = _texture((140, 150))
    shift = (0.37, -5.71)
    # right(x + p) = left(x): the right image is the left one moved by +p
    right = 3.0 * ndi.shift(base, shift, order=3, mode="nearest") + 10.0
    right[:, :6] = np.nan  # no data on a strip weighs nothing
    centre = global_parallax(base, right)
    assert centre == (0, -6)
    pmap = measure_parallax(base, right, step_px=10, window_px=21, search_px=2, centre_px=centre)
    ok = pmap.measured
    assert ok.mean() > 0.8
    assert np.median(pmap.d_row_px[ok]) == pytest.approx(shift[0], abs=0.02)
    assert np.median(pmap.d_col_px[ok]) == pytest.approx(shift[1], abs=0.02)
    assert np.percentile(np.abs(pmap.d_col_px[ok] - shift[1]), 90) < 0.05


def test_implied_height_error_splits_along_and_across_the_base() -> None:
    base = _texture((100, 100), seed=1)
    # a 2 m error with v = (0, 0.5) px/m moves the right ortho by 1 px along columns;
    # 0.2 px along rows is across the base: an epipolar residual, no height error
    right = ndi.shift(base, (0.2, 1.0), order=3, mode="nearest")
    pmap = measure_parallax(base, right, step_px=12)
    v = np.full(pmap.d_row_px.shape, 0.5)
    err = implied_height_error(pmap, np.zeros_like(v), v)
    ok = pmap.measured
    assert np.median(err.dh_m[ok]) == pytest.approx(2.0, abs=0.05)
    assert np.median(err.across_px[ok]) == pytest.approx(-0.2, abs=0.03)
    with pytest.raises(StereoError, match="zero base"):
        implied_height_error(pmap, np.zeros_like(v), np.zeros_like(v))


def test_surface_offset_recovers_a_planimetric_shift_of_the_surface() -> None:
    rows, cols = np.mgrid[0:60, 0:60].astype(float)
    h = 30.0 * np.sin(rows / 9.0) + 20.0 * np.cos(cols / 7.0)
    gr, gc = np.gradient(h)
    dh = 0.4 - 0.5 * gr - 1.5 * gc  # the surface sits (0.5, 1.5) cells off, 0.4 m high
    dh[::17, ::13] += 25.0  # blunders
    fit = surface_offset(dh, gr, gc)
    assert (fit.dz_m, fit.row_cells, fit.col_cells) == pytest.approx((0.4, 0.5, 1.5), abs=1e-6)
    assert fit.row_se_cells < 1e-6
    noisy = surface_offset(dh + np.random.default_rng(2).normal(0.0, 0.2, dh.shape), gr, gc)
    assert noisy.col_cells == pytest.approx(1.5, abs=4 * noisy.col_se_cells)
    assert 0.0 < noisy.col_se_cells < 0.1
