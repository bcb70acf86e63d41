"""Synthetic stereo acquisitions with exact ground truth, at any size.

A scene is made of four things, each exactly defined everywhere:

* **Terrain** (``dem.tif``): UTM, float32, heights above the WGS84 ellipsoid,
  no nodata. Fractal relief (a periodic power-law noise array, sampled by
  cubic convolution at two scales) plus flat-roofed rectangular buildings,
  one chance per ``building_cell_m`` cell (:mod:`ops.synthetic.terrain`).
  The *true height* at any point is the DEM file's values interpolated
  bilinearly (pixel centres at integer indices), so truth is the file, not
  the generator.
* **Reflectance**: a band-limited texture, the weighted sum of a periodic
  array (pink noise plus flat "parcels", cut off at 4 cells) sampled by Keys
  cubic convolution at three rotated scales. It is continuous and defined at
  any (x, y) of the UTM CRS: :func:`truth_ortho` evaluates it on any map grid.
* **Cameras**: one :class:`~ops.synthetic.pushbroom.PushbroomCamera` per view (695 km
  altitude, common heading and roll, along-track pitches giving the requested
  base-to-height ratio), each replaced by a fitted RPC00B model
  (:func:`~ops.sensor.rpc_fit.fit_rpc`, residual reported, typically < 1e-8 px).
  From then on the fitted RPC *is* the exact camera.
* **Images** ``view_K.tif``: pixel (r, c) is the reflectance (times a gain for
  integer types, plus optional seeded Gaussian noise) at the first point
  where the RPC line of sight of (r, c) meets the true DEM
  (:func:`~ops.synthetic.kernels.march_rays`), so occlusions by buildings are
  rendered. Written in row blocks (bounded memory), tiled GeoTIFF with GDAL
  RPC tags, an OSSIM ``.geom`` sidecar when ``ops.sensor.rpc_io`` provides one.

``scene.json`` records the spec, CRS, footprints, DEM range, RPCs, cameras and
fit residuals; ``fields.npz`` the two noise arrays. :meth:`SyntheticScene.load`
reads them back. Truth for tests: :func:`truth_ortho`, :func:`truth_heights`
(any map grid, any CRS), :func:`truth_visibility` (which ground a view sees),
:func:`intersect_rays` (the ground point behind any image point) and the
``*_at`` samplers at scattered UTM points.

Command line: ``python -m ops.synthetic.scene OUT_DIR --width 8000 --height 8000``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from ops.errors import GeometryError, RasterReadError
from ops.raster.crs import lonlat_transformer, transformer, utm_crs
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_fit import fit_rpc
from ops.synthetic.pushbroom import LocalFrame, PushbroomCamera, make_camera
from ops.synthetic.render import ScalarField, dem_bilinear, intersect_rays_utm, render_view
from ops.synthetic.terrain import make_buildings, make_fields, write_dem

FloatArray = NDArray[np.float64]

SCENE_JSON = "scene.json"
FIELDS_NPZ = "fields.npz"
DEM_TIF = "dem.tif"
_DTYPE_GAIN = {"float32": 1.0, "uint16": 4000.0}
RPC_HEIGHT_MARGIN_M = 250.0


class GeoBoxLike(Protocol):
    """What truth samplers need of a map grid (planner.geometry.grid.GeoBox satisfies it)."""

    @property
    def crs(self) -> str: ...
    @property
    def transform(self) -> tuple[float, float, float, float, float, float]: ...
    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...


@dataclass(frozen=True, slots=True)
class SceneSpec:
    """Everything that defines a synthetic scene; same spec and seed, same files."""

    width: int = 1000
    height: int = 1000
    gsd_m: float = 0.5
    n_views: int = 2
    b_over_h: float = 0.25
    roll_deg: float = 3.0
    pitch_deg: tuple[float, ...] = ()
    heading_deg: float = 192.0
    centre_lon: float = 1.44
    centre_lat: float = 43.6
    dem_resolution_m: float = 1.0
    base_height_m: float = 200.0
    relief_m: float = 40.0
    building_fraction: float = 0.3
    building_cell_m: float = 60.0
    building_height_m: tuple[float, float] = (6.0, 30.0)
    texture_cell_m: float = 0.0
    seed: int = 0
    noise_sigma: float = 0.0
    dtype: str = "float32"
    altitude_m: float = 695_000.0

    def __post_init__(self) -> None:
        def bad(key: str, expected: str) -> GeometryError:
            return GeometryError(f"SceneSpec.{key} = {getattr(self, key)!r}, expected {expected}")

        if self.width < 16 or self.height < 16:
            raise bad("width" if self.width < 16 else "height", "at least 16 pixels")
        for key in ("gsd_m", "dem_resolution_m", "building_cell_m", "altitude_m"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0.0):
                raise bad(key, "a finite number > 0")
        if self.n_views < 2:
            raise bad("n_views", "2 or more")
        if self.pitch_deg and len(self.pitch_deg) != self.n_views:
            raise bad("pitch_deg", f"empty or {self.n_views} angles (one per view)")
        if not (0.0 <= self.b_over_h < 1.5):
            raise bad("b_over_h", "in [0, 1.5)")
        if not (0.0 <= self.building_fraction <= 1.0):
            raise bad("building_fraction", "in [0, 1]")
        lo, hi = self.building_height_m
        if not (0.0 < lo <= hi):
            raise bad("building_height_m", "(low, high) with 0 < low <= high")
        if self.building_cell_m < 20.0:
            raise bad("building_cell_m", ">= 20 m (buildings are 8 m or more)")
        if not (self.relief_m >= 0.0 and self.noise_sigma >= 0.0 and self.texture_cell_m >= 0.0):
            raise GeometryError(
                f"SceneSpec relief_m={self.relief_m}, noise_sigma={self.noise_sigma}, "
                f"texture_cell_m={self.texture_cell_m}; expected all >= 0"
            )
        if self.dtype not in _DTYPE_GAIN:
            raise bad("dtype", f"one of {sorted(_DTYPE_GAIN)}")
        if not (-180.0 <= self.centre_lon <= 180.0 and -80.0 <= self.centre_lat <= 84.0):
            raise GeometryError(
                f"SceneSpec centre ({self.centre_lon}, {self.centre_lat}) is outside UTM's "
                "domain (lon in [-180, 180], lat in [-80, 84])"
            )

    @classmethod
    def demo(cls) -> SceneSpec:
        """A 1000 x 1000, 0.5 m stereo pair (B/H 0.25): for tests and ``make demo``."""
        return cls()

    @property
    def gain(self) -> float:
        """Image value per unit reflectance (1 for float32, 4000 DN for uint16)."""
        return _DTYPE_GAIN[self.dtype]

    @property
    def texture_cell(self) -> float:
        """Finest texture sample spacing in metres (``texture_cell_m`` or the GSD)."""
        return self.texture_cell_m or self.gsd_m

    def pitches_deg(self) -> tuple[float, ...]:
        """Along-track view angles: given, or symmetric with tan spread = b_over_h."""
        if self.pitch_deg:
            return tuple(float(p) for p in self.pitch_deg)
        tans = np.linspace(0.5 * self.b_over_h, -0.5 * self.b_over_h, self.n_views)
        return tuple(float(math.degrees(math.atan(t))) for t in tans)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SceneSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GeometryError(f"scene spec has unknown keys {unknown}; expected {sorted(known)}")
        values = dict(data)
        for key in ("pitch_deg", "building_height_m"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticScene:
    """A generated scene on disk and its ground truth."""

    out_dir: Path
    spec: SceneSpec
    crs: str
    view_paths: tuple[Path, ...]
    rpcs: tuple[RpcModel, ...]
    cameras: tuple[PushbroomCamera, ...]
    dem_path: Path
    dem_min_m: float
    dem_max_m: float
    footprint_lonlat: tuple[float, float, float, float]
    footprint_utm: tuple[float, float, float, float]
    fit_residual_px: tuple[float, ...]
    unresolved_px: tuple[int, ...]
    terrain: ScalarField
    texture: ScalarField

    @property
    def incidences_deg(self) -> tuple[float, ...]:
        return tuple(cam.incidence_deg for cam in self.cameras)

    def b_over_h(self, i: int = 0, j: int = -1) -> float:
        """Base-to-height ratio between views i and j at the scene centre."""
        a, b = self.cameras[i], self.cameras[j]
        base = np.subtract(a.position0_m, b.position0_m)
        return float(np.linalg.norm(base) / (a.position0_m[2] - a.frame.h0_m))

    @classmethod
    def load(cls, out_dir: str | Path) -> SyntheticScene:
        """Read back a scene written by :func:`generate_scene`."""
        root = Path(out_dir)
        path = root / SCENE_JSON
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            fields = np.load(root / FIELDS_NPZ)
            terrain_arr, texture_arr = fields["terrain"], fields["texture"]
        except (OSError, ValueError, KeyError) as exc:
            raise RasterReadError(f"{root}: not a synthetic scene folder ({exc})") from exc
        spec = SceneSpec.from_dict(doc["spec"])
        return cls(
            out_dir=root,
            spec=spec,
            crs=doc["crs"],
            view_paths=tuple(root / v["path"] for v in doc["views"]),
            rpcs=tuple(RpcModel(**v["rpc"], source=str(root / v["path"])) for v in doc["views"]),
            cameras=tuple(_camera_from_json(v["camera"]) for v in doc["views"]),
            dem_path=root / doc["dem"]["path"],
            dem_min_m=float(doc["dem"]["min_m"]),
            dem_max_m=float(doc["dem"]["max_m"]),
            footprint_lonlat=_box(doc["footprint_lonlat"]),
            footprint_utm=_box(doc["footprint_utm"]),
            fit_residual_px=tuple(float(v["fit_residual_px"]) for v in doc["views"]),
            unresolved_px=tuple(int(v["unresolved_px"]) for v in doc["views"]),
            terrain=ScalarField.from_json(doc["terrain"], terrain_arr),
            texture=ScalarField.from_json(doc["texture"], texture_arr),
        )


def _box(values: Sequence[float]) -> tuple[float, float, float, float]:
    return float(values[0]), float(values[1]), float(values[2]), float(values[3])


def _camera_to_json(cam: PushbroomCamera) -> dict[str, Any]:
    doc = {f.name: getattr(cam, f.name) for f in dataclasses.fields(cam) if f.name != "frame"}
    doc["frame"] = dataclasses.asdict(cam.frame)
    return doc


def _camera_from_json(doc: dict[str, Any]) -> PushbroomCamera:
    values = dict(doc)
    values["frame"] = LocalFrame(**values["frame"])
    for key in ("position0_m", "velocity_mps", "x_body", "y_body", "z_body"):
        values[key] = tuple(values[key])
    return PushbroomCamera(**values)


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS84 / UTM zone CRS ('EPSG:326zz' north, 'EPSG:327zz' south) holding a point."""
    return utm_crs(lon, lat)


# ----------------------------------------------------------------- building
def _footprint(
    cams: Sequence[PushbroomCamera], h_range: tuple[float, float]
) -> tuple[FloatArray, FloatArray]:
    """Lon/lat of every view's border pixels at both ends of the height range."""
    lons, lats = [], []
    for cam in cams:
        t = np.linspace(0.0, 1.0, 9)
        r = np.concatenate([t * 0, t, t * 0 + 1, t]) * (cam.height - 1)
        c = np.concatenate([t, t * 0, t, t * 0 + 1]) * (cam.width - 1)
        for h in h_range:
            lon, lat = cam.localize(r, c, h)
            lons.append(lon)
            lats.append(lat)
    return np.concatenate(lons), np.concatenate(lats)


def _iter_views(spec: SceneSpec, frame: LocalFrame) -> Iterator[PushbroomCamera]:
    for pitch in spec.pitches_deg():
        yield make_camera(
            frame, height=spec.height, width=spec.width, gsd_m=spec.gsd_m,
            heading_deg=spec.heading_deg, pitch_deg=pitch, roll_deg=spec.roll_deg,
            altitude_m=spec.altitude_m, target_h_m=spec.base_height_m,
        )


def generate_scene(spec: SceneSpec, out_dir: str | Path) -> SyntheticScene:
    """Write dem.tif, view_K.tif (+ .geom), fields.npz and scene.json; return the scene."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    crs = utm_crs_for(spec.centre_lon, spec.centre_lat)
    to_utm = lonlat_transformer(crs, inverse=True)
    terrain, texture, rng = make_fields(
        spec.seed, base_height_m=spec.base_height_m, relief_m=spec.relief_m,
        texture_cell_m=spec.texture_cell,
    )
    frame = LocalFrame(spec.centre_lon, spec.centre_lat, spec.base_height_m)
    cams = tuple(_iter_views(spec, frame))

    # nominal height bound (cubic convolution overshoots a [-1, 1] array by < 25 %)
    reach = 1.25 * sum(abs(w) for w in terrain.weight)
    h_nominal = (spec.base_height_m - reach - 5.0,
                 spec.base_height_m + reach + spec.building_height_m[1] + 5.0)
    lon, lat = _footprint(cams, h_nominal)
    x, y = to_utm.transform(lon, lat)
    res = spec.dem_resolution_m
    pad = 20.0 + 4 * res
    left = math.floor((float(np.min(x)) - pad) / res) * res
    top = math.ceil((float(np.max(y)) + pad) / res) * res
    width = math.ceil((float(np.max(x)) + pad - left) / res)
    height = math.ceil((top - float(np.min(y)) + pad) / res)
    dem_transform = (res, 0.0, left, 0.0, -res, top)
    buildings = make_buildings(
        rng, (left, top - height * res, left + width * res, top), terrain,
        cell_m=spec.building_cell_m, fraction=spec.building_fraction,
        height_range_m=spec.building_height_m,
    )
    dem_path = root / DEM_TIF
    dem_min, dem_max = write_dem(dem_path, crs, dem_transform, height, width, terrain,
                                  buildings)

    # a validity box as generous in height as a real product's (users localise at
    # heights of their own DEMs), still fitted to far below 1e-6 px
    h_fit = (dem_min - RPC_HEIGHT_MARGIN_M, dem_max + RPC_HEIGHT_MARGIN_M)
    views: list[dict[str, Any]] = []
    rpcs: list[RpcModel] = []
    unresolved: list[int] = []
    for k, cam in enumerate(cams):
        vlon, vlat = _footprint([cam], h_fit)
        dlon = 0.02 * float(np.ptp(vlon)) + 1e-6
        dlat = 0.02 * float(np.ptp(vlat)) + 1e-6
        path = root / f"view_{k}.tif"
        fit = fit_rpc(
            cam.project,
            lon_range=(float(vlon.min()) - dlon, float(vlon.max()) + dlon),
            lat_range=(float(vlat.min()) - dlat, float(vlat.max()) + dlat),
            h_range=h_fit, height=spec.height, width=spec.width, source=str(path),
        )
        rpcs.append(fit.model)
        unresolved.append(render_view(
            path, fit.model, (spec.height, spec.width), dem_path, crs, texture,
            (dem_min - 1.0, dem_max + 1.0), gain=spec.gain, dtype=spec.dtype,
            noise_sigma=spec.noise_sigma, noise_seed=(spec.seed, k),
        ))
        _write_sidecar(fit.model, path)
        views.append({
            "path": path.name,
            "rpc": {f.name: getattr(fit.model, f.name) for f in dataclasses.fields(fit.model)
                    if f.name != "source"},
            "camera": _camera_to_json(cam),
            "fit_residual_px": fit.max_residual_px,
            "fit_rms_px": fit.rms_residual_px,
            "incidence_deg": cam.incidence_deg,
            "unresolved_px": unresolved[-1],
        })

    # footprint: union of the views at the DEM's mean height
    lon, lat = _footprint(cams, (0.5 * (dem_min + dem_max),) * 2)
    x, y = to_utm.transform(lon, lat)
    footprint_lonlat = (float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max()))
    footprint_utm = (float(np.min(x)), float(np.min(y)), float(np.max(x)), float(np.max(y)))
    np.savez(root / FIELDS_NPZ, terrain=terrain.array, texture=texture.array)
    doc = {
        "format": "eochain-synthetic-scene/1",
        "spec": spec.to_dict(),
        "crs": crs,
        "dem": {"path": DEM_TIF, "min_m": dem_min, "max_m": dem_max,
                "transform": list(dem_transform), "height": height, "width": width,
                "height_reference": "WGS84 ellipsoid", "nodata": None,
                "interpolation": "bilinear, integer indices at pixel centres"},
        "footprint_lonlat": list(footprint_lonlat),
        "footprint_utm": list(footprint_utm),
        "terrain": terrain.to_json(),
        "texture": texture.to_json(),
        "image_value": f"{spec.gain} * reflectance + N(0, {spec.noise_sigma})",
        "views": views,
    }
    (root / SCENE_JSON).write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return SyntheticScene.load(root)


def _write_sidecar(model: RpcModel, image: Path) -> None:
    try:
        from ops.sensor.rpc_io import write_geom
    except ImportError:  # the RPC writers are optional for the generator
        return
    write_geom(model, image.with_suffix(".geom"))


# -------------------------------------------------------------------- truth
def _geobox_utm(scene: SyntheticScene, geobox: GeoBoxLike) -> tuple[FloatArray, FloatArray]:
    a, b, c, d, e, f = geobox.transform
    cols, rows = np.meshgrid(np.arange(geobox.width) + 0.5, np.arange(geobox.height) + 0.5)
    x = (a * cols + b * rows + c).ravel()
    y = (d * cols + e * rows + f).ravel()
    if geobox.crs != scene.crs:
        tr = transformer(geobox.crs, scene.crs)
        x, y = tr.transform(x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def truth_ortho(scene: SyntheticScene, geobox: GeoBoxLike) -> FloatArray:
    """Noise-free image value (gain x reflectance) at the pixel centres of any map grid."""
    x, y = _geobox_utm(scene, geobox)
    values = scene.spec.gain * scene.texture.sample(x, y)
    return values.reshape(geobox.height, geobox.width)


def truth_heights(scene: SyntheticScene, geobox: GeoBoxLike) -> FloatArray:
    """True height above the ellipsoid at the pixel centres of any map grid (NaN off the DEM)."""
    x, y = _geobox_utm(scene, geobox)
    return dem_bilinear(scene.dem_path, x, y).reshape(geobox.height, geobox.width)


def truth_heights_at(scene: SyntheticScene, x: FloatArray, y: FloatArray) -> FloatArray:
    """True heights at scattered points of the scene's UTM CRS (NaN off the DEM)."""
    xa, ya = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return dem_bilinear(scene.dem_path, xa.ravel(), ya.ravel()).reshape(xa.shape)


def truth_values_at(scene: SyntheticScene, x: FloatArray, y: FloatArray) -> FloatArray:
    """Noise-free image values (gain x reflectance) at scattered points of the UTM CRS."""
    return scene.spec.gain * scene.texture.sample(x, y)


def truth_visibility(scene: SyntheticScene, view: int, geobox: GeoBoxLike) -> NDArray[np.bool_]:
    """Whether each true ground point under the grid's pixel centres is seen by ``view``:
    inside the image and not hidden (by a building or relief) from the camera."""
    if not 0 <= view < len(scene.rpcs):
        raise GeometryError(f"view {view} is not one of the scene's {len(scene.rpcs)} views")
    x, y = _geobox_utm(scene, geobox)
    seen = np.zeros(x.shape, dtype=bool)
    to_lonlat = lonlat_transformer(scene.crs)
    chunk = 1 << 20
    for start in range(0, x.size, chunk):
        xs, ys = x[start:start + chunk], y[start:start + chunk]
        h = dem_bilinear(scene.dem_path, xs, ys)
        lon, lat = to_lonlat.transform(xs, ys)
        rows, cols = scene.rpcs[view].project(lon, lat, np.nan_to_num(h), check=False)
        inside = (np.isfinite(h) & (rows >= -0.5) & (rows <= scene.spec.height - 0.5)
                  & (cols >= -0.5) & (cols <= scene.spec.width - 0.5))
        if not inside.any():
            continue
        hx, hy, hh = intersect_rays(scene, view, rows[inside], cols[inside])
        hit = np.hypot(hx - xs[inside], hy - ys[inside]) + np.abs(hh - h[inside]) < 1e-3
        part = np.zeros(xs.shape, dtype=bool)
        part[np.flatnonzero(inside)[hit]] = True
        seen[start:start + chunk] = part
    return seen.reshape(geobox.height, geobox.width)


def intersect_rays(
    scene: SyntheticScene, view: int, rows: FloatArray, cols: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """UTM (x, y) and height of the ground point each image point of ``view`` sees.

    The first hit of the line of sight with the true DEM, as rendered; NaN where the
    ray misses the DEM. Ground truth for visibility: a ground point P is seen by the
    view iff intersect_rays at P's projection returns P.
    """
    if not 0 <= view < len(scene.rpcs):
        raise GeometryError(f"view {view} is not one of the scene's {len(scene.rpcs)} views")
    r = np.asarray(rows, dtype=np.float64)
    c = np.asarray(cols, dtype=np.float64)
    x, y, h = intersect_rays_utm(
        scene.rpcs[view], scene.dem_path, scene.crs, r.ravel(), c.ravel(),
        (scene.dem_min_m - 1.0, scene.dem_max_m + 1.0),
    )
    return x.reshape(r.shape), y.reshape(r.shape), h.reshape(r.shape)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ops.synthetic.scene OUT_DIR [--width N --height N ...]``: write a scene."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m ops.synthetic.scene", description=main.__doc__)
    parser.add_argument("out_dir", type=Path)
    defaults = SceneSpec()
    for name in ("width", "height", "n_views", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            default=getattr(defaults, name))
    for name in ("gsd_m", "b_over_h", "roll_deg", "heading_deg", "centre_lon", "centre_lat",
                 "dem_resolution_m", "relief_m", "building_fraction", "noise_sigma"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float,
                            default=getattr(defaults, name))
    parser.add_argument("--dtype", choices=sorted(_DTYPE_GAIN), default=defaults.dtype)
    args = vars(parser.parse_args(argv))
    out_dir = args.pop("out_dir")
    spec = SceneSpec(**args)
    start = time.perf_counter()
    scene = generate_scene(spec, out_dir)
    print(f"{out_dir}: {spec.n_views} views of {spec.height} x {spec.width} px at "
          f"{spec.gsd_m} m, B/H {scene.b_over_h():.3f}, incidences "
          f"{', '.join(f'{i:.2f}' for i in scene.incidences_deg)} deg, DEM "
          f"{scene.dem_min_m:.1f}..{scene.dem_max_m:.1f} m ({scene.crs}), RPC fit <= "
          f"{max(scene.fit_residual_px):.1e} px, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
