"""Quality measures of a DSM: coverage, agreement with a reference, self-consistency.

* **NMAD** (normalised median absolute deviation, 1.4826 * median |e - median e|)
  of height differences: the robust standard deviation used for DSM accuracy
  (Höhle & Höhle, "Accuracy assessment of digital elevation models by means
  of robust statistical methods", ISPRS J. 2009).
* **Agreement with a coarse DEM** (SRTM): the DSM is averaged into the DEM's
  cells (block mean over the DSM cells whose centre falls in each DEM cell,
  at least half of them valid) before differencing, since a 0.5 m surface
  and a 30 m one only compare at the coarse resolution.
* **Coregistration** (:func:`coregistration_shift`): the planimetric shift
  of the reference that minimises the NMAD of the differences, by a
  coarse-to-fine grid search (bilinear shifts), as held-out DSMs are
  judged after coregistration (demcompare's Nuth & Kääb shift + vertical
  offset). Two DSMs of the same surface whose RPCs place it apart by a
  fraction of a metre differ on slopes by slope x offset.
* **Self-consistency NCC**: both views are resampled onto the DSM's grid
  through the DSM itself (project each cell's 3-D point into each image,
  bilinear); if the surface is right the two orthos coincide, so their
  normalised cross-correlation over the measured cells rises with the
  DSM's quality. With the initial DEM in place of the DSM it gives the
  baseline to beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.ndimage as ndi
from numpy.typing import ArrayLike, NDArray

from ops.errors import StereoError
from ops.raster.crs import lonlat_transformer
from ops.sensor.rpc import RpcModel
from planner.geometry.grid import GeoBox

FloatArray = NDArray[np.float64]

NMAD_FACTOR = 1.4826


def nmad(errors: ArrayLike) -> float:
    """Normalised median absolute deviation of the finite values."""
    e = np.asarray(errors, dtype=np.float64)
    e = e[np.isfinite(e)]
    if e.size == 0:
        raise StereoError("NMAD of an empty set of height differences; expected valid cells")
    return float(NMAD_FACTOR * np.median(np.abs(e - np.median(e))))


@dataclass(frozen=True, slots=True)
class Agreement:
    """Height differences DSM - reference over the compared cells."""

    n_cells: int
    median_m: float
    nmad_m: float
    rmse_m: float


def agreement(dsm_m: ArrayLike, reference_m: ArrayLike) -> Agreement:
    """Median, NMAD and RMSE of ``dsm - reference`` where both are finite."""
    diff = np.asarray(dsm_m, np.float64) - np.asarray(reference_m, np.float64)
    diff = diff[np.isfinite(diff)]
    if diff.size == 0:
        raise StereoError("no cell where both the DSM and the reference are valid")
    return Agreement(
        int(diff.size), float(np.median(diff)), nmad(diff), float(np.sqrt(np.mean(diff**2)))
    )


def block_mean(
    dsm_m: NDArray[np.floating], dsm_box: GeoBox, coarse: GeoBox, min_valid: float = 0.5
) -> FloatArray:
    """Mean of the DSM cells whose centres fall in each coarse cell (NaN below ``min_valid``)."""
    rows, cols = np.mgrid[0 : dsm_box.height, 0 : dsm_box.width]
    x, y = dsm_box.xy(rows, cols)
    if dsm_box.crs != coarse.crs:
        lon, lat = lonlat_transformer(dsm_box.crs).transform(x, y)
        x, y = lonlat_transformer(coarse.crs, inverse=True).transform(lon, lat)
    r, c = coarse.rowcol(x, y)
    ri, ci = np.floor(r + 0.5).astype(np.int64), np.floor(c + 0.5).astype(np.int64)
    inside = (ri >= 0) & (ri < coarse.height) & (ci >= 0) & (ci < coarse.width)
    cell = ri[inside] * coarse.width + ci[inside]
    h = np.asarray(dsm_m, np.float64)[inside]
    ok = np.isfinite(h)
    n = coarse.height * coarse.width
    total = np.bincount(cell, minlength=n).astype(np.float64)
    n_ok = np.bincount(cell[ok], minlength=n).astype(np.float64)
    s = np.bincount(cell[ok], weights=h[ok], minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where((total > 0) & (n_ok >= min_valid * total), s / n_ok, np.nan)
    return mean.reshape(coarse.shape)


def _sample(image: NDArray[np.generic], rows: FloatArray, cols: FloatArray) -> FloatArray:
    """Bilinear samples of a whole image at (rows, cols); NaN outside it."""
    img = np.asarray(image, np.float64)
    out = ndi.map_coordinates(img, [rows, cols], order=1, mode="constant", cval=np.nan)
    inside = (rows >= 0) & (rows <= img.shape[0] - 1) & (cols >= 0) & (cols <= img.shape[1] - 1)
    return np.where(inside, out, np.nan)


def self_consistency_ncc(
    dsm_m: NDArray[np.floating],
    geobox: GeoBox,
    left: RpcModel,
    left_image: NDArray[np.generic],
    right: RpcModel,
    right_image: NDArray[np.generic],
) -> float:
    """NCC of the two views resampled onto ``geobox`` through the surface ``dsm_m``.

    ``dsm_m`` holds ellipsoidal heights (NaN cells are skipped); the images
    are whole raw images (window (0, 0)).
    """
    rows, cols = np.mgrid[0 : geobox.height, 0 : geobox.width]
    x, y = geobox.xy(rows, cols)
    lon, lat = lonlat_transformer(geobox.crs).transform(x, y)
    h = np.asarray(dsm_m, np.float64)
    ok = np.isfinite(h)
    if not ok.any():
        raise StereoError("self-consistency of an empty DSM; expected measured cells")
    r_l, c_l = left.project(lon[ok], lat[ok], h[ok], check=False)
    r_r, c_r = right.project(lon[ok], lat[ok], h[ok], check=False)
    a = _sample(left_image, r_l, c_l)
    b = _sample(right_image, r_r, c_r)
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 2:
        raise StereoError("self-consistency: fewer than 2 cells seen by both views")
    return float(np.corrcoef(a[both], b[both])[0, 1])


@dataclass(frozen=True, slots=True)
class Coregistration:
    """The reference's shift (cells, + = towards higher rows / columns) and the NMADs."""

    row_cells: float
    col_cells: float
    nmad_m: float
    nmad_unshifted_m: float


def _shifted_nmad(dsm: FloatArray, reference: FloatArray, valid: NDArray[np.bool_],
                  row: float, col: float) -> float:
    shifted = ndi.shift(reference, (row, col), order=1, mode="nearest")
    inside = ndi.shift(valid.astype(np.float64), (row, col), order=1, mode="constant") > 0.999
    diff = (dsm - shifted)[inside & np.isfinite(dsm)]
    return nmad(diff) if diff.size else math.inf


def coregistration_shift(dsm_m: ArrayLike, reference_m: ArrayLike, *,
                         max_shift_cells: float = 2.0) -> Coregistration:
    """The shift of ``reference_m`` (same grid as ``dsm_m``) minimising the NMAD of the difference.

    Grid search: steps of half a cell up to ``max_shift_cells``, then of an
    eighth around the best. NaN cells are skipped on both sides.
    """
    dsm = np.asarray(dsm_m, np.float64)
    ref = np.asarray(reference_m, np.float64)
    if dsm.shape != ref.shape:
        raise StereoError(f"coregistration of grids {dsm.shape} and {ref.shape}; expected one grid")
    valid = np.isfinite(ref)
    if not (valid & np.isfinite(dsm)).any():
        raise StereoError("no cell where both the DSM and the reference are valid")
    filled = np.where(valid, ref, np.nanmean(ref))
    best = (_shifted_nmad(dsm, filled, valid, 0.0, 0.0), 0.0, 0.0)
    unshifted = best[0]
    for step, reach in ((0.5, max_shift_cells), (0.125, 0.5)):
        r0, c0 = best[1], best[2]
        offsets = np.arange(-reach, reach + 1e-9, step)
        for dr in offsets:
            for dc in offsets:
                value = _shifted_nmad(dsm, filled, valid, r0 + dr, c0 + dc)
                if value < best[0]:
                    best = (value, float(r0 + dr), float(c0 + dc))
    return Coregistration(best[1], best[2], best[0], unshifted)
