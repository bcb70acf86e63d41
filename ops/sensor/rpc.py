"""Rational polynomial camera (RPC) sensor models.

An RPC model maps ground (longitude, latitude, height above the WGS84
ellipsoid) to image (row, col) as ratios of cubic polynomials of the
normalised coordinates, in the RPC00B term order that GDAL and NITF use::

    row = line_scale * P_ln(L, P, H) / P_ld(L, P, H) + line_off
    col = samp_scale * P_sn(L, P, H) / P_sd(L, P, H) + samp_off

with L = (lon - lon_off) / lon_scale, P = (lat - lat_off) / lat_scale,
H = (h - height_off) / height_scale.

Conventions used everywhere in eochain:

* (row, col) are numpy indices: integer values are pixel centres, (0, 0) is
  the centre of the first pixel of the *file* the model is attached to.
  GDAL's RPC transformer reports the same point as pixel/line (0.5, 0.5).
* A crop of a larger product keeps the product's RPC; ``row_origin`` and
  ``col_origin`` give the crop's offset inside the product, so that crop
  pixel (r, c) is product pixel (r + row_origin, c + col_origin).

Algorithms:

* Projection evaluates the 20 monomials once per point and the four
  polynomials from them, in a numba kernel parallel over points (no
  temporaries of size 20 x N). The kernels release the GIL, so tiles
  computed on several threads project and localise side by side.
* Localisation solves ``project(lon, lat, h) = (row, col)`` for (lon, lat)
  at the given h by Newton's method in normalised (L, P) with the analytic
  2 x 2 Jacobian of the two rational functions. The start point comes from
  an affine least-squares fit of the inverse map over the model's box, so a
  few iterations reach 1e-9 pixel.

Agreement with GDAL (``benchmarks/rpc_agreement.py``, ``tests/integration/
test_rpc_gdal.py``): GDAL's exact RPC transformer (no DEM, no approximate
transformer) gives our (row, col) + 0.5 to within 1e-10 pixel on every
fixture. GDAL's own pixel-to-ground iteration stops at
``RPC_PIXEL_ERROR_THRESHOLD``, 0.1 pixel by default; ``localize`` does not
depend on it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import RpcDomainError, RpcFormatError

FloatArray = NDArray[np.float64]

#: Normalised coordinates further than this from the model's box are refused.
VALIDITY_LIMIT = 1.5

#: A denominator smaller than this in absolute value is taken as vanishing.
DENOMINATOR_EPS = 1e-12

#: Newton stops when the image-space step is below this (pixels).
LOCALIZE_TOLERANCE_PX = 1e-9
LOCALIZE_MAX_ITERATIONS = 30

_COEFF_NAMES = ("line_num", "line_den", "samp_num", "samp_den")


def rpc00b_terms(lon_n: FloatArray, lat_n: FloatArray, h_n: FloatArray) -> list[FloatArray]:
    """The 20 RPC00B monomials of normalised (L, P, H), in GDAL/NITF order."""
    L, P, H = lon_n, lat_n, h_n
    return [
        np.ones_like(L), L, P, H, L * P, L * H, P * H, L * L, P * P, H * H,
        P * L * H, L * L * L, L * P * P, L * H * H, L * L * P, P * P * P,
        P * H * H, L * L * H, P * P * H, H * H * H,
    ]


@numba.njit(cache=True, inline="always")
def _poly(c: Any, k: int, L: float, P: float, H: float) -> float:
    return float(
        c[k, 0] + c[k, 1] * L + c[k, 2] * P + c[k, 3] * H + c[k, 4] * L * P
        + c[k, 5] * L * H + c[k, 6] * P * H + c[k, 7] * L * L + c[k, 8] * P * P
        + c[k, 9] * H * H + c[k, 10] * P * L * H + c[k, 11] * L * L * L
        + c[k, 12] * L * P * P + c[k, 13] * L * H * H + c[k, 14] * L * L * P
        + c[k, 15] * P * P * P + c[k, 16] * P * H * H + c[k, 17] * L * L * H
        + c[k, 18] * P * P * H + c[k, 19] * H * H * H
    )


@numba.njit(cache=True, inline="always")
def _poly_dl(c: Any, k: int, L: float, P: float, H: float) -> float:
    return float(
        c[k, 1] + c[k, 4] * P + c[k, 5] * H + 2.0 * c[k, 7] * L + c[k, 10] * P * H
        + 3.0 * c[k, 11] * L * L + c[k, 12] * P * P + c[k, 13] * H * H
        + 2.0 * c[k, 14] * L * P + 2.0 * c[k, 17] * L * H
    )


@numba.njit(cache=True, inline="always")
def _poly_dp(c: Any, k: int, L: float, P: float, H: float) -> float:
    return float(
        c[k, 2] + c[k, 4] * L + c[k, 6] * H + 2.0 * c[k, 8] * P + c[k, 10] * L * H
        + 2.0 * c[k, 12] * L * P + c[k, 14] * L * L + 3.0 * c[k, 15] * P * P
        + c[k, 16] * H * H + 2.0 * c[k, 18] * P * H
    )


@numba.njit(cache=True, parallel=True, nogil=True)
def _project_kernel(lon: Any, lat: Any, h: Any, p: Any, c: Any, row: Any, col: Any) -> None:
    """p = (lon_off, lon_scale, lat_off, lat_scale, h_off, h_scale,
    line_off, line_scale, samp_off, samp_scale); a vanishing denominator gives inf."""
    for i in numba.prange(lon.size):
        L = (lon[i] - p[0]) / p[1]
        P = (lat[i] - p[2]) / p[3]
        H = (h[i] - p[4]) / p[5]
        ld = _poly(c, 1, L, P, H)
        sd = _poly(c, 3, L, P, H)
        if abs(ld) < 1e-12 or abs(sd) < 1e-12:
            row[i] = np.inf
            col[i] = np.inf
        else:
            row[i] = _poly(c, 0, L, P, H) / ld * p[7] + p[6]
            col[i] = _poly(c, 2, L, P, H) / sd * p[9] + p[8]


@numba.njit(cache=True, parallel=True, nogil=True)
def _localize_kernel(
    row: Any, col: Any, h: Any, p: Any, c: Any, a: Any, tol: float, max_iter: int,
    lon: Any, lat: Any,
) -> None:
    """Newton on normalised (L, P); start from the affine fit ``a`` (2 x 4 over
    [1, row_n, col_n, H]); non-converged points get NaN."""
    for i in numba.prange(row.size):
        if not (np.isfinite(row[i]) and np.isfinite(col[i]) and np.isfinite(h[i])):
            lon[i] = np.nan
            lat[i] = np.nan
            continue
        H = (h[i] - p[4]) / p[5]
        rn = (row[i] - p[6]) / p[7]
        cn = (col[i] - p[8]) / p[9]
        L = a[0, 0] + a[0, 1] * rn + a[0, 2] * cn + a[0, 3] * H
        P = a[1, 0] + a[1, 1] * rn + a[1, 2] * cn + a[1, 3] * H
        converged = False
        for _ in range(max_iter):
            ln = _poly(c, 0, L, P, H)
            ld = _poly(c, 1, L, P, H)
            sn = _poly(c, 2, L, P, H)
            sd = _poly(c, 3, L, P, H)
            if abs(ld) < 1e-12 or abs(sd) < 1e-12:
                break
            fr = (ln / ld * p[7] + p[6]) - row[i]
            fc = (sn / sd * p[9] + p[8]) - col[i]
            # d(n/d) = (n' d - n d') / d^2, scaled to pixels
            j00 = (_poly_dl(c, 0, L, P, H) * ld - ln * _poly_dl(c, 1, L, P, H)) / (ld * ld) * p[7]
            j01 = (_poly_dp(c, 0, L, P, H) * ld - ln * _poly_dp(c, 1, L, P, H)) / (ld * ld) * p[7]
            j10 = (_poly_dl(c, 2, L, P, H) * sd - sn * _poly_dl(c, 3, L, P, H)) / (sd * sd) * p[9]
            j11 = (_poly_dp(c, 2, L, P, H) * sd - sn * _poly_dp(c, 3, L, P, H)) / (sd * sd) * p[9]
            det = j00 * j11 - j01 * j10
            if det == 0.0 or not np.isfinite(det):
                break
            dL = (j11 * fr - j01 * fc) / det
            dP = (j00 * fc - j10 * fr) / det
            L -= dL
            P -= dP
            if abs(fr) < tol and abs(fc) < tol:
                converged = True
                break
            if abs(L) > 1e3 or abs(P) > 1e3:
                break
        if converged:
            lon[i] = L * p[1] + p[0]
            lat[i] = P * p[3] + p[2]
        else:
            lon[i] = np.nan
            lat[i] = np.nan


def _flat(values: list[ArrayLike]) -> tuple[tuple[int, ...], list[FloatArray]]:
    """Broadcast, then flatten to contiguous float64 (copies only when needed)."""
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in values))
    shape = arrays[0].shape
    return shape, [np.ascontiguousarray(a).reshape(-1) for a in arrays]


@dataclass(frozen=True, slots=True)
class RpcModel:
    """An RPC00B model, with the crop origin of the file it describes.

    Offsets are 0-based with integer values at pixel centres of the *product*
    (the DIMAP XML value minus one); ``row_origin``/``col_origin`` locate the
    file inside the product.
    """

    line_off: float
    samp_off: float
    lat_off: float
    lon_off: float
    height_off: float
    line_scale: float
    samp_scale: float
    lat_scale: float
    lon_scale: float
    height_scale: float
    line_num: tuple[float, ...]
    line_den: tuple[float, ...]
    samp_num: tuple[float, ...]
    samp_den: tuple[float, ...]
    row_origin: float = 0.0
    col_origin: float = 0.0
    source: str = "<memory>"

    def __post_init__(self) -> None:
        for name in _COEFF_NAMES:
            coeffs = getattr(self, name)
            if len(coeffs) != 20:
                raise RpcFormatError(
                    f"{self.source}: {name} has {len(coeffs)} coefficients, expected 20"
                )
            if not all(np.isfinite(coeffs)):
                raise RpcFormatError(f"{self.source}: {name} holds a non-finite coefficient")
        for name in ("line_den", "samp_den"):
            if not any(getattr(self, name)):
                raise RpcFormatError(
                    f"{self.source}: {name} has all 20 coefficients equal to 0, expected a "
                    "non-zero denominator polynomial (usually with constant term 1)"
                )
        for name in ("line_scale", "samp_scale", "lat_scale", "lon_scale", "height_scale"):
            value = getattr(self, name)
            if not np.isfinite(value) or value == 0.0:
                raise RpcFormatError(
                    f"{self.source}: {name} = {value!r}, expected a finite non-zero scale"
                )
        for name in ("line_off", "samp_off", "lat_off", "lon_off", "height_off",
                     "row_origin", "col_origin"):
            value = getattr(self, name)
            if not np.isfinite(value):
                raise RpcFormatError(f"{self.source}: {name} = {value!r}, expected a finite number")

    # ----------------------------------------------------------------- values
    @property
    def height_range(self) -> tuple[float, float]:
        """(min, max) height above the ellipsoid of the model's box (m)."""
        return (self.height_off - abs(self.height_scale), self.height_off + abs(self.height_scale))

    def _params(self) -> FloatArray:
        return np.array(
            [
                self.lon_off, self.lon_scale, self.lat_off, self.lat_scale,
                self.height_off, self.height_scale,
                self.line_off - self.row_origin, self.line_scale,
                self.samp_off - self.col_origin, self.samp_scale,
            ],
            dtype=np.float64,
        )

    def _coeffs(self) -> FloatArray:
        return np.array([getattr(self, n) for n in _COEFF_NAMES], dtype=np.float64)

    def with_origin(self, row_origin: float, col_origin: float, source: str | None = None) -> RpcModel:
        """The same product model attached to a crop starting at the given origin."""
        return dataclasses.replace(
            self, row_origin=float(row_origin), col_origin=float(col_origin),
            source=self.source if source is None else source,
        )

    def folded(self) -> RpcModel:
        """An equivalent model with the crop origin folded into line_off/samp_off."""
        return dataclasses.replace(
            self, line_off=self.line_off - self.row_origin,
            samp_off=self.samp_off - self.col_origin, row_origin=0.0, col_origin=0.0,
        )

    # ------------------------------------------------------------- validity
    def _check_range(self, name: str, values: FloatArray, off: float, scale: float) -> None:
        if not values.size:
            return
        # fmin/fmax skip NaN (nodata) without the all-NaN warning of nanmin
        lo, hi = float(np.fmin.reduce(values)), float(np.fmax.reduce(values))
        if not np.isfinite(lo):
            return
        worst = lo if abs(lo - off) > abs(hi - off) else hi
        if abs(worst - off) > VALIDITY_LIMIT * abs(scale):
            raise RpcDomainError(
                f"{self.source}: {name} = {worst!r} lies {abs(worst - off) / abs(scale):.2f} "
                f"scales from the RPC centre {off!r} (scale {scale!r}); expected at most "
                f"{VALIDITY_LIMIT} (inside the model's validity box)"
            )

    def normalise(
        self, lon: ArrayLike, lat: ArrayLike, h: ArrayLike, *, check: bool = True
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Normalised (L, P, H); with ``check``, refuse points far outside the box."""
        lon_a, lat_a, h_a = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (lon, lat, h))
        )
        if check:
            self._check_ground(lon_a, lat_a, h_a)
        return (
            (lon_a - self.lon_off) / self.lon_scale,
            (lat_a - self.lat_off) / self.lat_scale,
            (h_a - self.height_off) / self.height_scale,
        )

    def _check_ground(self, lon: FloatArray, lat: FloatArray, h: FloatArray) -> None:
        self._check_range("lon", lon, self.lon_off, self.lon_scale)
        self._check_range("lat", lat, self.lat_off, self.lat_scale)
        self._check_range("h", h, self.height_off, self.height_scale)

    # ------------------------------------------------------------ transforms
    def project(
        self, lon: ArrayLike, lat: ArrayLike, h: ArrayLike, *, check: bool = True
    ) -> tuple[FloatArray, FloatArray]:
        """Ground (lon, lat, h above ellipsoid) to file (row, col), vectorised.

        With ``check``, points far outside the validity box and vanishing
        denominators raise RpcDomainError; without, the latter give inf.
        NaN in (nodata) gives NaN out.
        """
        shape, (lon_f, lat_f, h_f) = _flat([lon, lat, h])
        if check:
            self._check_ground(lon_f, lat_f, h_f)
        row = np.empty_like(lon_f)
        col = np.empty_like(lon_f)
        _project_kernel(lon_f, lat_f, h_f, self._params(), self._coeffs(), row, col)
        if check:
            bad = np.flatnonzero(np.isinf(row))
            if bad.size:
                i = int(bad[0])
                lon_i, lat_i, h_i = float(lon_f[i]), float(lat_f[i]), float(h_f[i])
                terms = rpc00b_terms(*self.normalise(lon_i, lat_i, h_i, check=False))
                dens = {name: float(np.dot(getattr(self, name), np.array(terms)))
                        for name in ("line_den", "samp_den")}
                name = min(dens, key=lambda k: abs(dens[k]))
                raise RpcDomainError(
                    f"{self.source}: RPC denominator {name} = {dens[name]:.3g} vanishes at "
                    f"lon={lon_i!r}, lat={lat_i!r}, h={h_i!r} ({bad.size} points); "
                    f"expected |{name}| >= {DENOMINATOR_EPS}"
                )
        return row.reshape(shape), col.reshape(shape)

    def _affine_start(self) -> FloatArray:
        """Least-squares affine (L, P) ~ [1, row_n, col_n, H] over the model's box."""
        g = np.linspace(-1.0, 1.0, 7)
        L, P, H = (a.ravel() for a in np.meshgrid(g, g, np.linspace(-1.0, 1.0, 3), indexing="ij"))
        lon = L * self.lon_scale + self.lon_off
        lat = P * self.lat_scale + self.lat_off
        h = H * self.height_scale + self.height_off
        row, col = self.project(lon, lat, h, check=False)
        rn = (row + self.row_origin - self.line_off) / self.line_scale
        cn = (col + self.col_origin - self.samp_off) / self.samp_scale
        ok = np.isfinite(rn) & np.isfinite(cn)
        design = np.column_stack([np.ones(ok.sum()), rn[ok], cn[ok], H[ok]])
        if ok.sum() < 8:
            return np.zeros((2, 4))
        sol, *_ = np.linalg.lstsq(design, np.column_stack([L[ok], P[ok]]), rcond=None)
        return np.ascontiguousarray(sol.T)

    def localize(
        self, row: ArrayLike, col: ArrayLike, h: ArrayLike, *, check: bool = True
    ) -> tuple[FloatArray, FloatArray]:
        """File (row, col) at height h above the ellipsoid to ground (lon, lat).

        Newton iteration on the forward model, to 1e-9 pixel. With ``check``,
        image points or heights far outside the model's box, and points where
        Newton fails, raise RpcDomainError; without, failures give NaN.
        NaN in (nodata) gives NaN out.
        """
        shape, (row_f, col_f, h_f) = _flat([row, col, h])
        if check:
            self._check_range("row", row_f, self.line_off - self.row_origin, self.line_scale)
            self._check_range("col", col_f, self.samp_off - self.col_origin, self.samp_scale)
            self._check_range("h", h_f, self.height_off, self.height_scale)
        lon = np.empty_like(row_f)
        lat = np.empty_like(row_f)
        _localize_kernel(
            row_f, col_f, h_f, self._params(), self._coeffs(), self._affine_start(),
            LOCALIZE_TOLERANCE_PX, LOCALIZE_MAX_ITERATIONS, lon, lat,
        )
        if check:
            bad = np.flatnonzero(np.isnan(lon) & np.isfinite(row_f) & np.isfinite(col_f)
                                 & np.isfinite(h_f))
            if bad.size:
                i = int(bad[0])
                raise RpcDomainError(
                    f"{self.source}: localisation did not converge at row={float(row_f[i])!r}, "
                    f"col={float(col_f[i])!r}, h={float(h_f[i])!r} ({bad.size} points); "
                    "expected image "
                    "points inside the model's validity box"
                )
            self._check_range("lon", lon, self.lon_off, self.lon_scale)
            self._check_range("lat", lat, self.lat_off, self.lat_scale)
        return lon.reshape(shape), lat.reshape(shape)

    def ground_bounds(
        self, height: int, width: int, h_range: tuple[float, float] | None = None,
        n_per_edge: int = 21,
    ) -> tuple[float, float, float, float]:
        """(lon_min, lat_min, lon_max, lat_max) seen by a height x width file.

        The file's outer edges (pixel corners, -0.5 to size - 0.5) are
        localised at both ends of ``h_range`` (default: the model's height
        range); RPCs are smooth, so the border bounds the interior.
        """
        if height <= 0 or width <= 0 or n_per_edge < 2:
            raise RpcDomainError(
                f"{self.source}: ground_bounds of a {height} x {width} file with "
                f"{n_per_edge} points per edge; expected positive sizes and >= 2 points"
            )
        lo_h, hi_h = self.height_range if h_range is None else h_range
        rows = np.linspace(-0.5, height - 0.5, n_per_edge)
        cols = np.linspace(-0.5, width - 0.5, n_per_edge)
        edge_r = np.concatenate([rows, rows, np.full_like(cols, -0.5),
                                 np.full_like(cols, height - 0.5)])
        edge_c = np.concatenate([np.full_like(rows, -0.5), np.full_like(rows, width - 0.5),
                                 cols, cols])
        hs = np.array([lo_h, hi_h])[:, None]
        lon, lat = self.localize(edge_r[None, :], edge_c[None, :], hs)
        return (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))

    # ------------------------------------------------------------- rasterio
    def to_rasterio(self) -> Any:
        """A ``rasterio.rpc.RPC`` for the file itself (crop origin folded in).

        GDAL tools given this RPC and the crop file agree with ``project``
        (GDAL reports pixel centres at +0.5).
        """
        from rasterio.rpc import RPC

        return RPC(
            height_off=self.height_off, height_scale=self.height_scale,
            lat_off=self.lat_off, lat_scale=self.lat_scale,
            line_den_coeff=list(self.line_den), line_num_coeff=list(self.line_num),
            line_off=self.line_off - self.row_origin, line_scale=self.line_scale,
            long_off=self.lon_off, long_scale=self.lon_scale,
            samp_den_coeff=list(self.samp_den), samp_num_coeff=list(self.samp_num),
            samp_off=self.samp_off - self.col_origin, samp_scale=self.samp_scale,
        )

    @classmethod
    def from_rasterio(
        cls, rpc: Any, *, source: str = "<rasterio>",
        row_origin: float = 0.0, col_origin: float = 0.0,
    ) -> RpcModel:
        """Build from a ``rasterio.rpc.RPC`` that describes the product.

        ``row_origin``/``col_origin`` attach it to a crop of that product.
        """
        def coeffs(name: str) -> tuple[float, ...]:
            values = getattr(rpc, name)
            if values is None:
                raise RpcFormatError(f"{source}: RPC key {name.upper()} is missing")
            return tuple(float(v) for v in values)

        def scalar(name: str) -> float:
            value = getattr(rpc, name)
            if value is None:
                raise RpcFormatError(f"{source}: RPC key {name.upper()} is missing")
            return float(value)

        return cls(
            line_off=scalar("line_off"), samp_off=scalar("samp_off"),
            lat_off=scalar("lat_off"), lon_off=scalar("long_off"),
            height_off=scalar("height_off"), line_scale=scalar("line_scale"),
            samp_scale=scalar("samp_scale"), lat_scale=scalar("lat_scale"),
            lon_scale=scalar("long_scale"), height_scale=scalar("height_scale"),
            line_num=coeffs("line_num_coeff"), line_den=coeffs("line_den_coeff"),
            samp_num=coeffs("samp_num_coeff"), samp_den=coeffs("samp_den_coeff"),
            row_origin=float(row_origin), col_origin=float(col_origin), source=source,
        )
