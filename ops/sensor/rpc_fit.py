"""Fitting an RPC00B model to any ground-to-image function, and inverting an RPC.

Fit (the "terrain-independent" RPC generation of Tao & Hu, 2001): sample the
exact model on a 3D grid of ground points (lon, lat, h) spanning the validity
box, normalise both sides to [-1, 1], and solve for each image coordinate y

    y = (T . num) / (T . den),   den[0] = 1,  T = the 20 RPC00B monomials,

by linearised least squares: ``T . num - y (T[1:] . den[1:]) = y``. The
linearisation weights each equation by the denominator, so the system is
re-solved with weights ``1 / (T . den)`` from the previous solution (two
passes are plenty for a smooth camera). Columns are scaled to unit norm before
``lstsq``. The fit is then checked on an offset grid (points halfway between
the fitting nodes) and its worst residual in pixels is reported.

Inverse (``localize_rpc``): Newton iterations on (lon, lat) at a fixed height
with a finite-difference Jacobian, starting from an affine fit of the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import GeometryError, RpcDomainError
from ops.sensor.rpc import RpcModel, rpc00b_terms

FloatArray = NDArray[np.float64]
GroundToImage = Callable[[FloatArray, FloatArray, FloatArray], tuple[FloatArray, FloatArray]]


@dataclass(frozen=True, slots=True)
class RpcFit:
    """A fitted RPC and how well it reproduces the exact model on a check grid."""

    model: RpcModel
    max_residual_px: float
    rms_residual_px: float


def _grid(
    lon_range: tuple[float, float],
    lat_range: tuple[float, float],
    h_range: tuple[float, float],
    n_xy: int,
    n_h: int,
    offset: bool,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    def axis(lo: float, hi: float, n: int) -> FloatArray:
        if offset:
            edges = np.linspace(lo, hi, n + 1)
            return np.asarray(0.5 * (edges[1:] + edges[:-1]))
        return np.linspace(lo, hi, n)

    lon, lat, h = np.meshgrid(
        axis(*lon_range, n_xy), axis(*lat_range, n_xy), axis(*h_range, n_h), indexing="ij"
    )
    return lon.ravel(), lat.ravel(), h.ravel()


def _solve_rational(terms: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Numerator (20) and denominator (20, den[0] = 1) with y ~ T.num / T.den."""
    weights = np.ones_like(y)
    num = np.zeros(20)
    den = np.zeros(20)
    den[0] = 1.0
    for _ in range(3):
        a = np.concatenate([terms, -y[:, None] * terms[:, 1:]], axis=1) * weights[:, None]
        b = y * weights
        norms = np.linalg.norm(a, axis=0)
        norms[norms == 0.0] = 1.0
        sol, *_ = np.linalg.lstsq(a / norms, b, rcond=None)
        sol = sol / norms
        num = sol[:20]
        den = np.concatenate([[1.0], sol[20:]])
        weights = 1.0 / (terms @ den)
    return num, den


def fit_rpc(
    project: GroundToImage,
    *,
    lon_range: tuple[float, float],
    lat_range: tuple[float, float],
    h_range: tuple[float, float],
    height: int,
    width: int,
    n_xy: int = 15,
    n_h: int = 7,
    source: str = "<fitted>",
) -> RpcFit:
    """Fit an RpcModel to ``project`` over the box; row/col normalised on the image size."""
    for name, (lo, hi) in (("lon_range", lon_range), ("lat_range", lat_range),
                           ("h_range", h_range)):
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise GeometryError(f"fit_rpc: {name}={(lo, hi)!r}, expected finite lo < hi")
    if n_xy < 5 or n_h < 4:
        raise GeometryError(f"fit_rpc: n_xy={n_xy}, n_h={n_h}; expected n_xy >= 5, n_h >= 4")
    lon_off, lon_scale = 0.5 * (lon_range[0] + lon_range[1]), 0.5 * (lon_range[1] - lon_range[0])
    lat_off, lat_scale = 0.5 * (lat_range[0] + lat_range[1]), 0.5 * (lat_range[1] - lat_range[0])
    h_off, h_scale = 0.5 * (h_range[0] + h_range[1]), 0.5 * (h_range[1] - h_range[0])
    line_off, line_scale = (height - 1) / 2.0, max(height / 2.0, 1.0)
    samp_off, samp_scale = (width - 1) / 2.0, max(width / 2.0, 1.0)

    lon, lat, h = _grid(lon_range, lat_range, h_range, n_xy, n_h, offset=False)
    row, col = project(lon, lat, h)
    terms = np.stack(
        rpc00b_terms((lon - lon_off) / lon_scale, (lat - lat_off) / lat_scale,
                     (h - h_off) / h_scale),
        axis=1,
    )
    line_num, line_den = _solve_rational(terms, (row - line_off) / line_scale)
    samp_num, samp_den = _solve_rational(terms, (col - samp_off) / samp_scale)
    model = RpcModel(
        line_off=line_off, samp_off=samp_off, lat_off=lat_off, lon_off=lon_off,
        height_off=h_off, line_scale=line_scale, samp_scale=samp_scale, lat_scale=lat_scale,
        lon_scale=lon_scale, height_scale=h_scale,
        line_num=tuple(float(v) for v in line_num), line_den=tuple(float(v) for v in line_den),
        samp_num=tuple(float(v) for v in samp_num), samp_den=tuple(float(v) for v in samp_den),
        source=source,
    )
    lon, lat, h = _grid(lon_range, lat_range, h_range, n_xy, n_h, offset=True)
    row, col = project(lon, lat, h)
    row_fit, col_fit = model.project(lon, lat, h)
    err = np.hypot(row_fit - row, col_fit - col)
    return RpcFit(model, float(err.max()), float(np.sqrt(np.mean(err * err))))


def project_rpc(
    model: RpcModel, lon: FloatArray, lat: FloatArray, h: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``model.project`` without checks, in plain numpy: the generator's own evaluation,
    cheaper than a threaded kernel for the small node grids it localises."""
    terms = np.stack(rpc00b_terms(
        (lon - model.lon_off) / model.lon_scale, (lat - model.lat_off) / model.lat_scale,
        (h - model.height_off) / model.height_scale,
    ), axis=-1)
    row = (terms @ np.asarray(model.line_num)) / (terms @ np.asarray(model.line_den))
    col = (terms @ np.asarray(model.samp_num)) / (terms @ np.asarray(model.samp_den))
    return (row * model.line_scale + model.line_off - model.row_origin,
            col * model.samp_scale + model.samp_off - model.col_origin)


def localize_rpc(
    model: RpcModel,
    row: ArrayLike,
    col: ArrayLike,
    h_m: ArrayLike,
    *,
    tol_px: float = 1e-9,
    max_iter: int = 12,
) -> tuple[FloatArray, FloatArray]:
    """Ground (lon, lat) of image points (file pixels, centres integer) at heights ``h_m``.

    Raises RpcDomainError when Newton does not reach ``tol_px`` (point far outside the box).
    """
    r, c, h = np.broadcast_arrays(
        np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64),
        np.asarray(h_m, dtype=np.float64),
    )
    shape = r.shape
    r, c, h = r.ravel(), c.ravel(), h.ravel()
    # affine start: fit (lon, lat) ~ A [row, col, h, 1] on the model's box
    g = np.linspace(-1.0, 1.0, 4)
    gl, gp, gh = (a.ravel() for a in np.meshgrid(g, g, g, indexing="ij"))
    glon = model.lon_off + gl * model.lon_scale
    glat = model.lat_off + gp * model.lat_scale
    gh_m = model.height_off + gh * model.height_scale
    grow, gcol = project_rpc(model, glon, glat, gh_m)
    design = np.stack([grow, gcol, gh_m, np.ones_like(grow)], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.stack([glon, glat], axis=1), rcond=None)
    start = np.stack([r, c, h, np.ones_like(r)], axis=1) @ coef
    lon, lat = start[:, 0].copy(), start[:, 1].copy()
    d_lon, d_lat = 1e-4 * model.lon_scale, 1e-4 * model.lat_scale
    err = np.full(r.shape, np.inf)
    for _ in range(max_iter):
        r0, c0 = project_rpc(model, lon, lat, h)
        r1, c1 = project_rpc(model, lon + d_lon, lat, h)
        r2, c2 = project_rpc(model, lon, lat + d_lat, h)
        j11, j21 = (r1 - r0) / d_lon, (c1 - c0) / d_lon
        j12, j22 = (r2 - r0) / d_lat, (c2 - c0) / d_lat
        er, ec = r - r0, c - c0
        err = np.hypot(er, ec)
        if r.size == 0 or float(err.max()) < tol_px:
            break
        det = j11 * j22 - j12 * j21
        lon = lon + (j22 * er - j12 * ec) / det
        lat = lat + (-j21 * er + j11 * ec) / det
    else:
        r0, c0 = project_rpc(model, lon, lat, h)
        err = np.hypot(r - r0, c - c0)
    if r.size and not float(np.nanmax(err)) < max(tol_px, 1e-6):
        raise RpcDomainError(
            f"{model.source}: inverse RPC did not converge (worst residual "
            f"{float(np.nanmax(err)):.3g} px); points may lie far outside the model's box"
        )
    return lon.reshape(shape), lat.reshape(shape)
