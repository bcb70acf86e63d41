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
* A crop of a larger product keeps the product's RPC; ``row_origin`` and
  ``col_origin`` give the crop's offset inside the product, so that crop
  pixel (r, c) is product pixel (r + row_origin, c + col_origin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import RpcDomainError, RpcFormatError

FloatArray = NDArray[np.float64]

#: Normalised coordinates further than this from the model's box are refused.
VALIDITY_LIMIT = 1.5


def rpc00b_terms(lon_n: FloatArray, lat_n: FloatArray, h_n: FloatArray) -> list[FloatArray]:
    """The 20 RPC00B monomials of normalised (L, P, H), in GDAL/NITF order."""
    L, P, H = lon_n, lat_n, h_n
    return [
        np.ones_like(L), L, P, H, L * P, L * H, P * H, L * L, P * P, H * H,
        P * L * H, L * L * L, L * P * P, L * H * H, L * L * P, P * P * P,
        P * H * H, L * L * H, P * P * H, H * H * H,
    ]


def _poly(coeffs: FloatArray, terms: list[FloatArray]) -> FloatArray:
    out = coeffs[0] * terms[0]
    for c, t in zip(coeffs[1:], terms[1:]):
        out = out + c * t
    return out


@dataclass(frozen=True, slots=True)
class RpcModel:
    """An RPC00B model, with the crop origin of the file it describes."""

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
        for name in ("line_num", "line_den", "samp_num", "samp_den"):
            coeffs = getattr(self, name)
            if len(coeffs) != 20:
                raise RpcFormatError(
                    f"{self.source}: {name} has {len(coeffs)} coefficients, expected 20"
                )
            if not all(np.isfinite(coeffs)):
                raise RpcFormatError(f"{self.source}: {name} holds a non-finite coefficient")
        for name in ("line_scale", "samp_scale", "lat_scale", "lon_scale", "height_scale"):
            value = getattr(self, name)
            if not np.isfinite(value) or value == 0.0:
                raise RpcFormatError(
                    f"{self.source}: {name} = {value!r}, expected a finite non-zero scale"
                )

    def normalise(
        self, lon: ArrayLike, lat: ArrayLike, h: ArrayLike, *, check: bool = True
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Normalised (L, P, H); with ``check``, refuse points far outside the box."""
        lon_n = (np.asarray(lon, dtype=np.float64) - self.lon_off) / self.lon_scale
        lat_n = (np.asarray(lat, dtype=np.float64) - self.lat_off) / self.lat_scale
        h_n = (np.asarray(h, dtype=np.float64) - self.height_off) / self.height_scale
        lon_n, lat_n, h_n = np.broadcast_arrays(lon_n, lat_n, h_n)
        if check and lon_n.size:
            worst = max(
                float(np.nanmax(np.abs(lon_n))),
                float(np.nanmax(np.abs(lat_n))),
                float(np.nanmax(np.abs(h_n))),
            )
            if worst > VALIDITY_LIMIT:
                raise RpcDomainError(
                    f"{self.source}: a point lies {worst:.2f} normalised units from the RPC "
                    f"centre (lon {self.lon_off}±{self.lon_scale}, lat {self.lat_off}±"
                    f"{self.lat_scale}, h {self.height_off}±{self.height_scale}); expected "
                    f"at most {VALIDITY_LIMIT}"
                )
        return lon_n, lat_n, h_n

    def project(
        self, lon: ArrayLike, lat: ArrayLike, h: ArrayLike, *, check: bool = True
    ) -> tuple[FloatArray, FloatArray]:
        """Ground (lon, lat, h above ellipsoid) to file (row, col), vectorised."""
        terms = rpc00b_terms(*self.normalise(lon, lat, h, check=check))
        line_den = _poly(np.asarray(self.line_den), terms)
        samp_den = _poly(np.asarray(self.samp_den), terms)
        if check and (np.any(np.abs(line_den) < 1e-12) or np.any(np.abs(samp_den) < 1e-12)):
            raise RpcDomainError(
                f"{self.source}: an RPC denominator vanishes inside the requested points"
            )
        row = _poly(np.asarray(self.line_num), terms) / line_den * self.line_scale + self.line_off
        col = _poly(np.asarray(self.samp_num), terms) / samp_den * self.samp_scale + self.samp_off
        return row - self.row_origin, col - self.col_origin
