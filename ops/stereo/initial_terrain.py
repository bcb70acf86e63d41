"""Initial heights without a DEM: the RPCs' height range, narrowed by tie points.

The stereo kernel needs an initial surface for two things: to rectify the
views (resampling on it removes most of the terrain's parallax) and to bound
the disparity search of each tile (its minimum and maximum). With a DEM it
is only that prior; without one (``eochain dsm`` with no ``--dem``), the
images give it, as CARS does with its low-resolution first pass:

1. **The RPC height range**: both models are valid over ``height_off +/-
   height_scale``; the scene lies in the intersection of the two ranges
   (their union if they do not meet). A flat surface in that range (at the
   level where the views overlap most: two crops may overlap only near the
   right height) is a valid but wide prior: hundreds of metres of search.
2. **Tie points**: the pair is planned on that flat surface and SIFT ties
   are matched on its central sample (the pointing-correction sample) over
   the whole range; each tie's column disparity is a height
   (``h = h_flat + d / (px per m)``). The 2nd and 98th percentiles of these
   heights, widened by ``TIE_MARGIN_M``, bound the surface; their median is
   the flat surface the pair is then rectified on. The tiles' own margins
   (``height_margin_*_m``) still add to that range.

With fewer than ``MIN_TIES`` ties (an image without texture at its centre)
the RPC range is kept: slower (a wider search), never wrong.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import StereoError
from ops.stereo.matching import tie_points
from ops.stereo.pair import StereoConfig, StereoView, central_sample, overlap_lonlat, plan_stereo
from ops.stereo.phase_times import phase

FloatArray = NDArray[np.float64]

#: Flat surfaces tried across the RPC range for the one the views overlap most on.
OVERLAP_LEVELS = 9
#: Fewest tie points for their heights to replace the RPC range.
MIN_TIES = 30
#: Metres added below and above the tie points' height percentiles.
TIE_MARGIN_M = 30.0
#: Percentiles of the tie heights taken as the surface's bounds (outlying ties dropped).
TIE_PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True, slots=True)
class ConstantTerrain:
    """A flat initial surface at ``height_m``, between ``low_m`` and ``high_m`` everywhere."""

    height_m: float
    low_m: float
    high_m: float
    source: str = "RPC height range"

    def __post_init__(self) -> None:
        if not (np.isfinite([self.height_m, self.low_m, self.high_m]).all()
                and self.low_m <= self.height_m <= self.high_m):
            raise StereoError(
                f"initial terrain at {self.height_m} m in [{self.low_m}, {self.high_m}] m; "
                "expected finite heights with low <= height <= high"
            )

    def heights(self, lon: ArrayLike, lat: ArrayLike, *, strict: bool = True) -> FloatArray:
        return np.full(np.broadcast(np.asarray(lon), np.asarray(lat)).shape, self.height_m)

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]:
        return self.low_m, self.high_m


def rpc_terrain(left: StereoView, right: StereoView) -> ConstantTerrain:
    """The flat prior from the two RPCs' height ranges (see the module docstring)."""
    ranges = [(v.rpc.height_off - v.rpc.height_scale, v.rpc.height_off + v.rpc.height_scale)
              for v in (left, right)]
    low, high = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if low > high:
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    # the flat surface on which the views overlap most (crops of two
    # products may overlap only at the right height)
    levels = np.linspace(low, high, OVERLAP_LEVELS)
    seen = [overlap_lonlat(left, right, ConstantTerrain(h, low, high))[0].size for h in levels]
    middle = float(levels[int(np.argmax(seen))])
    return ConstantTerrain(middle, float(low), float(high))


def estimate_terrain(
    left: StereoView, right: StereoView, config: StereoConfig | None = None
) -> ConstantTerrain:
    """The flat prior narrowed by the heights of tie points (see the module docstring)."""
    with phase("initial terrain"):
        return _estimate_terrain(left, right, StereoConfig() if config is None else config)


def _estimate_terrain(left: StereoView, right: StereoView, cfg: StereoConfig) -> ConstantTerrain:
    coarse = rpc_terrain(left, right)
    plan = plan_stereo(left, right, coarse, config=cfg)
    sample = central_sample(plan, coarse)
    if sample is None:
        return coarse
    grey_l, grey_r, valid_l, valid_r, (d_lo, d_hi) = sample
    pts_l, pts_r = tie_points(grey_l, grey_r, d_lo, d_hi, valid_left=valid_l,
                              valid_right=valid_r)
    if len(pts_l) < MIN_TIES:
        return coarse
    heights = coarse.height_m + (pts_l[:, 0] - pts_r[:, 0]) / plan.frame.disparity_px_per_m
    low, mid, high = np.percentile(heights, [TIE_PERCENTILES[0], 50.0, TIE_PERCENTILES[1]])
    return dataclasses.replace(
        coarse, height_m=float(mid), low_m=float(low) - TIE_MARGIN_M,
        high_m=float(high) + TIE_MARGIN_M, source=f"{len(pts_l)} tie points",
    )
