"""A physical pushbroom camera, the geometry the synthetic scenes are made from.

Model, in a local East-North-Up (ENU) frame tangent to the WGS84 ellipsoid at
the scene centre (heights above the ellipsoid, never above a geoid):

* The satellite flies a straight line ``S(t) = S0 + V t`` at ``altitude_m``
  above the scene, along the horizontal heading unit vector ``u_a``; ``t = 0``
  is the middle row. Over a few seconds of imaging a straight line is a fair
  stand-in for the orbit, and it keeps the model exactly invertible.
* The attitude is constant during an acquisition. The boresight ``l`` is
  ``normalise(tan(pitch) u_a + tan(roll) u_c - u_z)`` with ``u_c = u_z x u_a``
  (``pitch`` > 0 looks forward, ``roll`` > 0 looks to the column side). Body axes:
  ``z_b = -l``, ``x_b`` = ``u_a`` made orthogonal to ``z_b``, ``y_b = z_b x x_b``.
* The detector line lies along ``y_b`` in the focal plane: column ``c`` looks
  along ``d(c) = -z_b + (c - col_mid) ifov y_b``; row ``r`` is taken at time
  ``t = (r - row_mid) line_period_s``.

Projection is closed form: a ground point P is imaged when it lies in the
plane through ``S(t)`` spanned by ``z_b`` and ``y_b``, so
``t = x_b . (P - S0) / (x_b . V)``; then with ``q = P - S(t)`` the column is
``col_mid + (y_b . q) / (-z_b . q) / ifov``. ``ifov`` and ``line_period_s`` are
calibrated so that the ground sampling distance at the scene centre is
``gsd_m`` in both directions, for every view.

Image conventions are eochain's: integer (row, col) are pixel centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ops.errors import GeometryError

FloatArray = NDArray[np.float64]
Vec3 = tuple[float, float, float]

WGS84_A_M = 6378137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)


def geodetic_to_ecef(
    lon_deg: ArrayLike, lat_deg: ArrayLike, h_m: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """WGS84 geodetic (degrees, metres above the ellipsoid) to ECEF metres."""
    lon = np.radians(np.asarray(lon_deg, dtype=np.float64))
    lat = np.radians(np.asarray(lat_deg, dtype=np.float64))
    h = np.asarray(h_m, dtype=np.float64)
    sin_lat = np.sin(lat)
    n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    x = (n + h) * np.cos(lat) * np.cos(lon)
    y = (n + h) * np.cos(lat) * np.sin(lon)
    z = (n * (1.0 - WGS84_E2) + h) * sin_lat
    return x, y, z


def ecef_to_geodetic(
    x: ArrayLike, y: ArrayLike, z: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ECEF metres to WGS84 (lon deg, lat deg, h m); fixed-point latitude, exact to < 1 um
    for points within a few hundred kilometres of the surface."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    p = np.hypot(x, y)
    lon = np.arctan2(y, x)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    h = np.zeros_like(p)
    for _ in range(6):
        sin_lat = np.sin(lat)
        n = WGS84_A_M / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
        h = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + h)))
    return np.degrees(lon), np.degrees(lat), h


@dataclass(frozen=True, slots=True)
class LocalFrame:
    """East-North-Up frame tangent to the ellipsoid at (lon0_deg, lat0_deg, h0_m)."""

    lon0_deg: float
    lat0_deg: float
    h0_m: float = 0.0

    def __post_init__(self) -> None:
        if not (-180.0 <= self.lon0_deg <= 180.0 and -89.0 <= self.lat0_deg <= 89.0):
            raise GeometryError(
                f"LocalFrame origin (lon {self.lon0_deg}, lat {self.lat0_deg}) is outside "
                "lon [-180, 180], lat [-89, 89]"
            )

    def _rotation(self) -> FloatArray:
        lon, lat = math.radians(self.lon0_deg), math.radians(self.lat0_deg)
        sl, cl, sp, cp = math.sin(lon), math.cos(lon), math.sin(lat), math.cos(lat)
        # rows: east, north, up unit vectors in ECEF
        return np.array([[-sl, cl, 0.0], [-sp * cl, -sp * sl, cp], [cp * cl, cp * sl, sp]])

    def to_enu(self, lon_deg: ArrayLike, lat_deg: ArrayLike, h_m: ArrayLike) -> FloatArray:
        """Geodetic points to ENU metres, shape (..., 3)."""
        x, y, z = geodetic_to_ecef(lon_deg, lat_deg, h_m)
        x0, y0, z0 = geodetic_to_ecef(self.lon0_deg, self.lat0_deg, self.h0_m)
        d = np.stack(np.broadcast_arrays(x - x0, y - y0, z - z0), axis=-1)
        return d @ self._rotation().T

    def to_geodetic(self, enu: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """ENU metres, shape (..., 3), to geodetic (lon deg, lat deg, h m)."""
        d = np.asarray(enu, dtype=np.float64) @ self._rotation()
        x0, y0, z0 = geodetic_to_ecef(self.lon0_deg, self.lat0_deg, self.h0_m)
        return ecef_to_geodetic(d[..., 0] + x0, d[..., 1] + y0, d[..., 2] + z0)


def _unit(v: FloatArray) -> FloatArray:
    return v / np.linalg.norm(v)


@dataclass(frozen=True, slots=True)
class PushbroomCamera:
    """A constant-attitude linear pushbroom camera on a straight trajectory (see module doc)."""

    frame: LocalFrame
    height: int
    width: int
    position0_m: Vec3
    velocity_mps: Vec3
    x_body: Vec3
    y_body: Vec3
    z_body: Vec3
    ifov_rad: float
    line_period_s: float

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise GeometryError(
                f"PushbroomCamera size {self.height} x {self.width}, expected >= 1 x 1"
            )
        if not (self.ifov_rad > 0.0 and self.line_period_s > 0.0):
            raise GeometryError(
                f"PushbroomCamera ifov_rad={self.ifov_rad}, line_period_s="
                f"{self.line_period_s}; expected both > 0"
            )

    @property
    def row_mid(self) -> float:
        return (self.height - 1) / 2.0

    @property
    def col_mid(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def incidence_deg(self) -> float:
        """Angle between the boresight and the local vertical at the scene centre."""
        return math.degrees(math.acos(min(1.0, abs(self.z_body[2]))))

    def project(
        self, lon_deg: ArrayLike, lat_deg: ArrayLike, h_m: ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Ground (lon, lat, h above ellipsoid) to image (row, col), closed form."""
        p = self.frame.to_enu(lon_deg, lat_deg, h_m)
        s0, v = np.asarray(self.position0_m), np.asarray(self.velocity_mps)
        xb, yb, zb = np.asarray(self.x_body), np.asarray(self.y_body), np.asarray(self.z_body)
        t = ((p - s0) @ xb) / float(v @ xb)
        q = p - s0 - t[..., None] * v
        depth = -(q @ zb)
        if np.any(depth <= 0.0):
            raise GeometryError("PushbroomCamera.project: a ground point lies behind the camera")
        col = self.col_mid + (q @ yb) / depth / self.ifov_rad
        row = self.row_mid + t / self.line_period_s
        return row, col

    def ray(self, row: ArrayLike, col: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Line of sight of image points: ENU origin and (unnormalised) direction, (..., 3)."""
        r, c = np.broadcast_arrays(
            np.asarray(row, dtype=np.float64), np.asarray(col, dtype=np.float64)
        )
        t = (r - self.row_mid) * self.line_period_s
        origin = np.asarray(self.position0_m) + t[..., None] * np.asarray(self.velocity_mps)
        s = (c - self.col_mid) * self.ifov_rad
        direction = -np.asarray(self.z_body) + s[..., None] * np.asarray(self.y_body)
        return origin, direction

    def localize(
        self, row: ArrayLike, col: ArrayLike, h_m: ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Image points and a height above the ellipsoid to ground (lon, lat)."""
        origin, direction = self.ray(row, col)
        h = np.broadcast_to(np.asarray(h_m, dtype=np.float64), origin.shape[:-1])
        s = (h - self.frame.h0_m - origin[..., 2]) / direction[..., 2]
        for _ in range(6):
            lon, lat, hh = self.frame.to_geodetic(origin + s[..., None] * direction)
            s = s + (h - hh) / direction[..., 2]
        lon, lat, _ = self.frame.to_geodetic(origin + s[..., None] * direction)
        return lon, lat


def make_camera(
    frame: LocalFrame,
    *,
    height: int,
    width: int,
    gsd_m: float,
    heading_deg: float,
    pitch_deg: float,
    roll_deg: float,
    altitude_m: float = 695_000.0,
    speed_mps: float = 7_500.0,
    target_h_m: float = 0.0,
) -> PushbroomCamera:
    """A camera whose middle pixel looks at the frame origin lifted to ``target_h_m``,
    calibrated to ``gsd_m`` on the horizontal plane through that point."""
    if not (gsd_m > 0.0 and altitude_m > 0.0 and speed_mps > 0.0):
        raise GeometryError(
            f"make_camera: gsd_m={gsd_m}, altitude_m={altitude_m}, speed_mps={speed_mps}; "
            "expected all > 0"
        )
    if not (abs(pitch_deg) < 60.0 and abs(roll_deg) < 60.0):
        raise GeometryError(
            f"make_camera: pitch_deg={pitch_deg}, roll_deg={roll_deg}; expected |angle| < 60"
        )
    hd = math.radians(heading_deg)
    u_a = np.array([math.sin(hd), math.cos(hd), 0.0])
    u_z = np.array([0.0, 0.0, 1.0])
    u_c = np.cross(u_z, u_a)
    look = _unit(
        math.tan(math.radians(pitch_deg)) * u_a + math.tan(math.radians(roll_deg)) * u_c - u_z
    )
    target = np.array([0.0, 0.0, target_h_m - frame.h0_m])
    s0 = target - look * (altitude_m / -look[2])
    zb = -look
    xb = _unit(u_a - (u_a @ zb) * zb)
    yb = np.cross(zb, xb)

    def spacing(ifov: float) -> float:
        # ground distance, on the horizontal plane through the target, of columns -1/2, +1/2
        d = np.stack([-zb - 0.5 * ifov * yb, -zb + 0.5 * ifov * yb])
        s = (target[2] - s0[2]) / d[:, 2]
        pts = s0 + s[:, None] * d
        return float(np.linalg.norm(pts[1] - pts[0]))

    ifov = gsd_m / altitude_m
    for _ in range(3):
        ifov *= gsd_m / spacing(ifov)
    return PushbroomCamera(
        frame=frame,
        height=height,
        width=width,
        position0_m=(float(s0[0]), float(s0[1]), float(s0[2])),
        velocity_mps=(float(speed_mps * u_a[0]), float(speed_mps * u_a[1]), 0.0),
        x_body=(float(xb[0]), float(xb[1]), float(xb[2])),
        y_body=(float(yb[0]), float(yb[1]), float(yb[2])),
        z_body=(float(zb[0]), float(zb[1]), float(zb[2])),
        ifov_rad=ifov,
        # parallel rays from a translating camera sweep a plane at the camera speed
        line_period_s=gsd_m / speed_mps,
    )
