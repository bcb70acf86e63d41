"""Campaign CPU efficiency: the kernels' CPU-seconds over cores x wall of ``eochain run``.

Run: ``python -m benchmarks.campaign_efficiency [--seeds 4] [--size 8192] [--tile 1024]
[--dem-spacing 30] [--cpus C] [--repeat 3] [--scenes DIR] [--first N]``. Writes
``benchmarks/results/campaign_efficiency.json`` (``campaign_efficiency_firstN.json``
with ``--first N``: the campaign cut to its first N scenes, a small campaign whose
last COG write ends the run alone, the case the dispatcher lends idle actors'
CPUs to).

State machine and inputs:

1. ``--seeds`` synthetic scenes (:func:`ops.synthetic.scene.generate_scene`, 0.5 m,
   uint16 as Pléiades primary products, seeds 0..N-1, all at the same place);
   each scene's two views are two scenes of the campaign (8 by default),
   orthorectified at 0.5 m in tiles of ``--tile`` px (1024, ``eochain
   ortho``'s default: 8192 px scenes make 100 tiles each, 800 in all), with
   the DEM of seed 0 averaged to ``--dem-spacing`` metres (30: the spacing of
   the 1 arc-second DEMs campaigns use; the scenes' own 1 m DEM makes the
   survey and every ortho plan read 100 MB). ``--scenes DIR`` keeps the scenes
   between invocations (generating them takes minutes).
2. A campaign file listing the views by ``uri`` (with their footprint and
   size), written next to them.
3. Before each run a local Ray with all ``--cpus`` (default: every core) is
   started in this process by the :class:`~scheduler.products.driver.Driver`
   that ``eochain run`` without ``--address`` starts its own with (its default
   object store, :func:`~scheduler.runtime.options.local_object_store_bytes`,
   stated in the results); its start-up, and the time until its
   processes are quiet (its agents and the worker processes Ray starts ahead
   of tasks go on importing after ``ray.init``), are stated on their own, and
   Ray is shut down after the run. The run's actors take those worker
   processes, as in the command. ``--reuse-ray`` starts Ray once for all runs
   instead: each run's actors then start new worker processes (Ray started
   its own for the first run only), as on a cluster that ran jobs before.
4. ``--repeat`` times, ``eochain run CAMPAIGN --dem DEM --out OUT -q`` runs in
   this process (the click command itself, as the console script calls it);
   it finds Ray connected and uses it. The dispatcher's report (the
   ``run_report`` of its closing log record) gives the CPU seconds measured
   inside the actors, per task (process CPU time of the worker while the
   task's function ran), when the first task started and when the last
   result came. The run with the median share is reported, with the spread,
   and the first run apart: a user's ``eochain run`` is a new process, which
   pays the first-time set-up (numba's typing registries on the survey's
   first RPC call, Ray's serialization context, networkx) that later runs
   of this process skip.

Figures::

    share          = task CPU-s / (C x command wall)      (Ray already up; goal >= 0.9)
    share_tasks    = task CPU-s / (C x (end - first task start))
    occupancy      = task wall-s / (C x command wall)     (cores given a task at all)
    cpu_per_busy   = task CPU-s / task wall-s             (< 1: the machine's other
                                                           processes took the core)
    ours           = CPU-s of this process and its descendants (driver, Ray's
                     daemons and workers) during the command, from /proc
    others         = the machine's busy CPU-s (/proc/stat) - ours: other users'
                     processes on a shared machine
    share_left     = task CPU-s / (C x command wall - others)  (the CPU the
                     machine left the run; what the run itself controls)
    start-up       = ray.init seconds, then until Ray is quiet; command start ->
                     first task start (campaign file, survey, actor start-up)
    tasks span     = first task start -> last result read
    after          = last result read -> command end (collection, summary,
                     cost report)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from scheduler.products.driver import Driver
from scheduler.ray_private import use_loopback
from scheduler.runtime.dispatch import RunReport

RESULTS = Path(__file__).resolve().parent / "results" / "campaign_efficiency.json"
GOAL = 0.9
#: The scenes' pixels: 12-bit counts in 16 bits, as Pléiades primary products.
DTYPE = "uint16"


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds user + system) of a live process, ``None`` when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def descendants(root_pid: int, parent: dict[int, int]) -> set[int]:
    """``root_pid`` and the pids whose chain of ``parent`` leads to it."""
    mine = {root_pid}
    for pid in parent:
        chain, p = [], pid
        while p > 1 and p not in mine and p in parent:
            chain.append(p)
            p = parent[p]
        if p in mine:
            mine.update(chain)
    return mine


def tree_cpu(root_pid: int, parent: dict[int, int] | None = None) -> dict[int, float]:
    """CPU seconds per process of ``root_pid`` and its live descendants (user + system).

    ``parent`` (pid -> parent pid, updated here) spares re-reading every other
    process of the machine at each call: only new pids and the tree's own are read.
    """
    parent = {} if parent is None else parent
    live = {int(n) for n in os.listdir("/proc") if n.isdigit()}
    for pid in list(parent):
        if pid not in live:
            del parent[pid]
    for pid in live - parent.keys():
        stat = proc_stat(pid)
        if stat is not None:
            parent[pid] = stat[0]
    mine: dict[int, float] = {}
    for pid in descendants(root_pid, parent) & live:
        stat = proc_stat(pid)
        if stat is not None:
            mine[pid] = stat[1]
    return mine


def process_kind(pid: int) -> str:
    """``driver`` (this process), ``workers`` (Ray workers: the run's actors), ``ray`` (raylet,
    GCS, Ray's agents and other helpers of this tree)."""
    if pid == os.getpid():
        return "driver"
    try:
        name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return "ray"
    worker = name.startswith("ray::") and not name.startswith(("ray::IDLE_", "ray::Dashboard",
                                                                 "ray::RuntimeEnv"))
    return "workers" if worker else "ray"


class TreeCpu:
    """CPU seconds this process tree used between :meth:`start` and :meth:`stop`, by kind
    of process (:func:`process_kind`).

    Sampled every ``interval_s`` in a thread, keeping each process's last
    reading, so processes that end meanwhile (the run's actors) still count
    (up to one interval of theirs is missed).
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._kind: dict[int, str] = {}
        self._parent: dict[int, int] = {}
        self._baseline_taken = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for pid, seconds in tree_cpu(os.getpid(), self._parent).items():
            # a process already there counts from now, a new one from its start
            self._first.setdefault(pid, 0.0 if self._baseline_taken else seconds)
            self._last[pid] = seconds
            if self._kind.get(pid) != "workers":  # a worker is named once it runs an actor
                self._kind[pid] = process_kind(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._baseline_taken = True
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        by_kind = {"driver": 0.0, "workers": 0.0, "ray": 0.0}
        for p in self._last:
            by_kind[self._kind[p]] += self._last[p] - self._first.get(p, 0.0)
        return by_kind


class _ReportCatcher(logging.Handler):
    """Keeps the dispatcher's :class:`RunReport` from its closing log record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reports: list[RunReport] = []

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "run_report", None)
        if isinstance(report, RunReport):
            self.reports.append(report)


def coarse_dem(src: Path, spacing_m: float) -> Path:
    """``src`` (a synthetic scene's 1 m DEM) averaged to ``spacing_m``, next to it: the
    spacing of the DEMs campaigns use (Copernicus/SRTM 1 arc-second, ~30 m). Made once."""
    import math

    import rasterio
    from rasterio.warp import Resampling, reproject

    dst = src.with_name(f"dem_{spacing_m:g}m.tif")
    if dst.exists():
        return dst
    with rasterio.open(src) as ds:
        left, bottom, right, top = ds.bounds
        width = math.ceil((right - left) / spacing_m)
        height = math.ceil((top - bottom) / spacing_m)
        transform = rasterio.Affine(spacing_m, 0.0, left, 0.0, -spacing_m, top)
        profile = {**ds.profile, "width": width, "height": height, "transform": transform,
                   "tiled": False}
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        with rasterio.open(dst, "w", **profile) as out:
            reproject(rasterio.band(ds, 1), rasterio.band(out, 1),
                      resampling=Resampling.average)
    return dst


def write_campaign(root: Path, seeds: int, size: int, tile_px: int) -> tuple[Path, Path]:
    """Scenes and the campaign file listing them: (campaign file, DEM)."""
    from ops.synthetic.scene import SceneSpec, generate_scene

    entries: list[dict[str, Any]] = []
    dem: Path | None = None
    for seed in range(seeds):
        scene = generate_scene(SceneSpec(width=size, height=size, seed=seed, dtype=DTYPE),
                               root / f"s{seed}")
        dem = dem or scene.out_dir / "dem.tif"
        lon0, lat0, lon1, lat1 = (float(v) for v in scene.footprint_lonlat)
        entries.extend({"id": f"s{seed}v{k}", "uri": f"s{seed}/view_{k}.tif",
                        "footprint": [lon0, lat0, lon1, lat1], "rows": size, "cols": size}
                       for k in (0, 1))
    campaign = {
        "name": "efficiency",
        "inputs": {"scenes": entries},
        "products": {"ortho": {"gsd_m": 0.5}},
        "tiling": {"tile_px": tile_px, "margin_px": 0},
        "data": {"region": "eu-west-3", "bucket": "unused"},
        "deadline_h": 1,
        "compute": {"regions": ["eu-west-3"], "families": ["c7g"], "markets": ["spot"]},
    }
    path = root / "campaign.yaml"
    path.write_text(yaml.safe_dump(campaign))
    assert dem is not None
    return path, dem


def first_scenes(campaign: Path, n: int) -> Path:
    """A campaign file beside ``campaign`` listing only its first ``n`` scenes."""
    doc = yaml.safe_load(campaign.read_text())
    scenes = doc["inputs"]["scenes"]
    if not 1 <= n <= len(scenes):
        raise SystemExit(f"--first {n}: the campaign has {len(scenes)} scenes; expected 1 to "
                         f"{len(scenes)}")
    doc["inputs"]["scenes"] = scenes[:n]
    path = campaign.with_name(f"campaign-first{n}.yaml")
    path.write_text(yaml.safe_dump(doc))
    return path


def ray_settle(limit_s: float = 30.0, window_s: float = 0.5, idle_cores: float = 0.05) -> float:
    """Seconds until Ray's processes (this process's descendants) are quiet: ``ray.init``
    returns while its agents still import; their start-up belongs to Ray's, not the run's."""
    start = time.perf_counter()
    before = sum(tree_cpu(os.getpid()).values())
    while time.perf_counter() - start < limit_s:
        time.sleep(window_s)
        now = sum(tree_cpu(os.getpid()).values())
        if now - before < idle_cores * window_s * (os.cpu_count() or 1):
            break
        before = now
    return time.perf_counter() - start


def run_once(campaign: Path, dem: Path, out: Path) -> dict[str, Any]:
    """One ``eochain run`` of the campaign on the connected Ray: its figures."""
    from scheduler.cli.run import run

    catcher = _ReportCatcher()
    dispatch_log = logging.getLogger("scheduler.runtime.dispatch")
    dispatch_log.addHandler(catcher)
    dispatch_log.setLevel(logging.INFO)
    try:
        started_at = time.time()
        ours, machine0 = TreeCpu(), machine_busy_cpu_s()
        ours.start()
        t1 = time.perf_counter()
        try:
            run.main([str(campaign), "--dem", str(dem), "--out", str(out), "-q"],
                     standalone_mode=False)
        except SystemExit as exc:
            if exc.code:
                raise SystemExit(f"eochain run failed (exit {exc.code})") from exc
        command_s = time.perf_counter() - t1
        ended_at = time.time()
        by_kind = ours.stop()
        ours_s = sum(by_kind.values())
        others_s = max(0.0, machine_busy_cpu_s() - machine0 - ours_s)
    finally:
        dispatch_log.removeHandler(catcher)
        shutil.rmtree(out, ignore_errors=True)
    if len(catcher.reports) != 1:
        raise SystemExit(f"expected one dispatch report, got {len(catcher.reports)}")
    report = catcher.reports[0]
    if not report.ok:
        raise SystemExit(f"campaign failed: {report.failures[:3]}")
    # tile tasks: keys without a product task's suffix (ortho.plan:..., ortho.write:...)
    tiles = sum(1 for k in report.runs_by_key if "." not in k.split(":", 1)[0])
    cores = report.actor_cpus
    return {
        "tiles": tiles, "task_runs": report.task_runs, "cores": cores,
        "command_s": round(command_s, 2),
        "to_first_task_s": round(report.first_task_at_s - started_at, 2),
        "tasks_span_s": round(report.ended_at_s - report.first_task_at_s, 2),
        "after_last_task_s": round(ended_at - report.ended_at_s, 2),
        "dispatch_s": round(report.wall_s, 2), "task_cpu_s": round(report.cpu_s, 2),
        "task_wall_s": round(report.busy_s, 2),
        "share": round(report.cpu_s / (cores * command_s), 3),
        "share_tasks": round(report.cpu_share, 3),
        "occupancy": round(report.busy_s / (cores * command_s), 3),
        "cpu_per_busy": round(report.cpu_s / max(report.busy_s, 1e-9), 3),
        "ours_cpu_s": round(ours_s, 2), "driver_cpu_s": round(by_kind["driver"], 2),
        "workers_outside_tasks_cpu_s": round(by_kind["workers"] - report.cpu_s, 2),
        "ray_daemons_cpu_s": round(by_kind["ray"], 2), "others_cpu_s": round(others_s, 2),
        "share_left": round(report.cpu_s / max(1e-9, cores * command_s - others_s), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="scenes of two views each")
    parser.add_argument("--size", type=int, default=8192, help="scene side, pixels")
    parser.add_argument("--tile", type=int, default=1024,
                        help="output tile side, pixels (eochain ortho's default)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--dem-spacing", type=float, default=30.0,
                        help="metres between the DEM's nodes (1: the scenes' own 1 m DEM)")
    parser.add_argument("--scenes", type=Path, default=None,
                        help="folder keeping the generated scenes between invocations "
                             "(default: a temporary one)")
    parser.add_argument("--first", type=int, default=None,
                        help="run only the campaign's first N scenes (results in "
                             "campaign_efficiency_firstN.json)")
    parser.add_argument("--reuse-ray", action="store_true",
                        help="one Ray for all runs (default: a new one before each run, as "
                             "`eochain run` starts its own)")
    args = parser.parse_args(argv)
    use_loopback()
    import ray

    keep = args.scenes is not None
    root = (args.scenes / f"{args.seeds}x{args.size}-{args.tile}-{DTYPE}" if keep
            else Path(tempfile.mkdtemp(prefix="eochain-eff-")))
    runs: list[dict[str, Any]] = []
    try:
        if (root / "campaign.yaml").exists():
            campaign, dem = root / "campaign.yaml", root / "s0" / "dem.tif"
        else:
            campaign, dem = write_campaign(root, args.seeds, args.size, args.tile)
        if args.dem_spacing > 1:
            dem = coarse_dem(dem, args.dem_spacing)
        if args.first is not None:
            campaign = first_scenes(campaign, args.first)
        starts: list[tuple[float, float]] = []
        for k in range(args.repeat):
            if not ray.is_initialized():
                t0 = time.perf_counter()
                Driver(num_cpus=args.cpus).connect()  # as `eochain run` starts its Ray
                starts.append((time.perf_counter() - t0, ray_settle()))
            try:
                runs.append(run_once(campaign, dem, root / f"out{k}"))
            finally:
                if not args.reuse_ray or k == args.repeat - 1:
                    ray.shutdown()
            print(f"run {k + 1}: share {runs[-1]['share']:.3f}, command "
                  f"{runs[-1]['command_s']:.2f} s, load {runs[-1]['load_average_1min']}")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    shares = [r["share"] for r in runs]
    best = sorted(runs, key=lambda r: r["share"])[len(runs) // 2]  # the median run
    ray_start_s = statistics.median(s for s, _ in starts)
    settle_s = statistics.median(s for _, s in starts)
    doc = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "ray": ray.__version__,
        "scenes": len(yaml.safe_load(campaign.read_text())["inputs"]["scenes"]),
        "size_px": args.size,
        "tile_px": args.tile, "dem_spacing_m": args.dem_spacing,
        "ray_per_run": not args.reuse_ray, "ray_starts": len(starts),
        "object_store_mib": round(Driver().local_object_store_bytes() / 2**20),
        "ray_start_s": round(ray_start_s, 2),
        "ray_settle_s": round(settle_s, 2), "goal": GOAL, "repeat": args.repeat,
        "share_median": statistics.median(shares), "share_min": min(shares),
        "share_max": max(shares), "median_run": best, "runs": runs,
        "command": " ".join(["python -m benchmarks.campaign_efficiency",
                             *(sys.argv[1:] if argv is None else argv)]),
    }
    r = best
    print(f"machine: {doc['machine']}; Ray {ray.__version__}; {doc['scenes']} scenes of "
          f"{args.size} px, {r['tiles']} ortho tiles of {args.tile} px, {r['task_runs']} tasks")
    print(f"start-up (not in the share): ray.init {ray_start_s:.2f} s, Ray's agents and "
          f"workers quiet {settle_s:.2f} s later (median of {len(starts)}: "
          f"{'a new Ray before each run' if not args.reuse_ray else 'one Ray for all runs'}; "
          f"object store {doc['object_store_mib']} MiB, `eochain run`'s default here)")
    print(f"the median run by share of {args.repeat}: eochain run {r['command_s']:.2f} s wall on "
          f"{r['cores']:g} cores, {r['task_cpu_s']:.2f} CPU-s in tasks; command start -> first "
          f"task {r['to_first_task_s']:.2f} s (campaign, survey, actors), tasks "
          f"{r['tasks_span_s']:.2f} s, after the last task {r['after_last_task_s']:.2f} s "
          "(collection, summary, cost report)")
    print(f"share = task CPU-s / (cores x command wall) = {doc['share_median']:.3f} "
          f"[{min(shares):.3f}-{max(shares):.3f}] (goal >= {GOAL}: "
          f"{'met' if doc['share_median'] >= GOAL else 'NOT met'}); since the first task: "
          f"{r['share_tasks']:.3f}")
    first = runs[0]
    print(f"the process's first run, as every `eochain run` is (its first-time set-up: numba's "
          f"registries, Ray's serialization context, networkx): share {first['share']:.3f}, "
          f"command {first['command_s']:.2f} s, {first['to_first_task_s']:.2f} s to the first "
          f"task, driver {first['driver_cpu_s']:.2f} CPU-s")
    print(f"occupancy = task wall-s / (cores x command wall) = {r['occupancy']:.3f}; "
          f"CPU-s per task wall-s = {r['cpu_per_busy']:.3f}; load average "
          f"{r['load_average_1min']:.1f}")
    print(f"CPU-s during the command: tasks {r['task_cpu_s']:.2f}; driver "
          f"{r['driver_cpu_s']:.2f} (campaign, survey, dispatch); actors outside their tasks "
          f"{r['workers_outside_tasks_cpu_s']:.2f} (start-up, imports, Ray's calls and objects); "
          f"Ray's daemons {r['ray_daemons_cpu_s']:.2f}; other users' processes "
          f"{r['others_cpu_s']:.2f}; share of the CPU left to the run = {r['share_left']:.3f}")
    results = RESULTS if args.first is None else RESULTS.with_name(
        f"campaign_efficiency_first{args.first}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
