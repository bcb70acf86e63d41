"""RPC agreement with GDAL and projection throughput, on every real RPC fixture.

Run: ``python -m benchmarks.rpc_agreement`` (reads the shared sample data from
``$EOCHAIN_SHARED_DATA`` or ``../shared/data``). Writes the table below to
``benchmarks/results/rpc_agreement.json``.

Baseline: GDAL's own RPC transformer (``rasterio.transform.RPCTransformer``,
i.e. ``GDALCreateRPCTransformerV2`` with no DEM and no approximation; the
approximate transformer only enters through warping). Where GDAL can parse
the container itself it does, independently of our readers:

* ``direct``: the file is opened with GDAL (GeoTIFF tags, NITF TRE, VRT);
* ``sidecar``: a blank image is staged in a temporary folder beside a symlink
  to the RPC file under the name GDAL looks for (``<stem>_RPC.TXT``,
  ``<stem>.XML`` for DigitalGlobe, ``RPC_<core>.XML`` next to
  ``IMG_<core>_R1C1.tif`` for DIMAP, which GDAL shifts to 0-based itself);
* ``to_rasterio``: GDAL has no reader (OSSIM ``.geom``, IARPA JSON), so our
  parsed model goes through ``RpcModel.to_rasterio()``, crop origin folded
  in; this checks evaluation and the crop convention, not the parser.

Points: an ``n x n`` grid spanning the image (its edges, ``-0.5`` to
``size - 0.5``) times ``n_h`` heights spanning the RPC height range, turned
into ground points by our ``localize``. ``max |d|`` compares our ``project``
with GDAL's pixel/line minus 0.5 (GDAL puts 0.5 at the first pixel's
centre); the round trip is ``|project(localize(r, c, h)) - (r, c)|``.
Throughput: 1e6 random ground points in the model's box, best of 3 runs
each; ratio = our Mpts/s / GDAL's Mpts/s (higher is better). Ours is a numba
kernel parallel over the machine's cores, GDAL's transformer is one thread.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import RPCTransformer

from benchmarks.common import shared_data
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc, read_rpc

RESULTS = Path(__file__).resolve().parent / "results" / "rpc_agreement.json"
TOLERANCE_PX = 1e-3


@dataclass(frozen=True, slots=True)
class FixtureSpec:
    """One RPC fixture: where it is, its container, and how GDAL gets at it."""

    name: str
    container: str
    gdal_route: str  # "direct" | "sidecar_txt" | "sidecar_dg" | "sidecar_dimap" | "to_rasterio"
    image: str | None = None  # image giving the extent and crop origin


FIXTURES: tuple[FixtureSpec, ...] = (
    FixtureSpec("rpc_fixtures/PHR1B_P_201709281038393_SEN_PRG_FC_178609-001.tif",
                "GeoTIFF RPC tags", "direct"),
    FixtureSpec("rpc_fixtures/PHR1B_P_201709281038393_SEN_PRG_FC_178609-001.geom",
                "OSSIM .geom", "to_rasterio"),
    FixtureSpec("rpc_fixtures/RPC_PHR1B_P_201709281038393_SEN_PRG_FC_178609-001.XML",
                "DIMAP RPC XML", "sidecar_dimap"),
    FixtureSpec("rpc_fixtures/rpc_PLEIADES.xml", "DIMAP RPC XML", "sidecar_dimap"),
    FixtureSpec("rpc_fixtures/rpc_SPOT6.xml", "DIMAP RPC XML", "sidecar_dimap"),
    FixtureSpec("rpc_fixtures/rpc_WV2.xml", "DigitalGlobe XML", "sidecar_dg"),
    FixtureSpec("rpc_fixtures/rpc_WV3.xml", "DigitalGlobe XML", "sidecar_dg"),
    FixtureSpec("rpc_fixtures/20191015_073816_ssc1d3_0011_basic_l1a_panchromatic_dn_RPC.TXT",
                "_RPC.TXT", "sidecar_txt"),
    FixtureSpec("rpc_fixtures/JAX_068_001_RGB.json", "IARPA/DFC JSON", "to_rasterio"),
    FixtureSpec("rpc_fixtures/wv3_20.NTF", "NITF RPC00B TRE", "direct"),
    FixtureSpec("rpc_fixtures/RGB.byte.rpc.vrt", "VRT RPC metadata", "direct"),
    FixtureSpec("gizeh/img1.geom", "OSSIM .geom + crop", "to_rasterio", "gizeh/img1.tif"),
    FixtureSpec("gizeh/img2.geom", "OSSIM .geom + crop", "to_rasterio", "gizeh/img2.tif"),
    FixtureSpec("gizeh/color1.geom", "OSSIM .geom + crop", "to_rasterio", "gizeh/color1.tif"),
    FixtureSpec("ventoux/left_image.geom", "OSSIM .geom + crop", "to_rasterio",
                "ventoux/left_image.tif"),
    FixtureSpec("ventoux/right_image.geom", "OSSIM .geom + crop", "to_rasterio",
                "ventoux/right_image.tif"),
    FixtureSpec("ventoux/RPC_PHR1B_P_201308051042194_SEN_690908101-001.XML",
                "DIMAP RPC XML", "sidecar_dimap"),
)


@dataclass(frozen=True, slots=True)
class Agreement:
    """Our model against GDAL's transformer on one fixture's point grid."""

    fixture: str
    container: str
    gdal_route: str
    points: int
    max_diff_px: float
    roundtrip_px: float


def _quiet_open(path: Path, mode: str = "r", **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, mode, **kwargs)


def _blank_image(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1,
                           dtype="uint8") as ds:
            ds.write(np.zeros((1, 8, 8), dtype=np.uint8))


def our_model(spec: FixtureSpec, data: Path) -> RpcModel:
    """The model under test: our reader on the fixture, crop origin from its image."""
    if spec.image is not None:
        return find_rpc(data / spec.image)
    return read_rpc(data / spec.name)


def gdal_rpc(spec: FixtureSpec, data: Path, model: RpcModel, stage: Path) -> Any:
    """The ``rasterio.rpc.RPC`` that GDAL itself reads for this fixture (see module doc)."""
    src = data / spec.name
    stem = stage / src.stem.replace(".", "_")
    if spec.gdal_route == "direct":
        image = src
    elif spec.gdal_route == "sidecar_txt":
        image = stem.with_suffix(".tif")
        os.symlink(src, f"{stem}_RPC.TXT")
    elif spec.gdal_route == "sidecar_dg":
        image = stem.with_suffix(".tif")
        os.symlink(src, stem.with_suffix(".XML"))
    elif spec.gdal_route == "sidecar_dimap":
        core = "PHR1B_P_000000000000000_SEN_STAGED-001"
        image = stage / f"IMG_{core}_R1C1.tif"
        os.symlink(src, stage / f"RPC_{core}.XML")
    elif spec.gdal_route == "to_rasterio":
        return model.to_rasterio()
    else:
        raise ValueError(f"unknown gdal_route {spec.gdal_route!r} for {spec.name}")
    if image != src:
        _blank_image(image)
    with _quiet_open(image) as ds:
        rpc = ds.rpcs
    if rpc is None:
        raise RuntimeError(f"GDAL read no RPC for {spec.name} through {image}")
    return rpc


def image_shape(spec: FixtureSpec, data: Path, model: RpcModel) -> tuple[int, int]:
    """(height, width) the grid spans: the image's, else the JSON's, else the model box."""
    path = data / (spec.image or spec.name)
    if spec.image is not None or spec.gdal_route == "direct":
        with _quiet_open(path) as ds:
            return int(ds.height), int(ds.width)
    if path.suffix.lower() == ".json":
        meta = json.loads(path.read_text())
        return int(meta["height"]), int(meta["width"])
    return (round(model.line_off + model.line_scale) + 1,
            round(model.samp_off + model.samp_scale) + 1)


def grid_points(
    shape: tuple[int, int], model: RpcModel, n: int = 21, n_h: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, h) arrays: n x n over the image, edge to edge, times n_h heights."""
    rows = np.linspace(-0.5, shape[0] - 0.5, n)
    cols = np.linspace(-0.5, shape[1] - 0.5, n)
    hs = np.linspace(*model.height_range, n_h)
    r, c, h = np.meshgrid(rows, cols, hs, indexing="ij")
    return r.ravel(), c.ravel(), h.ravel()


def gdal_rowcol(tr: RPCTransformer, lon: np.ndarray, lat: np.ndarray,
                h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GDAL's exact ground-to-image, moved to our convention (centre of first pixel = 0)."""
    rows, cols = tr.rowcol(lon, lat, h, op=np.positive)
    return np.asarray(rows, dtype=np.float64) - 0.5, np.asarray(cols, dtype=np.float64) - 0.5


def agreement(spec: FixtureSpec, data: Path, n: int = 21, n_h: int = 5) -> Agreement:
    """Max |ours - GDAL| and the localisation round trip, in pixels, on the point grid."""
    model = our_model(spec, data)
    rows, cols, hs = grid_points(image_shape(spec, data, model), model, n, n_h)
    lon, lat = model.localize(rows, cols, hs)
    r, c = model.project(lon, lat, hs)
    with tempfile.TemporaryDirectory(prefix="rpc_agreement_") as tmp:
        rpc = gdal_rpc(spec, data, model, Path(tmp))
        with RPCTransformer(rpc) as tr:
            gr, gc = gdal_rowcol(tr, lon, lat, hs)
    return Agreement(
        fixture=spec.name, container=spec.container, gdal_route=spec.gdal_route,
        points=int(rows.size),
        max_diff_px=float(max(np.max(np.abs(gr - r)), np.max(np.abs(gc - c)))),
        roundtrip_px=float(max(np.max(np.abs(r - rows)), np.max(np.abs(c - cols)))),
    )


def _best_s(fn: Callable[[], object], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def throughput(model: RpcModel, rpc: Any, n: int = 1_000_000) -> dict[str, float]:
    """Mpts/s of our project/localize and of GDAL's transformer on n random points."""
    rng = np.random.default_rng(0)
    lon = model.lon_off + model.lon_scale * rng.uniform(-1, 1, n)
    lat = model.lat_off + model.lat_scale * rng.uniform(-1, 1, n)
    h = model.height_off + model.height_scale * rng.uniform(-1, 1, n)
    model.project(lon[:10], lat[:10], h[:10])  # compile outside the timing
    ours_s = _best_s(lambda: model.project(lon, lat, h))
    with RPCTransformer(rpc) as tr:
        gdal_s = _best_s(lambda: tr.rowcol(lon, lat, h, op=np.positive))
    row, col = model.project(lon, lat, h)
    model.localize(row[:10], col[:10], h[:10], check=False)
    loc_s = _best_s(lambda: model.localize(row, col, h, check=False))
    return {
        "ours_mpts_s": n / ours_s / 1e6,
        "gdal_mpts_s": n / gdal_s / 1e6,
        "ratio": gdal_s / ours_s,
        "ours_localize_mpts_s": n / loc_s / 1e6,
    }


def machine_state() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "gdal": rasterio.__gdal_version__, "rasterio": rasterio.__version__,
        "numpy": np.__version__, "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
    }


def main() -> None:
    data = shared_data()
    state = machine_state()
    rows: list[dict[str, Any]] = []
    header = (f"{'fixture':<44} {'container':<19} {'gdal route':<13} {'points':>6} "
              f"{'max|d| px':>9} {'rtrip px':>9} {'ours Mpt/s':>10} {'GDAL Mpt/s':>10} "
              f"{'ratio':>6} {'loc Mpt/s':>9}")
    print("RPC agreement: ours vs GDAL RPCTransformer (exact, no DEM); "
          f"tolerance {TOLERANCE_PX} px")
    print("state: " + ", ".join(f"{k}={v}" for k, v in state.items()))
    print("inputs: 21x21 image points x 5 heights per fixture; throughput on 1e6 random "
          "ground points, best of 3; ratio = ours / GDAL")
    print(header)
    print("-" * len(header))
    for spec in FIXTURES:
        result = agreement(spec, data)
        model = our_model(spec, data)
        with tempfile.TemporaryDirectory(prefix="rpc_agreement_") as tmp:
            speed = throughput(model, gdal_rpc(spec, data, model, Path(tmp)))
        row = {**asdict(result), **speed}
        rows.append(row)
        print(f"{spec.name[-44:]:<44} {spec.container:<19} {spec.gdal_route:<13} "
              f"{result.points:>6} {result.max_diff_px:>9.1e} {result.roundtrip_px:>9.1e} "
              f"{speed['ours_mpts_s']:>10.1f} {speed['gdal_mpts_s']:>10.2f} "
              f"{speed['ratio']:>6.1f} {speed['ours_localize_mpts_s']:>9.1f}")
    worst = max(r["max_diff_px"] for r in rows)
    worst_rt = max(r["roundtrip_px"] for r in rows)
    print(f"worst max|d| {worst:.2e} px, worst round trip {worst_rt:.2e} px "
          f"({'PASS' if max(worst, worst_rt) <= TOLERANCE_PX else 'FAIL'} at {TOLERANCE_PX} px)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "rpc_agreement",
        "baseline": "GDAL RPCTransformer via rasterio (exact, no DEM, no approximation)",
        "state": state,
        "inputs": {
            "grid": "21 x 21 image points x 5 heights over the RPC height range",
            "throughput_points": 1_000_000, "tolerance_px": TOLERANCE_PX,
            "data": str(data),
        },
        "rows": rows,
        "worst_max_diff_px": worst, "worst_roundtrip_px": worst_rt,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
