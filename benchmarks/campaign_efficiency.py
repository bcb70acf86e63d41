"""Campaign CPU efficiency: the kernels' CPU-seconds over cores x wall of ``eochain run``.

Run: ``python -m benchmarks.campaign_efficiency [--seeds 4] [--size 1024] [--tile 128]
[--cpus C]``. Writes ``benchmarks/results/campaign_efficiency.json``.

State machine and inputs:

1. ``--seeds`` synthetic scenes (:func:`ops.synthetic.scene.generate_scene`, 0.5 m,
   float32, seeds 0..N-1, all at the same place); each scene's two views are
   two scenes of the campaign (8 by default), orthorectified at 0.5 m in
   tiles of ``--tile`` px (>= 200 tiles in all), with the DEM of seed 0.
2. A campaign file listing the views by ``uri`` (with their footprint and
   size), written next to them.
3. A local Ray with all ``--cpus`` (default: every core) is started in this
   process: its start-up is timed and stated on its own.
4. ``eochain run CAMPAIGN --dem DEM --out OUT -q`` runs in this process (the
   click command itself, as the console script calls it); it finds Ray
   connected and uses it. The dispatcher's report (the ``run_report`` of its
   closing log record) gives the CPU seconds measured inside the actors, per
   task (process CPU time of the worker while the task's function ran), and
   when the first task started.

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
    start-up       = ray.init seconds; command start -> first task start
                     (campaign file, survey, plan, actor start-up)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from scheduler.ray_private import use_loopback
from scheduler.runtime.dispatch import RunReport

RESULTS = Path(__file__).resolve().parent / "results" / "campaign_efficiency.json"
GOAL = 0.9


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(v) for v in fields]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds per process of ``root_pid`` and its live descendants (user + system)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        rest = stat[stat.rindex(")") + 2:].split()
        parent[int(entry.name)] = int(rest[1])
        cpu[int(entry.name)] = (int(rest[11]) + int(rest[12])) / tick
    mine: dict[int, float] = {}
    for pid, seconds in cpu.items():
        p = pid
        while p > 1 and p != root_pid:
            p = parent.get(p, 0)
        if p == root_pid:
            mine[pid] = seconds
    return mine


class TreeCpu:
    """CPU seconds this process tree used between :meth:`start` and :meth:`stop`.

    Sampled every ``interval_s`` in a thread, keeping each process's last
    reading, so processes that end meanwhile (the run's actors) still count
    (up to one interval of theirs is missed).
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._baseline_taken = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        for pid, seconds in tree_cpu(os.getpid()).items():
            # a process already there counts from now, a new one from its start
            self._first.setdefault(pid, 0.0 if self._baseline_taken else seconds)
            self._last[pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._baseline_taken = True
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self._last[p] - self._first.get(p, 0.0) for p in self._last)


class _ReportCatcher(logging.Handler):
    """Keeps the dispatcher's :class:`RunReport` from its closing log record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.reports: list[RunReport] = []

    def emit(self, record: logging.LogRecord) -> None:
        report = getattr(record, "run_report", None)
        if isinstance(report, RunReport):
            self.reports.append(report)


def write_campaign(root: Path, seeds: int, size: int, tile_px: int) -> tuple[Path, Path]:
    """Scenes and the campaign file listing them: (campaign file, DEM)."""
    from ops.synthetic.scene import SceneSpec, generate_scene

    entries: list[dict[str, Any]] = []
    dem: Path | None = None
    for seed in range(seeds):
        scene = generate_scene(SceneSpec(width=size, height=size, seed=seed),
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="scenes of two views each")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    use_loopback()
    import ray

    from scheduler.cli.run import run

    root = Path(tempfile.mkdtemp(prefix="eochain-eff-"))
    catcher = _ReportCatcher()
    dispatch_log = logging.getLogger("scheduler.runtime.dispatch")
    dispatch_log.addHandler(catcher)
    dispatch_log.setLevel(logging.INFO)
    try:
        campaign, dem = write_campaign(root / "scenes", args.seeds, args.size, args.tile)
        t0 = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
                 log_to_driver=False, object_store_memory=256 * 2**20)
        ray_start_s = time.perf_counter() - t0
        try:
            started_at = time.time()
            ours, machine0 = TreeCpu(), machine_busy_cpu_s()
            ours.start()
            t1 = time.perf_counter()
            try:
                run.main([str(campaign), "--dem", str(dem), "--out", str(root / "out"), "-q"],
                         standalone_mode=False)
            except SystemExit as exc:
                if exc.code:
                    raise SystemExit(f"eochain run failed (exit {exc.code})") from exc
            command_s = time.perf_counter() - t1
            ours_s = ours.stop()
            others_s = max(0.0, machine_busy_cpu_s() - machine0 - ours_s)
        finally:
            ray.shutdown()
    finally:
        dispatch_log.removeHandler(catcher)
        shutil.rmtree(root, ignore_errors=True)
    if len(catcher.reports) != 1:
        raise SystemExit(f"expected one dispatch report, got {len(catcher.reports)}")
    report = catcher.reports[0]
    if not report.ok:
        raise SystemExit(f"campaign failed: {report.failures[:3]}")
    tiles = sum(1 for k in report.runs_by_key if not k.endswith(("/plan", "/write")))
    cores = report.actor_cpus
    share = report.cpu_s / (cores * command_s)
    to_first_task_s = report.first_task_at_s - started_at
    doc = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "ray": ray.__version__, "scenes": 2 * args.seeds, "size_px": args.size,
        "tile_px": args.tile, "tiles": tiles, "task_runs": report.task_runs,
        "cores": cores, "ray_start_s": round(ray_start_s, 2),
        "command_s": round(command_s, 2), "to_first_task_s": round(to_first_task_s, 2),
        "dispatch_s": round(report.wall_s, 2), "task_cpu_s": round(report.cpu_s, 2),
        "task_wall_s": round(report.busy_s, 2),
        "share": round(share, 3), "share_tasks": round(report.cpu_share, 3), "goal": GOAL,
        "occupancy": round(report.busy_s / (cores * command_s), 3),
        "cpu_per_busy": round(report.cpu_s / max(report.busy_s, 1e-9), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "ours_cpu_s": round(ours_s, 2), "others_cpu_s": round(others_s, 2),
        "share_left": round(report.cpu_s / max(1e-9, cores * command_s - others_s), 3),
        "command": " ".join(["python -m benchmarks.campaign_efficiency",
                             *(sys.argv[1:] if argv is None else argv)]),
    }
    print(f"machine: {doc['machine']}; Ray {ray.__version__}; {doc['scenes']} scenes of "
          f"{args.size} px, {tiles} ortho tiles of {args.tile} px, {report.task_runs} tasks")
    print(f"start-up: ray.init {ray_start_s:.2f} s; command start -> first task "
          f"{to_first_task_s:.2f} s (campaign, survey, plan, actors)")
    print(f"eochain run: {command_s:.2f} s wall on {cores:g} cores, {report.cpu_s:.2f} CPU-s in "
          f"tasks")
    print(f"share = task CPU-s / (cores x command wall) = {share:.2f} (goal >= {GOAL}: "
          f"{'met' if share >= GOAL else 'NOT met'}); since the first task: "
          f"{report.cpu_share:.2f}")
    print(f"occupancy = task wall-s / (cores x command wall) = {doc['occupancy']:.2f}; "
          f"CPU-s per task wall-s = {doc['cpu_per_busy']:.2f}; load average "
          f"{doc['load_average_1min']:.1f} (other processes on this machine)")
    print(f"CPU-s during the command: tasks {report.cpu_s:.2f}, driver + Ray daemons "
          f"{ours_s - report.cpu_s:.2f}, other users' processes {others_s:.2f}; share of the "
          f"CPU left to the run = {doc['share_left']:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
