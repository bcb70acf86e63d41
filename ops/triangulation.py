"""Triangulation of matched image points through two RPC models.

An RPC maps ground to image; its inverse at a fixed height (Newton
localisation, :meth:`ops.rpc.RpcModel.localize`) gives, for an image point,
the ground point at that height. Localising a pixel at two heights h1 < h2
gives two points of its line of sight; in Earth-centred Cartesian
coordinates (ECEF, WGS84) that segment is straight to well under a millimetre
over the few tens of metres used here.

For a left point L and its match R we take the two lines of sight
``A + s a`` (left) and ``B + t b`` (right) and solve the 2 x 2 normal
equations of ``min |A + s a - B - t b|²`` (the least-squares intersection of
two lines; Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., §12.2,
"mid-point method"). The point is the middle of the shortest segment between
the lines; its length, the **ray distance**, measures how well the match
obeys the epipolar geometry (a mismatch or a pointing bias between the
RPCs shows up there) and is returned for filtering.

Heights and longitudes/latitudes are linear along each segment (to the same
sub-millimetre tolerance), so the result is read off the parameters s, t
directly, with no ECEF-to-geodetic inversion. The segment is centred on an
estimate of the height (from the disparity), within ``HALF_SPAN_M`` of the
answer, which keeps the straight-segment approximation exact in practice.
Everything is vectorised over points (the localisations run in numba).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.rpc import RpcModel

FloatArray = NDArray[np.float64]

WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

#: Half length (m of height) of the line-of-sight segments around the estimate.
HALF_SPAN_M = 20.0


@dataclass(frozen=True, slots=True)
class GroundPoints:
    """Triangulated points: lon/lat (degrees), height above the ellipsoid and ray distance (m)."""

    lon: FloatArray
    lat: FloatArray
    h_m: FloatArray
    ray_distance_m: FloatArray


def geodetic_to_ecef(lon: ArrayLike, lat: ArrayLike, h: ArrayLike) -> FloatArray:
    """WGS84 geodetic (degrees, metres) to ECEF metres, shape (..., 3)."""
    lam = np.radians(np.asarray(lon, dtype=np.float64))
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    h_a = np.asarray(h, dtype=np.float64)
    sin_phi = np.sin(phi)
    n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_phi * sin_phi)
    x = (n + h_a) * np.cos(phi) * np.cos(lam)
    y = (n + h_a) * np.cos(phi) * np.sin(lam)
    z = (n * (1.0 - WGS84_E2) + h_a) * sin_phi
    return np.stack([x, y, z], axis=-1)


def triangulate(
    left: RpcModel,
    right: RpcModel,
    rows_l: ArrayLike,
    cols_l: ArrayLike,
    rows_r: ArrayLike,
    cols_r: ArrayLike,
    h_estimate_m: ArrayLike,
) -> GroundPoints:
    """Least-squares intersection of the lines of sight of matched points (1-D arrays).

    ``h_estimate_m`` is a per-point height guess (e.g. from the disparity);
    points whose localisation fails come out NaN.
    """
    h0 = np.asarray(h_estimate_m, dtype=np.float64)
    h1, h2 = h0 - HALF_SPAN_M, h0 + HALF_SPAN_M
    lon_l1, lat_l1 = left.localize(rows_l, cols_l, h1, check=False)
    lon_l2, lat_l2 = left.localize(rows_l, cols_l, h2, check=False)
    lon_r1, lat_r1 = right.localize(rows_r, cols_r, h1, check=False)
    lon_r2, lat_r2 = right.localize(rows_r, cols_r, h2, check=False)
    a0 = geodetic_to_ecef(lon_l1, lat_l1, h1)
    a = geodetic_to_ecef(lon_l2, lat_l2, h2) - a0
    b0 = geodetic_to_ecef(lon_r1, lat_r1, h1)
    b = geodetic_to_ecef(lon_r2, lat_r2, h2) - b0
    w = a0 - b0
    aa = np.einsum("ij,ij->i", a, a)
    bb = np.einsum("ij,ij->i", b, b)
    ab = np.einsum("ij,ij->i", a, b)
    aw = np.einsum("ij,ij->i", a, w)
    bw = np.einsum("ij,ij->i", b, w)
    det = aa * bb - ab * ab
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (ab * bw - bb * aw) / det
        t = (aa * bw - ab * aw) / det
    gap = (a0 + s[:, None] * a) - (b0 + t[:, None] * b)
    ray_distance = np.sqrt(np.einsum("ij,ij->i", gap, gap))
    span = h2 - h1
    h = h1 + 0.5 * (s + t) * span
    lon = 0.5 * (lon_l1 + s * (lon_l2 - lon_l1) + lon_r1 + t * (lon_r2 - lon_r1))
    lat = 0.5 * (lat_l1 + s * (lat_l2 - lat_l1) + lat_r1 + t * (lat_r2 - lat_r1))
    return GroundPoints(lon, lat, h, ray_distance)
