"""Reading scenes' facts from their files at plan time: size, footprint, sensor, acquisition.

The planner reads no files; a campaign that names scenes by ``uri`` only is
completed by :class:`SceneSurvey`, the :class:`planner.scene_inputs.SceneReader`
of the command line. Per image:

- size: the raster's header (:func:`ops.raster.raster_io.raster_info`);
- footprint: the image outline (every ``OUTLINE_STEPS``-th of each edge)
  projected through its RPC (:func:`ops.sensor.rpc_io.find_rpc`) at the lowest and
  highest ground height: the DEM's range under the RPC's own box when a DEM
  is given, else the RPC's validity range (``height_off`` +- ``height_scale``,
  wider, so the footprint is larger than the ground seen);
- sensor: the ``MISSION`` + ``MISSION_INDEX`` (DIMAP) or ``SENSOR`` tags;
- acquisition: :func:`ops.sensor.acquisition.read_acquisition` (start time).

Images are read on daemon threads, ``workers`` at a time; an image that takes
longer than ``timeout_s`` is reported as timed out (its thread is abandoned,
not waited for) and the others proceed. Each failure becomes a one-line
reason, never an exception: the caller reports all of them at once.

``eochain plan`` and ``eochain run`` load a campaign through
:func:`load_surveyed_campaign`: scenes read, then the work estimated and
refused beyond the limits of :mod:`planner.workload` unless ``allow_large``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click
import numpy as np
import rasterio
from rasterio.errors import RasterioError

from ops.errors import OpsError
from ops.raster.raster_io import raster_info
from ops.sensor.acquisition import read_acquisition
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_io import find_rpc
from ops.terrain.dem import Dem
from planner.campaign import Campaign, load_campaign
from planner.scene_inputs import SceneFacts
from planner.workload import campaign_workload, check_workload

#: Seconds one image may take before it is reported as timed out.
TIMEOUT_S = 30.0
#: Images read at once.
WORKERS = 8
#: Surveys of at least this many images show their progress on stderr.
PROGRESS_FROM = 20
#: Points sampled along each edge of the outline.
OUTLINE_STEPS = 16


def _outline(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.linspace(-0.5, rows - 0.5, OUTLINE_STEPS)
    c = np.linspace(-0.5, cols - 0.5, OUTLINE_STEPS)
    out_r = np.concatenate([r, r, np.full(c.size, -0.5), np.full(c.size, rows - 0.5)])
    out_c = np.concatenate([np.full(r.size, -0.5), np.full(r.size, cols - 0.5), c, c])
    return out_r, out_c


def _box(rpc: RpcModel, rows: int, cols: int, heights: tuple[float, float]
         ) -> tuple[float, float, float, float]:
    r, c = _outline(rows, cols)
    lons, lats = [], []
    for h in heights:
        lon, lat = rpc.localize(r, c, np.full(r.shape, h), check=False)
        lons.append(lon)
        lats.append(lat)
    lon_all, lat_all = np.concatenate(lons), np.concatenate(lats)
    ok = np.isfinite(lon_all) & np.isfinite(lat_all)
    if not ok.any():
        raise ValueError(f"{rpc.source}: the RPC cannot localise the image outline")
    return (float(lon_all[ok].min()), float(lat_all[ok].min()),
            float(lon_all[ok].max()), float(lat_all[ok].max()))


def _sensor(path: str) -> str:
    with rasterio.open(path) as src:
        tags = src.tags()
    if tags.get("MISSION"):
        return str(tags["MISSION"]) + str(tags.get("MISSION_INDEX", ""))
    return str(tags.get("SENSOR", "") or tags.get("SATELLITEID", ""))


def read_scene_facts(path: str, dem: str | None = None, geoid: str | None = None) -> SceneFacts:
    """The facts of one image (see the module docstring); raises on unreadable files."""
    info = raster_info(path)
    rpc = find_rpc(path)
    rpc_range = (rpc.height_off - rpc.height_scale, rpc.height_off + rpc.height_scale)
    box = _box(rpc, info.height, info.width, rpc_range)
    how = f"RPC at its height range {rpc_range[0]:.0f}..{rpc_range[1]:.0f} m"
    if dem is not None:
        heights = Dem.open(dem, geoid=geoid, bounds_lonlat=box, require_bounds=False)
        lo, hi = heights.min_max(*box)
        box = _box(rpc, info.height, info.width, (lo, hi))
        how = f"RPC at the DEM's heights {lo:.0f}..{hi:.0f} m"
    acquisition = read_acquisition(path)
    return SceneFacts(info.height, info.width, box, _sensor(path),
                      "" if acquisition is None else acquisition.start.isoformat(), how)


class SceneSurvey:
    """A :class:`planner.scene_inputs.SceneReader`: images read in parallel, each with a timeout.

    ``progress(done, total)`` is called as images finish (for long surveys).
    """

    def __init__(self, dem: str | None = None, geoid: str | None = None, *,
                 timeout_s: float = TIMEOUT_S, workers: int = WORKERS,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.dem, self.geoid = dem, geoid
        self.timeout_s, self.workers = timeout_s, max(1, workers)
        self.progress = progress

    def _one(self, path: str) -> SceneFacts | str:
        try:
            return read_scene_facts(path, self.dem, self.geoid)
        except (OpsError, RasterioError, OSError, ValueError) as exc:
            return f"cannot read its facts: {exc}"

    def __call__(self, paths: Sequence[str]) -> list[SceneFacts | str]:
        results: dict[int, SceneFacts | str] = {}
        started: dict[int, float] = {}
        todo: queue.Queue[int] = queue.Queue()
        for i in range(len(paths)):
            todo.put(i)
        lock = threading.Lock()
        finished = threading.Condition(lock)

        def work() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                with lock:
                    if i in results:
                        continue
                    started[i] = time.monotonic()
                found = self._one(paths[i])
                with finished:
                    results.setdefault(i, found)
                    finished.notify()

        for _ in range(min(self.workers, len(paths))):
            threading.Thread(target=work, daemon=True, name="scene-survey").start()
        with finished:
            while len(results) < len(paths):
                now = time.monotonic()
                for i, t0 in started.items():
                    if i not in results and now - t0 > self.timeout_s:
                        results[i] = (f"no answer within {self.timeout_s:g} s (timed out; "
                                      "a slow or unreachable store?)")
                        # the stuck thread is abandoned: start a replacement
                        threading.Thread(target=work, daemon=True, name="scene-survey").start()
                if self.progress is not None:
                    self.progress(len(results), len(paths))
                finished.wait(timeout=0.2)
        if self.progress is not None:
            self.progress(len(paths), len(paths))
        return [results[i] for i in range(len(paths))]


def _progress(done: int, total: int) -> None:
    if total >= PROGRESS_FROM:
        end = "\n" if done == total else ""
        print(f"\rreading scenes: {done}/{total}", end=end, file=sys.stderr, flush=True)


def load_surveyed_campaign(path: Path, *, dem: str | None = None, geoid: str | None = None,
                           allow_large: bool = False) -> Campaign:
    """The campaign at ``path``, scenes by path read from their files, size checked."""
    survey = SceneSurvey(dem, geoid, progress=_progress)
    campaign = load_campaign(path, reader=survey, allow_large=allow_large)
    work = campaign_workload(campaign)
    check_workload(work, allow_large=allow_large)
    click.echo(f"work: {work.describe()} (estimate)", err=True)
    return campaign
