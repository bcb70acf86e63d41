"""The inputs of the stereo operation: its parameters, the two views, and the pair's checks.

A :class:`StereoView` is what the operation needs to know about an image
before reading its pixels: the RPC (found as ``eochain ortho`` finds it),
the shape, a global grey-level stretch (so that every tile turns the image
into 8 bits the same way) and the acquisition tags used to refuse pairs that
cannot give a surface: :func:`check_pair` rejects views of different
missions or taken further apart than ``max_days_apart`` (the ground changes
in between; a uniform image is refused by :func:`open_view`).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import rasterio
from numpy.typing import ArrayLike, NDArray

from ops.errors import RasterReadError, StereoError
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc
from ops.stereo.matching import MatchingConfig

FloatArray = NDArray[np.float64]

#: Longest side (px) of the decimated read used for the grey-level stretch.
STRETCH_SAMPLE_PX = 512


class Terrain(Protocol):
    """The initial DEM: heights (above the ellipsoid) and min/max over a lon/lat box."""

    def heights(self, lon: ArrayLike, lat: ArrayLike, *, strict: bool = True) -> FloatArray: ...

    def min_max(
        self, lon_min: float, lat_min: float, lon_max: float, lat_max: float
    ) -> tuple[float, float]: ...


class Undulation(Protocol):
    """A geoid: undulation N (m) so that h_ellipsoid = H_geoid + N."""

    def undulation(self, lon: ArrayLike, lat: ArrayLike) -> FloatArray: ...


@dataclass(frozen=True, slots=True)
class StereoConfig:
    """Parameters of the stereo operation (see the module docstring)."""

    height_margin_below_m: float = 50.0
    height_margin_above_m: float = 120.0
    context_px: int = 24
    max_ray_distance_m: float = 2.0
    max_days_apart: float = 60.0
    max_hole_area_m2: float = 100.0
    edge_fill_cells: int = 8
    edge_fill_source_spread_m: float = 3.0
    gap_fill_spread_m: float = 2.0
    fill_rim_residual_m: float = 1.0
    outlier_window_cells: int = 5
    outlier_max_m: float = 3.0
    cluster_min_cells: int = 100
    cluster_step_m: float = 1.5
    matching: MatchingConfig = field(default_factory=MatchingConfig)

    def __post_init__(self) -> None:
        for name in ("height_margin_below_m", "height_margin_above_m", "max_ray_distance_m",
                     "max_days_apart", "max_hole_area_m2", "outlier_max_m", "cluster_step_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise StereoError(f"stereo {name} = {value!r}, expected a finite value >= 0")
        for name in ("gap_fill_spread_m", "fill_rim_residual_m", "edge_fill_source_spread_m"):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise StereoError(f"stereo {name} = {value!r}, expected >= 0 (inf: no check)")
        for key in ("context_px", "edge_fill_cells", "outlier_window_cells", "cluster_min_cells"):
            if getattr(self, key) < 0:
                raise StereoError(f"stereo {key} = {getattr(self, key)}, expected >= 0")


@dataclass(frozen=True, slots=True)
class StereoView:
    """One image of the pair: path, RPC, shape, grey-level stretch and acquisition tags."""

    path: str
    rpc: RpcModel
    shape: tuple[int, int]
    grey_range: tuple[float, float]
    mission: str | None = None
    acquired: str | None = None


def _tag(tags: dict[str, str], *names: str) -> str | None:
    for name in names:
        value = tags.get(name)
        if value:
            return value.strip()
    return None


def open_view(path: str | Path, rpc: RpcModel | None = None) -> StereoView:
    """Read what the stereo operation needs about an image (not its pixels).

    The grey-level stretch (0.1 and 99.9 percentiles of a decimated read) is
    global, so that every tile converts to 8 bits the same way. Raises
    StereoError for a uniform image.
    """
    model = find_rpc(path) if rpc is None else rpc
    try:
        with rasterio.open(path) as src:
            shape = (src.height, src.width)
            factor = max(1, math.ceil(max(shape) / STRETCH_SAMPLE_PX))
            sample = src.read(
                1, out_shape=(max(1, shape[0] // factor), max(1, shape[1] // factor))
            ).astype(np.float64)
            nodata = src.nodata
            tags = src.tags()
    except rasterio.errors.RasterioError as exc:
        raise RasterReadError(f"{path}: cannot read the image ({exc})") from exc
    values = sample[np.isfinite(sample)]
    if nodata is not None:
        values = values[values != nodata]
    if values.size == 0:
        raise StereoError(f"{path}: the image holds no valid pixel; expected a textured image")
    low, high = (float(v) for v in np.percentile(values, [0.1, 99.9]))
    if not high > low:
        raise StereoError(
            f"{path}: the image is uniform (99.8% of pixels within {low}..{high}); expected "
            "texture to match, there is no surface to measure"
        )
    mission = _tag(tags, "MISSION")
    if mission is not None:
        mission += _tag(tags, "MISSION_INDEX") or ""
    acquired = _tag(tags, "IMAGING_DATE", "ACQUISITION_DATE")
    if acquired is not None:
        time = _tag(tags, "IMAGING_TIME")
        acquired = f"{acquired}T{time.rstrip('Z')}" if time else acquired
    return StereoView(str(path), model, shape, (low, high), mission, acquired)


def check_pair(left: StereoView, right: StereoView, config: StereoConfig) -> None:
    """Refuse views from different missions or dates too far apart (when tagged)."""
    if left.mission and right.mission and left.mission != right.mission:
        raise StereoError(
            f"{left.path} is from {left.mission}, {right.path} from {right.mission}; expected "
            "two views of one sensor (matching across sensors is not supported)"
        )
    if left.acquired and right.acquired:
        try:
            t_l = dt.datetime.fromisoformat(left.acquired)
            t_r = dt.datetime.fromisoformat(right.acquired)
        except ValueError:
            return
        days = abs((t_l - t_r).total_seconds()) / 86400.0
        if days > config.max_days_apart:
            raise StereoError(
                f"{left.path} ({left.acquired}) and {right.path} ({right.acquired}) are "
                f"{days:.0f} days apart; expected at most {config.max_days_apart:g} (the ground "
                "changes between them; raise max_days_apart to force)"
            )
