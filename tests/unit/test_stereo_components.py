"""Pieces of the stereo kernel on small arrays: matching, pointing, rasterisation, triangulation.

The triangulation checks use the exact RPCs of a tiny synthetic pair (the
generator's fitted models), projecting known ground points into both views
and asking for them back.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ops.errors import StereoError
from ops.evaluation.stereo_eval import agreement, nmad
from ops.stereo.epipolar import build_frame
from ops.stereo.matching import MatchingConfig, estimate_row_shift, match, to_grey_levels
from ops.stereo.pair import StereoConfig, StereoView, check_pair
from ops.stereo.rasterize import fill_small_holes, rasterize_points
from ops.stereo.triangulation import triangulate
from ops.synthetic.scene import SceneSpec, SyntheticScene, generate_scene
from planner.geometry.grid import GeoBox

pytestmark = pytest.mark.unit


def _texture(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    """Band-limited random texture (box-blurred noise), float in about [0, 1]."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random(shape).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(noise, (0, 0), 1.2), np.float32)


def _shift_columns(image: np.ndarray, shift_px: float) -> np.ndarray:
    """right(i, j) = image(i, j + shift): a left pixel j appears at j - shift."""
    import cv2

    rows, cols = np.indices(image.shape, dtype=np.float32)
    return np.asarray(
        cv2.remap(image, cols + np.float32(shift_px), rows, cv2.INTER_CUBIC,
                  borderMode=cv2.BORDER_REFLECT),
        np.float32,
    )


def test_match_recovers_a_constant_subpixel_disparity() -> None:
    left_f = _texture((160, 200))
    right_f = _shift_columns(left_f, 3.25)  # left(j) = right(j - 3.25): disparity +3.25
    lo, hi = float(left_f.min()), float(left_f.max())
    left, valid_l = to_grey_levels(left_f, lo, hi)
    right, valid_r = to_grey_levels(right_f, lo, hi)
    disp = match(left, right, valid_l, valid_r, -8, 8, MatchingConfig())
    inner = disp.disparity_px[10:-10, 20:-20]
    assert np.isfinite(inner).mean() > 0.95
    assert abs(float(np.nanmedian(inner)) - 3.25) < 0.1
    assert float(np.nanmedian(disp.confidence)) > 0.9


def test_low_contrast_ground_keeps_its_texture_through_the_8_bit_rounding() -> None:
    """A faint texture (a few grey levels once stretched globally) matches densely and
    precisely only when its local contrast is raised before rounding."""
    base = _texture((160, 200), seed=3)
    # 2 grey levels of standard deviation once stretched globally
    left_f = (0.5 + 0.15 * (base - base.mean())).astype(np.float32)
    right_f = _shift_columns(left_f, 2.4)
    stretch = {"contrast_window_px": 31, "contrast_target_std": 12.0, "contrast_max_gain": 2.0}
    errors = {}
    for name, kw in (("global", {}), ("local", stretch)):
        left, valid_l = to_grey_levels(left_f, 0.0, 1.0, **kw)
        right, valid_r = to_grey_levels(right_f, 0.0, 1.0, **kw)
        inner = match(left, right, valid_l, valid_r, -6, 6, MatchingConfig()).disparity_px[
            10:-10, 20:-20]
        errors[name] = (np.isfinite(inner).mean(), float(np.nanmedian(np.abs(inner - 2.4))))
    assert errors["local"][0] > errors["global"][0] + 0.5  # measured 0.94 against 0.17
    assert errors["local"][1] < 0.5 * errors["global"][1]  # 0.03 px against 0.13 px
    # where the texture is strong, the local stretch changes nothing
    strong, _ = to_grey_levels(base, float(base.min()), float(base.max()), **stretch)
    plain, _ = to_grey_levels(base, float(base.min()), float(base.max()))
    assert np.array_equal(strong, plain)


def test_a_warped_pair_holds_its_true_disparities() -> None:
    from ops.errors import GeometryError
    from ops.synthetic.warp import MARGIN_PX, warped_pair

    texture = 255.0 * _texture((96, 96), seed=5).astype(np.float64)
    pair = warped_pair(texture, 64, noise_sigma=0.0, amplitude_px=1.5, correlation_px=8.0)
    rows, cols = np.indices(pair.left.shape, dtype=np.float32)
    import cv2

    # the right view read at j - d(j) gives the left view back (interpolation error only)
    back = cv2.remap(pair.right, cols - pair.disparity_px, rows, cv2.INTER_CUBIC)
    core = pair.inside & (cols > 4) & (cols < 59)
    assert np.median(np.abs(back - pair.left)[core]) < 0.05 * np.std(pair.left)
    assert np.median(np.abs(back - np.roll(pair.left, 1, axis=1))[core]) > 0.3 * np.std(
        pair.left)  # and a pixel off does not
    with pytest.raises(GeometryError, match=f"{MARGIN_PX} px of margin"):
        warped_pair(texture, 90)


def test_matching_config_refuses_a_gain_below_one() -> None:
    with pytest.raises(StereoError, match="contrast_max_gain"):
        MatchingConfig(contrast_max_gain=0.5)


def test_match_refuses_a_uniform_image() -> None:
    flat = np.full((80, 120), 0.5, np.float32)
    grey, valid = to_grey_levels(flat, 0.0, 1.0)
    disp = match(grey, grey, valid, valid, -4, 4, MatchingConfig())
    assert not disp.valid.any()


def test_match_rejects_an_empty_disparity_range() -> None:
    grey = np.zeros((20, 20), np.uint8)
    ok = np.ones((20, 20), bool)
    with pytest.raises(StereoError, match="disparity range"):
        match(grey, grey, ok, ok, 3, 1, MatchingConfig())


def test_row_shift_of_a_rectified_pair_is_measured() -> None:
    import cv2

    left_f = _texture((300, 300), seed=4)
    rows, cols = np.indices(left_f.shape, dtype=np.float32)
    # right(i, j) = left(i - 0.6, j + 2): features move down 0.6 rows and left 2 columns.
    right_f = cv2.remap(left_f, cols + 2.0, rows - 0.6, cv2.INTER_CUBIC,
                        borderMode=cv2.BORDER_REFLECT)
    left, _ = to_grey_levels(left_f, float(left_f.min()), float(left_f.max()))
    right, _ = to_grey_levels(np.asarray(right_f, np.float32), float(left_f.min()),
                              float(left_f.max()))
    shift, n = estimate_row_shift(left, right, -5, 5)
    assert n >= 20
    assert abs(shift - 0.6) < 0.1


def test_rasterize_means_counts_and_fills_single_gaps() -> None:
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, 5.0), 5, 5)
    rows, cols = np.mgrid[0:5, 0:5]
    keep = ~((rows == 2) & (cols == 2))  # an empty centre cell
    x, y = box.xy(rows[keep], cols[keep])
    h = np.full(x.size, 5.0)
    h[0] = 4.0
    # a second point at cell (0, 0)'s first one, 2 m higher: the cell holds
    # two points and their mean (same place, same weight; neighbours at 5 m)
    x = np.append(x, x[0])
    y = np.append(y, y[0])
    h = np.append(h, 6.0)
    conf = np.ones_like(h)
    out = rasterize_points(box, x, y, h, conf)
    assert out.count[0, 0] == 2 and out.height_m[0, 0] == pytest.approx(5.0)
    # filled from its 3 x 3 neighbourhood, supported by their 8 points
    assert out.count[2, 2] == 8
    assert out.height_m[2, 2] == pytest.approx(5.0)
    assert np.isfinite(out.height_m).all()


def test_rasterize_averages_noise_but_keeps_steps_sharp() -> None:
    """Heights are Gaussian means of the points nearby, within the spread of the cell's own."""
    n = 40
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, float(n)), n, n)
    rows, cols = np.mgrid[0:n, 0:n]
    x, y = box.xy(rows.ravel(), cols.ravel())
    step = np.where(cols.ravel() < n // 2, 0.0, 10.0)  # a 10 m roof edge
    noise = np.random.default_rng(3).normal(0.0, 0.3, x.size)
    out = rasterize_points(box, x, y, step + noise, np.ones(x.size), max_fill_spread_m=2.0)
    err = out.height_m - step.reshape(n, n)
    # every cell on its own side of the edge (the spread keeps roof and ground apart)
    assert np.abs(err).max() < 1.5
    # the noise of a cell's single point, averaged with its neighbours'
    inner = (slice(1, -1), slice(1, n // 2 - 1))
    assert float(np.std(err[inner])) < 0.6 * float(np.std(noise))


def test_rasterize_leaves_large_holes_empty() -> None:
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, 9.0), 9, 9)
    x, y = box.xy(np.array([0, 0]), np.array([0, 1]))
    out = rasterize_points(box, x, y, np.array([1.0, 2.0]), np.ones(2))
    assert np.isfinite(out.height_m).sum() == 2


def test_small_interior_holes_are_filled_large_and_border_ones_kept() -> None:
    rows, cols = np.mgrid[0:40, 0:40]
    height = (0.5 * rows + 0.25 * cols).astype(np.float32)
    truth = height.copy()
    height[10:13, 10:13] = np.nan  # 9 cells, interior: filled
    height[20:35, 20:35] = np.nan  # 225 cells: too big
    height[0:3, 30:33] = np.nan  # touches the border: may continue beyond it
    filled = fill_small_holes(height, max_hole_cells=50)
    assert filled.sum() == 9 and filled[10:13, 10:13].all()
    # a hole takes its rim's plane: on a plane, exact
    assert np.max(np.abs(height[10:13, 10:13] - truth[10:13, 10:13])) <= 1e-4
    assert np.isnan(height[20:35, 20:35]).all() and np.isnan(height[0:3, 30:33]).all()


def test_nmad_and_agreement() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(0.3, 2.0, 200_000)
    assert nmad(e) == pytest.approx(2.0, rel=0.02)
    a = agreement(e + 10.0, np.full_like(e, 10.0))
    assert a.median_m == pytest.approx(0.3, abs=0.03)
    with pytest.raises(StereoError):
        nmad(np.array([np.nan]))


@pytest.fixture(scope="module")
def pair_scene(tmp_path_factory: pytest.TempPathFactory) -> SyntheticScene:
    spec = SceneSpec(width=64, height=64, building_fraction=0.0, seed=2)
    return generate_scene(spec, tmp_path_factory.mktemp("tri"))


def test_coregistration_finds_the_planimetric_shift_between_two_dsms() -> None:
    import scipy.ndimage as ndi

    from ops.evaluation.stereo_eval import coregistration_shift

    rng = np.random.default_rng(3)
    reference = 40.0 * ndi.gaussian_filter(rng.standard_normal((60, 60)), 4.0)  # hills
    dsm = ndi.shift(reference, (0.5, -1.0), order=3, mode="nearest")
    dsm = dsm + rng.normal(0.0, 0.05, dsm.shape)
    reference[:5, :5] = np.nan
    fit = coregistration_shift(dsm, reference)
    assert abs(fit.row_cells - 0.5) <= 0.125 and abs(fit.col_cells + 1.0) <= 0.125
    assert fit.nmad_m < 0.5 * fit.nmad_unshifted_m
    with pytest.raises(StereoError, match="one grid"):
        coregistration_shift(dsm[:10], reference)


def test_triangulation_returns_the_ground_points(pair_scene: SyntheticScene) -> None:
    left, right = pair_scene.rpcs
    lon0, lat0, lon1, lat1 = pair_scene.footprint_lonlat
    rng = np.random.default_rng(5)
    n = 500
    lon = rng.uniform(lon0, lon1, n) * 0.5 + 0.25 * (lon0 + lon1)
    lat = rng.uniform(lat0, lat1, n) * 0.5 + 0.25 * (lat0 + lat1)
    h = rng.uniform(pair_scene.dem_min_m - 5, pair_scene.dem_max_m + 5, n)
    rl, cl = left.project(lon, lat, h)
    rr, cr = right.project(lon, lat, h)
    pts = triangulate(left, right, rl, cl, rr, cr, h + rng.uniform(-5, 5, n))
    assert np.max(np.abs(pts.h_m - h)) < 1e-3
    assert np.max(np.abs(pts.lon - lon)) < 1e-8 and np.max(np.abs(pts.lat - lat)) < 1e-8
    assert np.max(pts.ray_distance_m) < 1e-3
    # the views differ by pitch (along rows): a match one column off the
    # epipolar line shows in the ray distance
    off = triangulate(left, right, rl, cl, rr, cr + 1.0, h)
    assert np.min(off.ray_distance_m) > 0.1


def test_frame_refuses_a_pair_without_base(pair_scene: SyntheticScene) -> None:
    left, right = pair_scene.rpcs
    lon = 0.5 * (pair_scene.footprint_lonlat[0] + pair_scene.footprint_lonlat[2])
    lat = 0.5 * (pair_scene.footprint_lonlat[1] + pair_scene.footprint_lonlat[3])
    h = 0.5 * (pair_scene.dem_min_m + pair_scene.dem_max_m)
    frame = build_frame(left, right, lon, lat, h, pair_scene.crs, 0.5)
    assert frame.base_to_height == pytest.approx(pair_scene.b_over_h(), rel=0.05)
    with pytest.raises(StereoError, match="base-to-height"):
        build_frame(left, left, lon, lat, h, pair_scene.crs, 0.5)


def test_check_pair_refuses_other_sensors_and_distant_dates(pair_scene: SyntheticScene) -> None:
    left = pair_scene.rpcs[0]
    a = StereoView(str(Path("a.tif")), left, (64, 64), (0.0, 1.0), "PHR1A", "2013-02-08T08:36:01")
    cfg = StereoConfig()
    check_pair(a, dataclasses.replace(a, acquired="2013-02-08T08:36:09"), cfg)
    with pytest.raises(StereoError, match="PHR1B"):
        check_pair(a, dataclasses.replace(a, mission="PHR1B"), cfg)
    with pytest.raises(StereoError, match="days apart"):
        check_pair(a, dataclasses.replace(a, acquired="2014-06-01T10:00:00"), cfg)
