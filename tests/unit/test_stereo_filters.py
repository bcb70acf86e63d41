"""Blunder filters, sub-pixel estimation and multi-pair fusion of the stereo kernel, on small arrays.

Each filter gets a case it must act on and one it must leave alone: a lone
spike against a slope, a roof edge; a hole in a plane against a hole beside
a step. Fusion gets pairs with known biases and a blunder.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ops.errors import StereoError
from ops.stereo.dsm_fusion import estimate_offsets, fuse_tiles
from ops.stereo.matching import (
    MatchingConfig,
    match,
    median_deviation,
    remove_small_components,
    to_grey_levels,
)
from ops.stereo.pair import DsmTile
from ops.stereo.rasterize import (
    fill_edges,
    fill_small_holes,
    rasterize_points,
    remove_outliers,
    remove_small_clusters,
)
from planner.geometry.grid import GeoBox

pytestmark = pytest.mark.unit


def _pair_with_varying_disparity(seed: int = 1) -> tuple[np.ndarray, ...]:
    """A textured pair whose true disparity sweeps every sub-pixel fraction.

    right(i, j) = left(i, j + s(i, j)) with s smooth, so the left pixel j
    matches right pixel j - d with d(j) = s(j - d) (solved by resampling s).
    """
    rng = np.random.default_rng(seed)
    h, w = 240, 320
    left_f = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.0)
    rows, cols = np.indices((h, w), dtype=np.float32)
    s = (2.0 + 3.0 * cols / w + 0.5 * np.sin(rows / 40.0)).astype(np.float32)
    right_f = cv2.remap(left_f, cols + s, rows, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    right_f = right_f + rng.normal(0.0, 0.003, right_f.shape).astype(np.float32)
    d_true = cv2.remap(s, cols - s, rows, cv2.INTER_LINEAR)
    return left_f, np.asarray(right_f, np.float32), d_true


def _disparity_rmse(subpixel: str) -> float:
    left_f, right_f, d_true = _pair_with_varying_disparity()
    lo, hi = float(left_f.min()), float(left_f.max())
    left, valid_l = to_grey_levels(left_f, lo, hi)
    right, valid_r = to_grey_levels(right_f, lo, hi)
    disp = match(left, right, valid_l, valid_r, -2, 10, MatchingConfig(subpixel=subpixel))
    err = (disp.disparity_px - d_true)[10:-10, 20:-20]
    assert np.isfinite(err).mean() > 0.95
    return float(np.sqrt(np.nanmean(err**2)))


def test_sub_pixel_methods_beat_the_parabola_of_sgbm() -> None:
    # measured: SGBM's parabola 0.123 px RMSE (pixel locking), half-pixel
    # shift cancellation and the NCC refinement about half of it
    sgbm = _disparity_rmse("sgbm")
    assert sgbm > 0.09
    for method in ("halfshift", "ncc"):
        assert _disparity_rmse(method) < 0.75 * sgbm


def _fourier_shifted_pair(d_true: np.ndarray, noise: float,
                          seed: int) -> tuple[np.ndarray, ...]:
    """A textured pair whose rows are shifted by ``d_true`` (one value per row) exactly.

    The shift is a phase ramp in Fourier space, so no interpolation kernel
    of the matcher's own family made the right image.
    """
    rng = np.random.default_rng(seed)
    h, w = d_true.size, 320
    left = cv2.GaussianBlur(rng.random((h, w)), (0, 0), 1.0)
    ramp = np.exp(2j * np.pi * np.fft.rfftfreq(w)[None, :] * d_true[:, None])
    right = np.fft.irfft(np.fft.rfft(left, axis=1) * ramp, n=w, axis=1)
    right = right + rng.normal(0.0, noise, right.shape)
    lo, hi = float(left.min()), float(left.max())
    return (*to_grey_levels(left.astype(np.float32), lo, hi),
            *to_grey_levels(right.astype(np.float32), lo, hi))


def test_default_sub_pixel_refinement_removes_the_half_shift_bias() -> None:
    # measured, bias of the worst tenth-of-a-pixel band / NMAD (px): SGBM
    # 0.213 / 0.167, half-pixel shift 0.088 / 0.056, shifts of thirds 0.058 /
    # 0.049, default (thirds + NCC) 0.011 / 0.030
    d_true = np.repeat(3.0 + np.arange(10) / 10.0, 20)
    left, valid_l, right, valid_r = _fourier_shifted_pair(d_true, 0.004, seed=2)

    def bias_and_nmad(subpixel: str, phases: int = 3) -> tuple[float, float]:
        disp = match(left, right, valid_l, valid_r, 0, 8,
                     MatchingConfig(subpixel=subpixel, shift_phases=phases))
        err = (disp.disparity_px - d_true[:, None])[:, 30:-30]
        assert np.isfinite(err).mean() > 0.95
        band_bias = [abs(float(np.nanmedian(band))) for band in np.split(err, 10)]
        return max(band_bias), float(1.4826 * np.nanmedian(np.abs(err - np.nanmedian(err))))

    assert MatchingConfig().subpixel == "halfshift+ncc"
    bias_hs, nmad_hs = bias_and_nmad("halfshift", phases=2)
    bias_thirds, _ = bias_and_nmad("halfshift")
    bias, nmad = bias_and_nmad("halfshift+ncc")
    assert bias_hs > 0.07
    assert bias_thirds < 0.8 * bias_hs
    assert bias < 0.025
    assert nmad < 0.8 * nmad_hs


def test_smoothed_refinement_quiets_neighbouring_disparities() -> None:
    # measured on a noisy pair (constant disparity 3.3 px): neighbours differ
    # by 0.064 px (median) with per-pixel corrections, 0.045 px averaged over 9 x 9
    left, valid_l, right, valid_r = _fourier_shifted_pair(np.full(200, 3.3), 0.04, seed=5)
    spread, rmse = [], []
    for smooth_px in (1, 9):
        d = match(left, right, valid_l, valid_r, 0, 8,
                  MatchingConfig(refine_smooth_px=smooth_px)).disparity_px[:, 30:-30]
        spread.append(float(np.nanmedian(np.abs(np.diff(d, axis=1)))))
        rmse.append(float(np.sqrt(np.nanmean((d - 3.3) ** 2))))
    assert spread[1] < 0.85 * spread[0]
    assert rmse[1] < rmse[0]


def test_matching_config_refuses_an_even_smoothing_window() -> None:
    with pytest.raises(StereoError, match="refine_smooth_px"):
        MatchingConfig(refine_smooth_px=4)
    with pytest.raises(StereoError, match="refine_ncc_power"):
        MatchingConfig(refine_ncc_power=-1.0)


def test_smoothed_refinement_keeps_less_where_the_windows_matched_poorly() -> None:
    from ops.stereo.matching import _smoothed_refinement

    disparity = np.full((40, 40), 2.0, np.float32)
    disparity[0, 0] = np.nan
    refined = disparity + np.float32(0.1)
    ncc_first = np.full((40, 40), 0.95, np.float32)
    ncc_first[:, 20:] = 0.5  # the right half's windows differ
    plain = _smoothed_refinement(disparity, refined, ncc_first, 5, 0.0)
    faded = _smoothed_refinement(disparity, refined, ncc_first, 5, 4.0)
    assert np.isnan(plain[0, 0]) and np.isnan(faded[0, 0])
    np.testing.assert_allclose(plain[10:30, 5:35], 2.1, atol=1e-6)
    np.testing.assert_allclose(faded[20, 5:15], 2.0 + 0.1 * 0.95**4, atol=1e-6)
    np.testing.assert_allclose(faded[20, 25:35], 2.0 + 0.1 * 0.5**4, atol=1e-6)


def _occluding_square() -> tuple[np.ndarray, ...]:
    """A pair where a raised square (disparity 10) hides ground (disparity 2) from the right view.

    The 8 columns of ground left of the square, in the left image, have no
    counterpart in the right one: any disparity found there is invented.
    """
    rng = np.random.default_rng(3)
    h, w = 160, 240
    bg, fg = (cv2.GaussianBlur(rng.random((h, w + 40)).astype(np.float32), (0, 0), 1.0)
              for _ in range(2))
    r0, r1, c0, c1 = 40, 120, 100, 160
    left = bg[:, :w].copy()
    left[r0:r1, c0:c1] = fg[r0:r1, c0:c1]
    right = bg[:, 2 : w + 2].copy()
    cols = np.arange(w)
    on_square = cols[(cols + 10 >= c0) & (cols + 10 < c1)]
    right[r0:r1, on_square] = fg[r0:r1, on_square + 10]
    right += rng.normal(0.0, 0.003, right.shape).astype(np.float32)
    occluded = np.zeros((h, w), bool)
    occluded[r0:r1, c0 - 8 : c0] = True
    truth = np.full((h, w), 2.0)
    truth[r0:r1, c0:c1] = 10.0
    lo, hi = float(left.min()), float(left.max())
    return (*to_grey_levels(left, lo, hi), *to_grey_levels(right, lo, hi), occluded, truth)


def test_cross_check_drops_occluded_matches_and_keeps_visible_ones() -> None:
    left, valid_l, right, valid_r, occluded, truth = _occluding_square()
    # measured: 26 % of the occluded pixels keep a disparity without the
    # second pass, 13 % with it; 86 % of the visible ones stay valid either way
    alone, checked = (match(left, right, valid_l, valid_r, 0, 16,
                            MatchingConfig(cross_check_px=px)) for px in (0.0, 1.0))
    assert checked.valid[occluded].mean() < 0.6 * alone.valid[occluded].mean()
    assert checked.valid[~occluded].mean() > 0.98 * alone.valid[~occluded].mean()
    wrong = np.abs(checked.disparity_px - truth) > 1.0
    assert wrong[checked.valid & ~occluded].mean() < 0.01


def test_discontinuity_check_drops_weak_matches_at_the_edge_only() -> None:
    left, valid_l, right, valid_r, _, truth = _occluding_square()
    band = np.zeros(truth.shape, bool)  # the square's edges, +/- 10 px
    band[30:130, 90:170] = True
    band[50:110, 110:150] = False
    # measured: 199 wrong matches (|error| > 1 px) without the check, 121
    # with it; nothing changes away from the edges
    alone, checked = (match(left, right, valid_l, valid_r, 0, 16,
                            MatchingConfig(edge_window_px=px)) for px in (0, 5))
    wrong = [np.abs(d.disparity_px - truth) > 1.0 for d in (alone, checked)]
    assert (wrong[1] & checked.valid).sum() < 0.7 * (wrong[0] & alone.valid).sum()
    np.testing.assert_array_equal(checked.valid[~band], alone.valid[~band])


def test_matching_config_refuses_an_even_discontinuity_window() -> None:
    with pytest.raises(StereoError, match="edge_window_px"):
        MatchingConfig(edge_window_px=4)


def test_support_check_drops_matches_where_the_neighbours_failed() -> None:
    left_f, right_f, d_true = _pair_with_varying_disparity()
    # a patch of the right view that shows something else: whatever matches
    # there matches by chance, among neighbours that did not
    noise = cv2.GaussianBlur(np.random.default_rng(7).random(left_f.shape).astype(np.float32),
                             (0, 0), 1.0)
    patch = np.zeros(left_f.shape, bool)
    patch[60:180, 100:220] = True
    right_f = np.where(patch, noise, right_f).astype(np.float32)
    lo, hi = float(left_f.min()), float(left_f.max())
    left, valid_l = to_grey_levels(left_f, lo, hi)
    right, valid_r = to_grey_levels(right_f, lo, hi)
    inside = np.zeros(patch.shape, bool)
    inside[70:170, 115:205] = True
    outside = np.ones(patch.shape, bool)
    outside[50:190, 90:230] = False
    outside[:10] = outside[-10:] = outside[:, :20] = outside[:, -20:] = False
    # measured: 30 % of the patch's pixels keep a (chance) match without the
    # check, 3 % with it; every pixel away from the patch keeps its match
    alone, checked = (match(left, right, valid_l, valid_r, -2, 10,
                            MatchingConfig(support_window_px=px)) for px in (0, 9))
    assert checked.valid[inside].mean() < 0.25 * alone.valid[inside].mean()
    assert checked.valid[outside].mean() > 0.99
    wrong = np.abs(checked.disparity_px - d_true) > 1.0
    assert wrong[checked.valid].mean() < 0.02


def test_matching_config_refuses_an_even_support_window() -> None:
    with pytest.raises(StereoError, match="support_window_px"):
        MatchingConfig(support_window_px=8)
    with pytest.raises(StereoError, match="min_support"):
        MatchingConfig(min_support=1.5)


def test_border_fill_grows_across_the_band_not_along_it() -> None:
    """Ground beside a building that the overlap's border cuts, its roof unmatched.

    The band is the 8 rows along the top border; the building covers
    columns 20-29 from the border down to row 20, with no height. The
    ground fills the band above itself; above the building it must not.
    """
    h = np.zeros((40, 50), np.float32)
    h[:8] = np.nan
    h[:20, 20:30] = np.nan
    allowed = np.zeros(h.shape, bool)
    allowed[:8] = True
    depth = np.arange(1.0, 41.0)[:, None] * np.ones((1, 50))
    filled = fill_edges(h, allowed, depth, rings=8)
    assert filled[:8, :20].all() and filled[:8, 30:].all()
    assert not filled[:, 20:30].any()
    assert np.all(h[:8, :20] == 0.0)


def test_matching_config_refuses_a_negative_cross_check() -> None:
    with pytest.raises(StereoError, match="cross_check_px"):
        MatchingConfig(cross_check_px=-1.0)


def test_matching_config_refuses_an_unknown_sub_pixel_method() -> None:
    with pytest.raises(StereoError, match="subpixel"):
        MatchingConfig(subpixel="spline")


def test_median_deviation_flags_a_spike_not_a_slope() -> None:
    d = np.tile(np.linspace(0.0, 5.0, 30, dtype=np.float32), (20, 1))
    d[10, 10] += 4.0
    d[3, 3] = np.nan
    dev = median_deviation(d)
    assert dev[10, 10] > 3.0
    others = np.ones(d.shape, bool)
    others[9:12, 9:12] = False
    assert np.nanmax(dev[others]) < 0.5
    assert np.isnan(dev[3, 3])


def test_small_disparity_components_are_removed_large_ones_kept() -> None:
    d = np.full((40, 40), 2.0, np.float32)
    d[5:8, 5:8] = 9.0  # a 9-pixel blob at another disparity
    remove_small_components(d, min_px=20, max_step_px=1.0)
    assert np.isnan(d[5:8, 5:8]).all()
    assert np.isfinite(d).sum() == 40 * 40 - 9


def test_small_height_clusters_go_surfaces_stay() -> None:
    rows = np.mgrid[0:60, 0:60][0]
    h = (0.3 * rows).astype(np.float32)  # a slope: 0.3 m per cell
    h[30:45, 30:45] += 12.0  # a 225-cell roof
    h[5:8, 40:43] += 8.0  # a 9-cell blunder
    h[50, 5] = np.nan
    dropped = remove_small_clusters(h, min_cells=50, max_step_m=1.0)
    assert dropped == 9 and np.isnan(h[5:8, 40:43]).all()
    assert np.isfinite(h[30:45, 30:45]).all()


def test_outliers_go_step_edges_stay() -> None:
    h = np.zeros((30, 30), np.float32)
    h[:, 15:] = 10.0  # a step edge (a wall)
    h[7, 5] = 6.0  # a spike
    n = remove_outliers(h, window_cells=5, max_deviation_m=3.0, min_neighbours=8)
    assert n == 1 and np.isnan(h[7, 5])
    assert np.isfinite(np.delete(h.ravel(), 7 * 30 + 5)).all()


@pytest.mark.parametrize("quantum_m", [0.0, 0.25])
def test_outliers_are_judged_by_the_window_median(quantum_m: float) -> None:
    """The filter agrees cell by cell with numpy's nanmedian of each window.

    Heights on a 0.25 m lattice with a 0.5 m deviation put many medians
    exactly on the threshold (the filter's exact path, not its counting).
    """
    rng = np.random.default_rng(7)
    rows, cols = np.mgrid[0:60, 0:70]
    h = 0.1 * rows + 2.0 * np.sin(cols / 9.0) + rng.normal(0.0, 0.2, (60, 70))
    h[rng.random(h.shape) < 0.05] += 12.0
    if quantum_m:
        h = np.round(h / quantum_m) * quantum_m
    h[rng.random(h.shape) < 0.3] = np.nan
    h = h.astype(np.float32)
    padded = np.pad(h, 2, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5)).reshape(*h.shape, 25)
    n = np.isfinite(windows).sum(-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        median = np.nanmedian(windows, axis=-1).astype(np.float32)
        expected = np.isfinite(h) & (n > 8) & (np.abs(h - median) > np.float32(0.5))
    got = h.copy()
    assert remove_outliers(got, window_cells=5, max_deviation_m=0.5, min_neighbours=8) == (
        expected.sum())
    assert 50 < expected.sum() < h.size // 4
    np.testing.assert_array_equal(np.isnan(got), np.isnan(h) | expected)


def test_a_gap_is_filled_between_points_not_beside_them() -> None:
    # row 2 is empty: its cells have points above and below and are filled;
    # cells of column 3, beside a block of points on their left only, stay empty
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, 7.0), 7, 7)
    rows, cols = np.mgrid[0:7, 0:7]
    keep = (rows != 2) & (cols < 3)
    x, y = box.xy(rows[keep], cols[keep])
    out = rasterize_points(box, x, y, np.full(x.size, 5.0), np.ones(x.size))
    assert np.isfinite(out.height_m[2, 0:2]).all()
    assert out.height_m[2, 1] == pytest.approx(5.0)
    assert np.isnan(out.height_m[:, 3]).all()


def test_holes_are_filled_only_where_their_rim_lies_on_a_plane() -> None:
    rows, cols = np.mgrid[0:40, 0:40]
    h = (0.5 * rows + 0.25 * cols).astype(np.float32)
    h[20:, 20:] += 10.0  # a roof in one corner
    h[8:11, 8:11] = np.nan  # in the plane: supported
    h[19:22, 19:22] = np.nan  # on the roof's corner: two levels around it
    filled = fill_small_holes(h, max_hole_cells=20, max_rim_residual_m=1.0)
    assert filled[8:11, 8:11].all() and np.isfinite(h[8:11, 8:11]).all()
    assert np.isnan(h[19:22, 19:22]).all() and not filled[19:22, 19:22].any()


def test_a_gap_between_roof_and_ground_is_not_averaged() -> None:
    box = GeoBox("EPSG:32631", (1.0, 0.0, 0.0, 0.0, -1.0, 5.0), 5, 5)
    rows, cols = np.mgrid[0:5, 0:5]
    keep = ~((rows == 2) & (cols == 2))
    x, y = box.xy(rows[keep], cols[keep])
    h = np.where(cols[keep] >= 2, 12.0, 0.0)  # roof from column 2 on
    out = rasterize_points(box, x, y, h, np.ones_like(h), max_fill_spread_m=2.0)
    assert np.isnan(out.height_m[2, 2])
    flat = rasterize_points(box, x, y, np.zeros_like(h), np.ones_like(h), max_fill_spread_m=2.0)
    assert flat.height_m[2, 2] == 0.0


def _tile(height: np.ndarray, confidence: float = 0.9) -> DsmTile:
    ok = np.isfinite(height)
    return DsmTile(height.astype(np.float32), np.where(ok, 2, 0).astype(np.uint16),
                   np.where(ok, confidence, np.nan).astype(np.float32), int(ok.sum()))


def test_fusion_removes_pair_biases_and_outvotes_a_blunder() -> None:
    rng = np.random.default_rng(3)
    truth = rng.uniform(100.0, 120.0, (40, 50))
    biases = (1.5, -2.0, 0.5)
    heights = [truth + b + rng.normal(0.0, 0.2, truth.shape) for b in biases]
    heights[1][10:14, 10:14] += 25.0  # a blunder of pair 1
    heights[2][:, :5] = np.nan  # pair 2 does not see the left edge
    tiles = [_tile(h) for h in heights]
    weights = (1.0, 1.0, 1.0)
    offsets = estimate_offsets(tiles, weights)
    # the biases, up to their common (weighted) mean: 0 here
    assert np.allclose(offsets, biases, atol=0.05)
    fused, stats = fuse_tiles(tiles, weights, offsets)
    err = fused.height_m - truth
    assert np.isfinite(fused.height_m).all()
    assert np.abs(err).max() < 1.0  # the blunder is outvoted
    assert np.std(err) < 0.2  # averaging reduces the noise of one pair (0.2 m)
    assert (stats.n_agreeing[10:14, 10:14] == 2).all() and stats.n_agreeing[20, 20] == 3
    assert (fused.count[20, 20], fused.count[12, 12]) == (6, 4)


def test_fusion_leaves_cells_without_a_majority_empty() -> None:
    a = np.full((20, 20), 10.0)
    b = a.copy()
    b[5, 5] = 30.0  # two pairs, disagreeing: no majority
    fused, _ = fuse_tiles([_tile(a), _tile(b)], (1.0, 1.0), (0.0, 0.0))
    assert np.isnan(fused.height_m[5, 5])
    assert np.isfinite(fused.height_m).sum() == 399


def test_a_cell_one_pair_saw_is_left_empty_even_from_the_best_pair() -> None:
    best, weak = np.full((20, 20), 10.0), np.full((20, 20), 10.0)
    best[2:4, 2:4] = np.nan  # only the weak pair saw these
    weak[12:14, 12:14] = np.nan  # only the best pair saw these
    fused, _ = fuse_tiles([_tile(best), _tile(weak)], (4.0, 1.0), (0.0, 0.0))
    assert np.isnan(fused.height_m[2:4, 2:4]).all()
    assert np.isnan(fused.height_m[12:14, 12:14]).all()
    assert np.isfinite(fused.height_m).sum() == 400 - 8


def test_fusion_refuses_mismatched_inputs() -> None:
    t = _tile(np.zeros((4, 4)))
    with pytest.raises(StereoError, match="weight"):
        fuse_tiles([t, t], (1.0,))
    with pytest.raises(StereoError, match="shapes"):
        fuse_tiles([t, _tile(np.zeros((5, 4)))], (1.0, 1.0))
    with pytest.raises(StereoError, match="positive"):
        fuse_tiles([t, t], (1.0, 0.0))


def test_dsm_command_checks_images_and_pairs(tmp_path: Path) -> None:
    from scheduler.cli.dsm import dsm

    image = tmp_path / "a.tif"
    image.write_bytes(b"")
    out = str(tmp_path / "dsm.tif")
    one = CliRunner().invoke(dsm, [str(image), "--dem", str(image), "-o", out])
    assert one.exit_code == 2 and "expected two or more" in one.output
    bad = CliRunner().invoke(dsm, [str(image)] * 3 + ["--pairs", "0-3", "--dem", str(image),
                                                      "-o", out])
    assert bad.exit_code == 2 and "0..2" in bad.output
    text = CliRunner().invoke(dsm, [str(image)] * 3 + ["--pairs", "0+1", "--dem", str(image),
                                                       "-o", out])
    assert text.exit_code == 2 and "I-J" in text.output


def test_constant_terrain_is_a_flat_prior_with_bounds() -> None:
    from ops.stereo.initial_terrain import ConstantTerrain

    t = ConstantTerrain(80.0, 40.0, 220.0, source="ties")
    assert t.heights(np.zeros((2, 3)), np.zeros((2, 3))).tolist() == [[80.0] * 3] * 2
    assert t.min_max(31.0, 29.0, 31.1, 29.1) == (40.0, 220.0)
    with pytest.raises(StereoError, match="low <= height <= high"):
        ConstantTerrain(10.0, 40.0, 220.0)
