"""Where the whole ``eochain dsm`` command spends its time, phase by phase.

Run: ``python -m benchmarks.dsm_profile [--runs N] [--cases gizeh synthetic_2000]
[--output benchmarks/results/dsm_profile.json]``.

Each case runs the real command (``scheduler.cli.dsm``) in a fresh process
(``nice``d, as the machine is shared), best of ``--runs`` by wall time,
pinned to one core (``taskset -c 0``, one numba thread: the tiles run one
after the other, so the phases add up to the wall time), and then on every
core (the tiles side by side on one thread per core: the whole command's
wall and CPU). The
process records its phases with :func:`ops.stereo.phase_times.record_phases`
(the kernels mark them; nothing is recorded in a normal run) and this
script adds the command's imports and the COG writer's ``write`` and
``close`` (overviews, layout, rename) as phases from outside. Phases are
exclusive: a phase opened inside another pauses it, so the shares add up to
the recorded time. ``interpreter`` is the process's wall time before the
recording started (Python's start-up); ``other`` is what no phase claims
(opening the views, the DEM and geoid, the progress bar, metadata).
Whole-command CPU seconds come from ``os.wait4`` (user + system, every thread).

Cases: ``gizeh`` (the Pléiades pair with SRTM + EGM96, heights above the
geoid, 0.6 m, 1024-cell tiles as ``benchmarks.stereo`` runs it),
``gizeh_no_dem`` (the same without ``--dem``: initial heights from the
RPCs and tie points) and
``synthetic_2000`` (a generated 2000 x 2000 px pair, B/H 0.25, with the
30 m DEM made from its truth, 512-cell tiles). The synthetic scene is kept
under ``--work`` between runs (same seed, same scene).

Results: ``benchmarks/results/dsm_profile.json``;
``dsm_profile_before.json`` is the same run, same sitting, of the code
before session 14's non-matcher work (commit 4eace92, run from a worktree
of it: ``cd <worktree> && python -m benchmarks.dsm_profile --output ...``):
the Gaussian rasterisation, the grey levels' local contrast, the median
outlier filter and the NCC's arithmetic in numba, the border fill on its
band's cells only, the overlap mask by blocks shown wholly seen. The DSMs
are bit-identical on both cases (gizeh, synthetic_2000; all three bands).
The machine is shared: compare CPU seconds, which load disturbs less than
wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import shared_data

RESULTS = Path(__file__).resolve().parent / "results" / "dsm_profile.json"
CASES = ("gizeh", "gizeh_no_dem", "synthetic_2000")
#: The phases in the order they are printed (the brief's: read and rectify,
#: match, sub-pixel and filters, triangulate, rasterise, write; then the rest).
ORDER = ("read", "rectification", "SGBM", "match filters", "triangulation", "rasterisation",
         "raster filters", "write", "pointing correction", "planning", "initial terrain",
         "tile inputs", "imports", "interpreter", "other")


def child(result_path: Path, argv: list[str]) -> None:
    """Run ``eochain dsm ARGV`` in this process with its phases recorded."""
    from ops.stereo.phase_times import phase, record_phases

    interpreter_s = _process_age_s()
    with record_phases("other") as times:
        with phase("imports"):
            from ops.raster.raster_io import CogWriter
            from scheduler.cli.dsm import dsm
        _time_writer(CogWriter, phase)
        dsm.main(argv, standalone_mode=False)
    wall = {**times.wall_s, "interpreter": interpreter_s}
    result_path.write_text(json.dumps({"wall_s": wall, "cpu_s": times.cpu_s,
                                       "calls": times.calls}))


def _time_writer(writer: Any, phase: Any) -> None:
    """Time the COG writer's tile writes and its close (not this benchmark's file)."""
    for name in ("write", "__exit__"):
        method = getattr(writer, name)

        def timed(*args: Any, _method: Any = method, **kwargs: Any) -> Any:
            with phase("write"):
                return _method(*args, **kwargs)

        setattr(writer, name, timed)


def _process_age_s() -> float:
    """Seconds since this process started (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start


def case_args(name: str, work: Path, out: Path) -> list[str]:
    """The ``eochain dsm`` arguments of a case."""
    if name in ("gizeh", "gizeh_no_dem"):
        g = shared_data() / "gizeh"
        geoid = shared_data() / "ventoux" / "geoid" / "egm96_15.gtx"
        dem = ["--dem", str(g / "srtm_dir")] if name == "gizeh" else []
        return [str(g / "img1.tif"), str(g / "img2.tif"), *dem,
                "--geoid", str(geoid), "--heights", "geoid", "--gsd", "0.6",
                "--tile-size", "1024", "-q", "--overwrite", "-o", str(out)]
    if name == "synthetic_2000":
        from benchmarks.stereo import synthetic_case

        scene_dir = work / name
        if not (scene_dir / "coarse_dem.tif").exists():
            synthetic_case(name, work, n_views=2, defects=False, size_px=2000)
        from ops.synthetic.scene import SyntheticScene

        views = SyntheticScene.load(scene_dir).view_paths[:2]
        return [*(str(v) for v in views), "--dem", str(scene_dir / "coarse_dem.tif"),
                "--tile-size", "512", "-q", "--overwrite", "-o", str(out)]
    raise SystemExit(f"unknown case {name!r}; expected one of {', '.join(CASES)}")


def profile_once(argv: list[str], one_core: bool) -> dict[str, Any]:
    """One profiled run in a fresh, niced process: whole wall, CPU, peak RSS, phases.

    ``one_core``: pinned to core 0 with one numba thread, so the command runs
    its tiles in one thread and the phases add up to its wall time; else on
    every core of the machine (tiles side by side: phases in thread-seconds).
    """
    pin = ["taskset", "-c", "0"] if one_core else []
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"} if one_core else dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "phases.json"
        cmd = [*pin, "nice", sys.executable, "-m", "benchmarks.dsm_profile", "--child",
               str(result), "--", *argv]
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            out.seek(0)
            err.seek(0)
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"eochain dsm {' '.join(argv)} failed:\n"
                                 f"{err.read().decode(errors='replace')[-3000:]}")
            summary = out.read().decode(errors="replace").strip()
        phases = json.loads(result.read_text())
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
            "max_rss_gib": usage.ru_maxrss / 2**20, "summary": summary,
            **{f"phases_{k}": v for k, v in phases.items()}}


def shares(run: dict[str, Any]) -> dict[str, float]:
    """Each phase's share of the whole command's wall time."""
    return {k: v / run["wall_s"] for k, v in run["phases_wall_s"].items()}


def print_case(name: str, run: dict[str, Any]) -> None:
    print(f"{name}: whole command {run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU, "
          f"peak RSS {run['max_rss_gib']:.2f} GiB")
    wall, cpu = run["phases_wall_s"], run["phases_cpu_s"]
    for key in sorted(wall, key=lambda k: ORDER.index(k) if k in ORDER else len(ORDER)):
        print(f"  {key:<20} {wall[key]:7.3f} s wall {wall[key] / run['wall_s']:6.1%}"
              f"   {cpu.get(key, float('nan')):7.3f} s CPU")


def main() -> None:
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        child(Path(sys.argv[at + 1]), sys.argv[sys.argv.index("--") + 1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "eochain-dsm-profile")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"state": {
        "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "load_avg_1min": os.getloadavg()[0],
        "command": "python -m benchmarks.dsm_profile " + " ".join(sys.argv[1:]),
    }, "cases": {}}
    for name in args.cases:
        argv = case_args(name, args.work, args.work / f"{name}.tif")
        best: dict[str, Any] = {}
        every: dict[str, Any] = {}
        for _ in range(args.runs):
            run = profile_once(argv, one_core=True)
            if not best or run["wall_s"] < best["wall_s"]:
                best = run
            run = profile_once(argv, one_core=False)
            if not every or run["wall_s"] < every["wall_s"]:
                every = run
        best["shares"] = shares(best)
        best["all_cores"] = {k: every[k] for k in ("wall_s", "cpu_s", "max_rss_gib")}
        best["all_cores"]["cores"] = os.cpu_count()
        results["cases"][name] = best
        print_case(name, best)
        print(f"  on all {os.cpu_count()} cores (tiles side by side): {every['wall_s']:.2f} s "
              f"wall, {every['cpu_s']:.2f} s CPU, peak RSS {every['max_rss_gib']:.2f} GiB: "
              f"{best['wall_s'] / every['wall_s']:.2f}x the one-core wall")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
