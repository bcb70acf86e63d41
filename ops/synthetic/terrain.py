"""Terrain and reflectance fields, and buildings, for the synthetic scene generator.

* ``make_fields``: the terrain (a 512^2 power-law noise, spectrum ~ f^-3.2, at
  24 m and 3.3 m cells, amplitude ``relief_m / 2``) and the reflectance (a
  1024^2 pink noise, ~ f^-1, plus band-limited flat "parcels" of 32 cells, at
  1, 3.1 and 9.7 texture cells and three orientations, mean 0.4, range within
  [0, 0.8]). Both are :class:`~ops.synthetic.render.ScalarField`, defined
  at any UTM point.
* ``make_buildings``: at most one axis-aligned rectangular building per
  ``cell_m`` cell (probability ``fraction``), 8 m to 3/4 of a cell wide, kept
  4 m inside its cell, with a flat roof ``height_range_m`` above the terrain at
  its centre.
* ``write_dem``: terrain + buildings sampled at the DEM's pixel centres, 512^2
  tiles at a time (bounded memory), into a tiled float32 GeoTIFF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.windows import Window as RioWindow

from ops.synthetic.render import ScalarField, fractal_noise, parcels

FloatArray = NDArray[np.float64]

_DEM_TILE = 512


def make_fields(
    seed: int, *, base_height_m: float, relief_m: float, texture_cell_m: float
) -> tuple[ScalarField, ScalarField, np.random.Generator]:
    """Terrain and texture fields, and a generator for the rest, all from ``seed``."""
    terrain_seq, texture_seq, rest_seq = np.random.SeedSequence(seed).spawn(3)
    trng, xrng = np.random.default_rng(terrain_seq), np.random.default_rng(texture_seq)
    half = 0.5 * relief_m
    terrain = ScalarField(
        array=fractal_noise(trng, 512, beta=3.2),
        mean=base_height_m,
        angle_rad=(0.0, 0.7),
        cell_m=(24.0, 3.3),
        off_u=tuple(float(v) for v in trng.uniform(0, 512, 2)),
        off_v=tuple(float(v) for v in trng.uniform(0, 512, 2)),
        weight=(half * 0.96, half * 0.04),
    )
    cell = texture_cell_m
    texture = ScalarField(
        array=_texture_array(xrng),
        mean=0.4,
        angle_rad=(0.0, 0.61, 1.27),
        cell_m=(cell, 3.1 * cell, 9.7 * cell),
        off_u=tuple(float(v) for v in xrng.uniform(0, 1024, 3)),
        off_v=tuple(float(v) for v in xrng.uniform(0, 1024, 3)),
        weight=(0.14, 0.10, 0.08),
    )
    return terrain, texture, np.random.default_rng(rest_seq)


def _texture_array(rng: np.random.Generator) -> FloatArray:
    noise = fractal_noise(rng, 1024, beta=1.0)
    arr = 0.65 * noise + 0.35 * parcels(rng, 1024, parcel_cells=32)
    arr -= arr.mean()
    return np.ascontiguousarray(arr / np.abs(arr).max())


@dataclass(frozen=True, slots=True)
class Buildings:
    """Building parameters on a grid of cells: origin, cell size, per-cell arrays."""

    x0: float
    y0: float
    cell_m: float
    present: NDArray[np.bool_]
    left: FloatArray
    right: FloatArray
    bottom: FloatArray
    top: FloatArray
    roof_m: FloatArray

    def apply(self, x: FloatArray, y: FloatArray, ground: FloatArray) -> FloatArray:
        """Heights with the buildings: the roof where a point is inside one, else ground."""
        i = np.floor((y - self.y0) / self.cell_m).astype(np.int64)
        j = np.floor((x - self.x0) / self.cell_m).astype(np.int64)
        ok = (i >= 0) & (j >= 0) & (i < self.present.shape[0]) & (j < self.present.shape[1])
        i, j = np.where(ok, i, 0), np.where(ok, j, 0)
        inside = (
            ok & self.present[i, j] & (x >= self.left[i, j]) & (x <= self.right[i, j])
            & (y >= self.bottom[i, j]) & (y <= self.top[i, j])
        )
        return np.where(inside, np.maximum(ground, self.roof_m[i, j]), ground)


def make_buildings(
    rng: np.random.Generator, bounds: tuple[float, float, float, float],
    terrain: ScalarField, *, cell_m: float, fraction: float,
    height_range_m: tuple[float, float],
) -> Buildings:
    """Random buildings over ``bounds`` (left, bottom, right, top) of the UTM CRS."""
    left, bottom, right, top = bounds
    cell = cell_m
    x0, y0 = math.floor(left / cell) * cell, math.floor(bottom / cell) * cell
    n_r, n_c = math.ceil((top - y0) / cell), math.ceil((right - x0) / cell)
    shape = (n_r, n_c)
    margin = 4.0
    width = rng.uniform(8.0, 0.75 * cell - margin, shape)
    depth = rng.uniform(8.0, 0.75 * cell - margin, shape)
    cx = x0 + np.arange(n_c)[None, :] * cell + margin + width / 2 + rng.uniform(
        0.0, 1.0, shape) * (cell - 2 * margin - width)
    cy = y0 + np.arange(n_r)[:, None] * cell + margin + depth / 2 + rng.uniform(
        0.0, 1.0, shape) * (cell - 2 * margin - depth)
    lo, hi = height_range_m
    ground = terrain.sample(cx.ravel(), cy.ravel()).reshape(shape)
    return Buildings(
        x0=x0, y0=y0, cell_m=cell,
        present=rng.uniform(0.0, 1.0, shape) < fraction,
        left=cx - width / 2, right=cx + width / 2, bottom=cy - depth / 2, top=cy + depth / 2,
        roof_m=ground + rng.uniform(lo, hi, shape),
    )


def write_dem(
    path: Path, crs: str, transform: tuple[float, ...], height: int, width: int,
    terrain: ScalarField, buildings: Buildings,
) -> tuple[float, float]:
    """Write the true DEM (north-up ``transform``); return its (min, max) height."""
    a, _, c, _, e, f = transform
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": "float32",
        "crs": crs, "transform": rasterio.Affine(*transform), "nodata": None,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
        "predictor": 3,
    }
    lo, hi = math.inf, -math.inf
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(HEIGHT_REFERENCE="WGS84 ellipsoid", UNITS="m")
        dst.set_band_description(1, "height above the WGS84 ellipsoid (m)")
        for r0 in range(0, height, _DEM_TILE):
            for c0 in range(0, width, _DEM_TILE):
                nr, nc = min(_DEM_TILE, height - r0), min(_DEM_TILE, width - c0)
                cols, rows = np.meshgrid(np.arange(c0, c0 + nc) + 0.5, np.arange(r0, r0 + nr) + 0.5)
                x, y = (a * cols + c).ravel(), (e * rows + f).ravel()
                z = buildings.apply(x, y, terrain.sample(x, y)).astype(np.float32)
                lo, hi = min(lo, float(z.min())), max(hi, float(z.max()))
                dst.write(z.reshape(nr, nc), 1, window=RioWindow(c0, r0, nc, nr))
    return lo, hi
