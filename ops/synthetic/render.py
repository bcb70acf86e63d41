"""Fields, DEM sampling and ray-cast rendering for the synthetic scene generator.

Rendering one view (``render_view``) goes in blocks of 256 rows (the TIFF
tile height) and at most 4096 columns, so memory is bounded by the block, not
the image. For a block:

1. a node grid every 32 pixels (covering the block) is localised exactly by
   the inverse RPC at a bottom and a top height bracketing the DEM, and the
   nodes are taken to the UTM CRS;
2. the DEM window under the block's rays is read from ``dem.tif``, with its
   running max/min over the rays' horizontal reach (scipy's max/min filters);
3. :func:`~ops.synthetic.kernels.march_rays` finds each pixel's first surface
   hit, the texture is sampled there, gain and noise are applied, and the
   block is written.

Between the nodes the sight line's ground position is bilinear in (row, col)
and linear in height: both are smooth to far below 1e-3 px at 32 px spacing
(the tests check that the RPC maps each hit back to its pixel).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window as RioWindow
from scipy.ndimage import maximum_filter, minimum_filter

from ops.errors import GeometryError, RasterReadError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_fit import localize_rpc
from ops.synthetic.kernels import bilinear, march_rays, octave_sum

FloatArray = NDArray[np.float64]

BLOCK_ROWS = 256
BLOCK_COLS = 1024
NODE_STEP_PX = 32


def fractal_noise(rng: np.random.Generator, n: int, *, beta: float) -> FloatArray:
    """A periodic n x n array, power spectrum ~ f^-beta, band-limited below 1/4 cycle per
    cell, zero mean, scaled so max |value| = 1. ``n`` must be a power of two (the
    sampler wraps indices with a bit mask)."""
    if n < 8 or n & (n - 1):
        raise GeometryError(f"fractal_noise: n = {n}, expected a power of two >= 8")
    white = rng.standard_normal((n, n))
    fy = np.fft.fftfreq(n)[:, None]
    fx = np.fft.rfftfreq(n)[None, :]
    f = np.hypot(fx, fy)
    with np.errstate(divide="ignore"):
        amp = np.where(f > 0.0, f ** (-beta / 2.0), 0.0)
    amp *= np.clip((0.25 - f) / 0.07, 0.0, 1.0)
    arr = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(n, n))
    arr -= arr.mean()
    return np.ascontiguousarray(arr / np.abs(arr).max())


def band_limit(arr: FloatArray, cutoff: float = 0.25) -> FloatArray:
    """``arr`` (periodic) with its spectrum tapered to zero at ``cutoff`` cycles per cell."""
    n_r, n_c = arr.shape
    f = np.hypot(np.fft.fftfreq(n_r)[:, None], np.fft.rfftfreq(n_c)[None, :])
    taper = np.clip((cutoff - f) / (0.28 * cutoff), 0.0, 1.0)
    return np.asarray(np.fft.irfft2(np.fft.rfft2(arr) * taper, s=arr.shape))


def parcels(rng: np.random.Generator, n: int, *, parcel_cells: int) -> FloatArray:
    """Periodic n x n 'fields and roofs': random flat squares of ``parcel_cells`` cells,
    band-limited like :func:`fractal_noise`, zero mean, max |value| = 1."""
    if n % parcel_cells:
        raise GeometryError(f"parcels: n = {n} is not a multiple of parcel_cells = {parcel_cells}")
    coarse = rng.uniform(-1.0, 1.0, (n // parcel_cells, n // parcel_cells))
    arr = band_limit(np.kron(coarse, np.ones((parcel_cells, parcel_cells))).astype(np.float64))
    arr -= arr.mean()
    return np.ascontiguousarray(arr / np.abs(arr).max())


@dataclass(frozen=True, slots=True, eq=False)
class ScalarField:
    """mean + sum_k weight[k] * cubic(array, rotate(angle[k]) (x, y) / cell_m[k] + offset[k])."""

    array: FloatArray
    mean: float
    angle_rad: tuple[float, ...]
    cell_m: tuple[float, ...]
    off_u: tuple[float, ...]
    off_v: tuple[float, ...]
    weight: tuple[float, ...]

    def __post_init__(self) -> None:
        n_r, n_c = self.array.shape
        if n_r & (n_r - 1) or n_c & (n_c - 1):
            raise GeometryError(
                f"ScalarField array shape {self.array.shape}, expected powers of two"
            )
        sizes = {len(self.angle_rad), len(self.cell_m), len(self.off_u), len(self.off_v),
                 len(self.weight)}
        if len(sizes) != 1:
            raise GeometryError(
                "ScalarField angle_rad, cell_m, off_u, off_v and weight must have one "
                f"entry per octave; got lengths {sorted(sizes)}"
            )

    def sample(self, x: Any, y: Any) -> FloatArray:
        """The field at UTM points (any shape; the result has that shape)."""
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
        shape = np.broadcast_shapes(xa.shape, ya.shape)
        xf = np.ascontiguousarray(np.broadcast_to(xa, shape).ravel())
        yf = np.ascontiguousarray(np.broadcast_to(ya, shape).ravel())
        angles = np.asarray(self.angle_rad)
        out = octave_sum(
            self.array, xf, yf, np.cos(angles), np.sin(angles), np.asarray(self.cell_m),
            np.asarray(self.off_u), np.asarray(self.off_v), np.asarray(self.weight),
        )
        return (self.mean + out).reshape(shape)

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "angle_rad": list(self.angle_rad),
                "cell_m": list(self.cell_m), "off_u": list(self.off_u),
                "off_v": list(self.off_v), "weight": list(self.weight),
                "array_shape": list(self.array.shape)}

    @classmethod
    def from_json(cls, doc: dict[str, Any], array: FloatArray) -> ScalarField:
        return cls(
            array=np.ascontiguousarray(array, dtype=np.float64), mean=float(doc["mean"]),
            angle_rad=tuple(doc["angle_rad"]), cell_m=tuple(doc["cell_m"]),
            off_u=tuple(doc["off_u"]), off_v=tuple(doc["off_v"]), weight=tuple(doc["weight"]),
        )


@dataclass(frozen=True, slots=True)
class _DemWindow:
    heights: FloatArray
    left: float
    top: float
    res: float


def _read_dem_window(dem: Any, x: FloatArray, y: FloatArray, pad_cells: int) -> _DemWindow:
    a, _, c, _, e, f = tuple(dem.transform)[:6]
    res = float(a)
    c0 = max(math.floor((float(np.nanmin(x)) - c) / res) - pad_cells, 0)
    c1 = min(math.ceil((float(np.nanmax(x)) - c) / res) + pad_cells + 1, dem.width)
    r0 = max(math.floor((f - float(np.nanmax(y))) / res) - pad_cells, 0)
    r1 = min(math.ceil((f - float(np.nanmin(y))) / res) + pad_cells + 1, dem.height)
    if c1 <= c0 or r1 <= r0:
        return _DemWindow(np.full((1, 1), np.nan), c, f, res)
    heights = dem.read(1, window=RioWindow(c0, r0, c1 - c0, r1 - r0)).astype(np.float64)
    return _DemWindow(heights, c + c0 * res, f + e * r0, res)


def dem_bilinear(dem_path: Path, x: FloatArray, y: FloatArray) -> FloatArray:
    """True heights: the DEM bilinearly interpolated at UTM points; NaN off the DEM."""
    xf = np.ascontiguousarray(np.asarray(x, dtype=np.float64).ravel())
    yf = np.ascontiguousarray(np.asarray(y, dtype=np.float64).ravel())
    if xf.size == 0:
        return np.empty(0)
    try:
        with rasterio.open(dem_path) as dem:
            win = _read_dem_window(dem, xf, yf, 2)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"{dem_path}: cannot read the synthetic DEM ({exc})") from exc
    fc = (xf - win.left) / win.res - 0.5
    fr = (win.top - yf) / win.res - 0.5
    return bilinear(win.heights, np.ascontiguousarray(fr), np.ascontiguousarray(fc))


def _node_axis(lo: float, hi: float) -> FloatArray:
    start = math.floor(lo)
    n = max(2, math.ceil((hi - start) / NODE_STEP_PX) + 1)
    return start + NODE_STEP_PX * np.arange(n, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Nodes:
    """Ground (UTM) of a node grid of image points at the bottom and top heights."""

    row0: float
    col0: float
    bottom_x: FloatArray
    bottom_y: FloatArray
    top_x: FloatArray
    top_y: FloatArray

    def columns(self, c_lo: float, c_hi: float) -> _Nodes:
        """The sub-grid of node columns covering image columns [c_lo, c_hi]."""
        j0 = max(math.floor((c_lo - self.col0) / NODE_STEP_PX), 0)
        j1 = min(math.ceil((c_hi - self.col0) / NODE_STEP_PX) + 1, self.bottom_x.shape[1])
        j1 = max(j1, min(j0 + 2, self.bottom_x.shape[1]))
        cut = slice(j0, j1)
        return _Nodes(
            self.row0, self.col0 + NODE_STEP_PX * j0,
            *(np.ascontiguousarray(a[:, cut])
              for a in (self.bottom_x, self.bottom_y, self.top_x, self.top_y)),
        )


def _locate_nodes(
    rpc: RpcModel, to_utm: Transformer, rows: tuple[float, float], cols: tuple[float, float],
    h_range: tuple[float, float],
) -> _Nodes:
    node_r = _node_axis(*rows)
    node_c = _node_axis(*cols)
    grid_c, grid_r = np.meshgrid(node_c, node_r)
    ends = []
    for h in h_range:
        lon, lat = localize_rpc(rpc, grid_r, grid_c, h)
        x, y = to_utm.transform(lon, lat)
        ends.append(np.ascontiguousarray(x, dtype=np.float64))
        ends.append(np.ascontiguousarray(y, dtype=np.float64))
    return _Nodes(float(node_r[0]), float(node_c[0]), *ends)


def _march(
    nodes: _Nodes, dem: Any, rows: FloatArray, cols: FloatArray, h_range: tuple[float, float]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    bx, by, tx, ty = nodes.bottom_x, nodes.bottom_y, nodes.top_x, nodes.top_y
    res = float(dem.transform.a)
    half_reach_m = 0.5 * float(np.max(np.hypot(tx - bx, ty - by)))
    radius = math.ceil(half_reach_m / res) + 2
    win = _read_dem_window(dem, np.concatenate([bx.ravel(), tx.ravel()]),
                           np.concatenate([by.ravel(), ty.ravel()]), radius + 2)
    size = 2 * radius + 1
    dmax = maximum_filter(win.heights, size=size, mode="nearest")
    dmin = minimum_filter(win.heights, size=size, mode="nearest")
    return march_rays(
        np.ascontiguousarray(rows, dtype=np.float64), np.ascontiguousarray(cols, dtype=np.float64),
        nodes.row0, nodes.col0, float(NODE_STEP_PX), bx, by, tx, ty,
        h_range[0], h_range[1], win.heights, dmax, dmin, win.left, win.top, win.res,
    )


def intersect_rays_utm(
    rpc: RpcModel, dem_path: Path, crs: str, rows: FloatArray, cols: FloatArray,
    h_range: tuple[float, float],
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """First DEM hit (UTM x, y, h) of each image point's sight line (1-D arrays).

    Points are handled in image tiles of ``BLOCK_COLS`` pixels, so scattered points
    over a large image never need more than a tile's DEM window at a time.
    """
    out = np.full((3, rows.size), np.nan)
    ok = np.isfinite(rows) & np.isfinite(cols)
    if not ok.any():
        return out[0], out[1], out[2]
    keep = np.flatnonzero(ok)
    tile_r = np.floor(rows[keep] / BLOCK_COLS).astype(np.int64)
    tile_c = np.floor(cols[keep] / BLOCK_COLS).astype(np.int64)
    key = (tile_r - tile_r.min()) * (int(tile_c.max() - tile_c.min()) + 1) + (tile_c - tile_c.min())
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    to_utm = lonlat_transformer(crs, inverse=True)
    with rasterio.open(dem_path) as dem:
        for group in np.split(keep[order], bounds):
            r, c = rows[group], cols[group]
            nodes = _locate_nodes(rpc, to_utm, (float(r.min()), float(r.max())),
                                  (float(c.min()), float(c.max())), h_range)
            out[:, group] = _march(nodes, dem, r, c, h_range)
    return out[0], out[1], out[2]


def render_view(
    path: Path, rpc: RpcModel, shape: tuple[int, int], dem_path: Path, crs: str,
    texture: ScalarField, h_range: tuple[float, float], *, gain: float, dtype: str,
    noise_sigma: float, noise_seed: tuple[int, int], block_rows: int = BLOCK_ROWS,
) -> int:
    """Render one view through its RPC into a tiled GeoTIFF; return the unresolved pixels."""
    height, width = shape
    to_utm = lonlat_transformer(crs, inverse=True)
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "interleave": "band",
    }
    unresolved = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(GDAL_CACHEMAX=16), rasterio.open(dem_path) as dem, \
                rasterio.open(path, "w", **profile) as dst:
            dst.rpcs = rpc.to_rasterio()
            dst.update_tags(EOCHAIN_SYNTHETIC="view", IMAGE_VALUE=f"{gain} * reflectance")
            for r0 in range(0, height, block_rows):
                nr = min(block_rows, height - r0)
                block = np.empty((nr, width), dtype=np.float64)
                nodes = _locate_nodes(rpc, to_utm, (r0, r0 + nr - 1), (0, width - 1), h_range)
                for c0 in range(0, width, BLOCK_COLS):
                    nc = min(BLOCK_COLS, width - c0)
                    cols, rows = np.meshgrid(np.arange(c0, c0 + nc, dtype=np.float64),
                                             np.arange(r0, r0 + nr, dtype=np.float64))
                    x, y, _ = _march(nodes.columns(c0, c0 + nc - 1), dem, rows.ravel(),
                                     cols.ravel(), h_range)
                    block[:, c0:c0 + nc] = (gain * texture.sample(x, y)).reshape(nr, nc)
                if noise_sigma > 0.0:
                    rng = np.random.default_rng([*noise_seed, r0])
                    block += rng.normal(0.0, noise_sigma, block.shape)
                bad = ~np.isfinite(block)
                unresolved += int(bad.sum())
                block[bad] = 0.0
                if dtype != "float32":
                    info = np.iinfo(np.dtype(dtype))
                    block = np.clip(np.rint(block), info.min, info.max)
                dst.write(block.astype(dtype), 1, window=RioWindow(0, r0, width, nr))
    return unresolved
