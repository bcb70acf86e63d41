"""Fusion of the DSM tiles of several stereo pairs over one grid into one DSM tile.

Model
-----
Pair p measures, in cell c, ``h_p(c) = h(c) + b_p + e_p(c)``: the true
height, a vertical bias ``b_p`` of the pair (its two RPCs' pointing errors
along the epipolar lines; about +/- 2 m per pair on real Pléiades triplets,
for CARS as for eochain) and an error ``e_p`` that is mostly small noise,
sometimes a blunder. Pairs are not equally precise: a height's error is the
disparity's divided by the base-to-height ratio, so a pair's weight is
``(B/H)²`` (inverse variance), and a height the pair interpolated (support
count 0) weighs ``INTERPOLATED_WEIGHT`` of a measured one. The matching
confidence (NCC) is not a weight: NCC falls with texture and with the
views' difference in perspective, not with the height's error in a way a
weight can use; weighting by it, by the NCC over the pair's median NCC,
or by that to the 4th or 16th power, raised the triplet's fused NMAD
(seed 11 at 400 px: 0.0730 m without, 0.0738 with NCC, 0.0740 and
0.0754 with its powers), on every case measured (below).

1. **Offsets** (:func:`estimate_offsets`): the consensus of a cell is the
   median of the pairs' heights; ``b_p`` is the median of ``h_p - consensus``
   over the cells at least two pairs measured, and the consensus is taken
   again from the de-biased heights (twice). The offsets are then shifted so
   that their weighted mean is zero: fusion does not move the surface as a
   whole, it stops pairs from disagreeing (a common bias needs ground control,
   which no pair has). Offsets are a property of the product, not of a tile:
   the caller estimates them once (on a sample) and passes them to every
   tile, so that tiles do not step at their edges.
2. **Per cell** (:func:`fuse_tiles`): the weighted median ``m`` of the
   de-biased heights; heights within ``tolerance`` of ``m`` are inliers, the
   rest blunders; the fused height is the weighted mean of the inliers.
   ``tolerance`` is ``max(min_tolerance_m, 3 x NMAD)`` of the de-biased
   heights around their cell's median, over the tile. A cell where fewer
   than two pairs agree stays nodata, a cell only one pair saw included,
   and so does one where the agreeing pairs weigh less than half of all
   the pairs (their pair weights, whether or not the others saw the cell).
   On the synthetic triplet of ``tests/integration/test_stereo_multiview.py``,
   lone heights of any pair were 18 % blunders (|error - median| > 3 m)
   against 0.4 % where all three pairs agreed; session 3 kept the best
   pair's measured lone heights (fused blunder share 0.90 %, best pair
   alone 1.64 %). Once the pairs' own filters improved (5 x 5 blocks, NCC
   >= 0.5), those lone heights were still 4 % blunders and the best pair
   alone had fewer blunders than the fusion (0.52 % against 0.56 %); with
   two pairs required: 0.43 %, NMAD 0.0932 -> 0.0909 m (best pair 0.0946
   m), coverage 55.5 -> 54.3 % of the grid (best pair 56.9 %). Once the
   pairs' support check and inward border fill (:mod:`ops.stereo.matching`,
   :mod:`ops.stereo.rasterize`) had removed most of what they disagree on,
   the cells the strong pair (B/H 0.45) left empty and the two weak ones
   (0.225) agreed on were 3.9 % blunders (62 of 1597 cells, against 0.03 %
   where the strong pair had a height; every two pairs of a triplet share
   a view, and with it that view's occlusions): the weighted majority
   drops them. Fused / best pair, NMAD and blunder share (seed 11, 400
   and 600 px; seed 21, 400 px): without it 0.0747 / 0.0746 m and 0.082 /
   0.055 %, 0.0748 / 0.0826 m and 0.043 / 0.050 %, 0.0693 / 0.0691 m and
   0.085 / 0.085 %; with it 0.0738 m and 0.029 %, 0.0742 m and 0.031 %,
   0.0689 m and 0.086 % (seed 21's remaining blunders are roof-edge cells
   all three pairs rasterise alike), for 0.7 % of the grid's coverage.
   Weights (B/H)^4 instead of (B/H)² (without the majority) gave 0.0687 m
   on seed 21 at 400 px but 0.0792 m on seed 11 at 600 px: not kept.

Why fusing a triplet gains little (session 5, against the truth, on the
synthetic triplet of the test, seeds 11 and 21 at 400 px, seed 11 at 600
px). With independent errors, the inverse-variance mean of pairs weighing
4:1:1 would cut the best pair's NMAD by 18 %; measured, even the best
linear mean with the truth's own error covariance (generalised least
squares, weights 0.68 / 0.18 / 0.14) cuts it by 2 % on the cells all three
pairs measured (0.0726 -> 0.0712 m; seed 21 0.0672 -> 0.0663 m). The pairs'
errors are not independent: every two pairs share a view, and an error of
a view's image position (its noise, its resampling, its texture's
aliasing) enters both pairs through it. In a symmetric triplet (views at
parallax factors -k, 0, +k) the mean of the two narrow pairs is then
exactly the wide pair for those errors (``(h01 + h12) / 2 = h02``): the
middle view adds nothing to a height's slope fit, and only the pairs' own
matching errors (SGM's decisions, windows distorted by perspective) can
average out. Measured covariances (m², seed 11): the two narrow pairs
-0.0062 (a shared view entering with opposite signs), wide with narrow
+0.0046 and +0.0060; solved for per-view and per-pair parts, 65 % of the
wide pair's error variance is per view; its own part (0.0029) and the
narrow pairs' (0.0122, 0.0125: 4.2 times more, as (B/H)² weights assume) are what
fusion averages, a bound of about 6 % in std. ``NMAD(e02 - (e01 + e12) /
2)`` is 0.080 m where independent errors would give 0.133 m. Fused NMAD /
blunder share (whole grid; best pair 0.0746 m 0.055 %, 0.0691 m 0.085 %,
0.0826 m 0.050 %): with NCC weights and interpolated heights at 0.1,
0.0738 m 0.029 %, 0.0689 m 0.086 %, 0.0742 m 0.031 %; without NCC and at
0.5 (now), 0.0730 m 0.030 %, 0.0684 m 0.086 %, 0.0739 m 0.031 %, coverage
unchanged (interpolated at 1.0: 0.0729, 0.0683, 0.0739 m; at 0.1: 0.0735,
0.0687, 0.0740 m); after the rim-plane hole fill
(:mod:`ops.stereo.rasterize`), best pair / fused 0.0746 / 0.0730 m,
0.0688 / 0.0683 m, 0.0825 / 0.0739 m. The inlier tolerance at 0.5 m instead of 1 m gave 0.0725 m but cost 0.6 % of
the grid: not kept (real pairs are noisier). What fusion does buy is the
removal of a pair's bias and blunders, which the pairs do not share.

Bands of the result (a :class:`~ops.stereo.pair.DsmTile`): height, supporting
points (the sum over the inlier pairs; 0 = interpolated by every inlier) and
confidence (the inliers' weighted mean NCC). :class:`FusionStats` counts the
pairs that agree per cell.

In a campaign DAG this is the fusion stage: its inputs are the pair tiles of
the same output tile (``pair tiles -> fusion tile``), its parameters the
pair weights and offsets fixed at planning time; it reads nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ops.errors import StereoError
from ops.evaluation.stereo_eval import NMAD_FACTOR
from ops.stereo.pair import DsmTile

FloatArray = NDArray[np.float64]

#: Weight of a height a pair interpolated, relative to a measured one (their errors'
#: NMAD is 1.1 to 1.8 times the measured ones', seeds 11 and 21 of the test triplet).
INTERPOLATED_WEIGHT = 0.5
#: Consensus/offset rounds.
OFFSET_ROUNDS = 2
#: Fewest cells measured by a pair and another one for its offset to be estimated.
MIN_COMMON_CELLS = 100


@dataclass(frozen=True, slots=True)
class FusionStats:
    """What fusion found: per-pair offsets used (m), agreeing pairs per cell, tolerance."""

    offsets_m: tuple[float, ...]
    n_agreeing: NDArray[np.uint8]
    tolerance_m: float


def _stack(tiles: Sequence[DsmTile]) -> tuple[FloatArray, FloatArray]:
    if not tiles:
        raise StereoError("fusion of no tile; expected the tiles of at least one pair")
    shapes = {t.height_m.shape for t in tiles}
    if len(shapes) != 1:
        raise StereoError(f"fusion of tiles of shapes {sorted(shapes)}; expected one grid")
    heights = np.stack([t.height_m.astype(np.float64) for t in tiles])
    measured = np.stack([t.count > 0 for t in tiles])
    return heights, measured.astype(np.float64)


def _cell_weights(tiles: Sequence[DsmTile], pair_weights: Sequence[float]) -> FloatArray:
    w = []
    for tile, pw in zip(tiles, pair_weights, strict=True):
        support = np.where(tile.count > 0, 1.0, INTERPOLATED_WEIGHT)
        w.append(pw * support * np.isfinite(tile.height_m))
    return np.stack(w).astype(np.float64)


def estimate_offsets(tiles: Sequence[DsmTile], pair_weights: Sequence[float]) -> tuple[float, ...]:
    """Each pair's vertical offset against the consensus (weighted mean offset 0)."""
    heights, measured = _stack(tiles)
    h = np.where(measured > 0, heights, np.nan)
    offsets = np.zeros(len(tiles))
    common = np.isfinite(h).sum(axis=0) >= 2
    ones = np.ones_like(h)
    for _ in range(OFFSET_ROUNDS):
        consensus = _weighted_median(h - offsets[:, None, None], ones)
        for p in range(len(tiles)):
            d = (h[p] - consensus)[common & np.isfinite(h[p])]
            if d.size >= MIN_COMMON_CELLS:
                offsets[p] = float(np.median(d))
    w = np.asarray(pair_weights, np.float64)
    offsets -= float(np.sum(w * offsets) / np.sum(w))
    return tuple(float(o) for o in offsets)


def _weighted_median(values: FloatArray, weights: FloatArray) -> FloatArray:
    """Weighted median along axis 0 (NaN values carry no weight); NaN where none."""
    v = np.where(np.isfinite(values), values, np.inf)
    order = np.argsort(v, axis=0)
    v_sorted = np.take_along_axis(v, order, axis=0)
    w_sorted = np.take_along_axis(np.where(np.isfinite(values), weights, 0.0), order, axis=0)
    cum = np.cumsum(w_sorted, axis=0)
    total = cum[-1]
    idx = np.argmax(cum >= 0.5 * total[None], axis=0)
    med = np.take_along_axis(v_sorted, idx[None], axis=0)[0]
    return np.where((total > 0) & np.isfinite(med), med, np.nan)


def fuse_tiles(
    tiles: Sequence[DsmTile],
    pair_weights: Sequence[float],
    offsets_m: Sequence[float] | None = None,
    *,
    min_tolerance_m: float = 1.0,
) -> tuple[DsmTile, FusionStats]:
    """The fused DSM tile of several pairs' tiles of one output tile (see the module doc)."""
    if len(pair_weights) != len(tiles):
        raise StereoError(f"{len(tiles)} pair tiles but {len(pair_weights)} pair weights; "
                          "expected one weight per pair")
    if any(not (w > 0) for w in pair_weights):
        raise StereoError(f"pair weights {list(pair_weights)}; expected positive numbers")
    heights, _ = _stack(tiles)
    offsets = (estimate_offsets(tiles, pair_weights) if offsets_m is None
               else tuple(float(o) for o in offsets_m))
    if len(offsets) != len(tiles):
        raise StereoError(f"{len(offsets)} offsets for {len(tiles)} pair tiles; expected one each")
    values = heights - np.asarray(offsets)[:, None, None]
    weights = _cell_weights(tiles, pair_weights)
    med = _weighted_median(values, weights)
    dev = np.abs(values - med[None])
    finite_dev = dev[np.isfinite(dev) & (np.isfinite(values).sum(axis=0) >= 2)[None]]
    spread = NMAD_FACTOR * float(np.median(finite_dev)) if finite_dev.size else 0.0
    tolerance = max(min_tolerance_m, 3.0 * spread)
    inlier = np.isfinite(values) & (dev <= tolerance)
    n_in = inlier.sum(axis=0)
    # two agreeing pairs or nothing: lone heights, even the best pair's, were
    # 4 % blunders against 0.5 % overall; and those pairs must weigh at least
    # half of all the pairs: two weak pairs agreeing where the strong one
    # found nothing agreed on 4 % blunders (module docstring)
    pw = np.asarray(pair_weights, np.float64)
    w_agree = np.tensordot(pw, inlier.astype(np.float64), axes=1)
    keep = (n_in >= 2) & (w_agree >= 0.5 * float(pw.sum()))
    w_in = np.where(inlier, weights, 0.0)
    w_sum = w_in.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        fused = np.where(keep & (w_sum > 0),
                         np.nansum(np.where(inlier, values * w_in, 0.0), axis=0) / w_sum, np.nan)
        conf_stack = np.stack([np.nan_to_num(t.confidence) for t in tiles]).astype(np.float64)
        conf = np.where(np.isfinite(fused), (conf_stack * w_in).sum(axis=0) / w_sum, np.nan)
    counts = np.stack([t.count.astype(np.int64) for t in tiles])
    count = np.where(np.isfinite(fused), np.where(inlier, counts, 0).sum(axis=0), 0)
    out = DsmTile(
        fused.astype(np.float32), np.minimum(count, np.iinfo(np.uint16).max).astype(np.uint16),
        conf.astype(np.float32), sum(t.n_matches for t in tiles),
        None if np.isfinite(fused).any() else "no cell where the pairs agree",
    )
    stats = FusionStats(offsets, np.where(keep, n_in, 0).astype(np.uint8), tolerance)
    return out, stats
