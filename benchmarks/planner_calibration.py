"""The planner's CPU-seconds per megapixel, measured: each stage's CPU time counted once.

Run: ``python -m benchmarks.planner_calibration [--runs 5] [--write]``.
Writes ``benchmarks/results/planner_calibration.json``; with ``--write`` it
also rebuilds ``planner/data/calibration.json`` from the medians
(:func:`planner.calibration.rebuild_calibration`).

- ``stereo`` and ``dsm``: ``--runs`` runs of the real ``eochain dsm`` on the
  Gizeh Pléiades pair (SRTM + EGM96, 0.6 m, as ``benchmarks.dsm_profile``
  runs it, whose per-phase CPU recording this reuses), each in a fresh
  process pinned to one core with one numba thread. The command's phases are split between the planner's stages:
  ``dsm`` is rasterisation, raster filters and the write; ``stereo`` is every
  other phase of the product's work (reading, rectification, pointing
  correction, matching and its filters, triangulation, opening the inputs).
  Python's start-up and the imports are left out: a worker pays them once,
  not per task. Per DSM megapixel (cells of the output grid).
- ``ortho``: the whole ``eochain ortho`` command on one core, median of the
  runs in ``benchmarks/results/ortho.json`` (``python -m benchmarks.ortho
  --parts whole``), per output megapixel. It includes the command's
  start-up and imports, so it is an upper bound.

Figures are CPU seconds (user + system, every thread, from ``os.wait4``),
which load disturbs less than wall time; the machine is shared, so its
load average is recorded beside them, and each figure is a median with its
spread (min..max).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.dsm_profile import case_args, profile_once
from planner.calibration import load_calibration, rebuild_calibration

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "planner_calibration.json"
CALIBRATION = REPO / "planner" / "data" / "calibration.json"
#: Phases of ``eochain dsm`` that belong to the planner's ``dsm`` stage.
DSM_PHASES = ("rasterisation", "raster filters", "write")
#: Phases paid once per worker process, not per task.
PROCESS_PHASES = ("imports", "interpreter")
_CELLS = re.compile(r"(\d+)\s*x\s*(\d+)\s*cells")


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def measure_dsm(runs: int) -> dict[str, Any]:
    """Stereo and dsm CPU-seconds per DSM megapixel over ``runs`` runs (module docstring)."""
    stereo, dsm, rows = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        argv = case_args("gizeh", Path(tmp), Path(tmp) / "gizeh.tif")
        for _ in range(runs):
            run = profile_once(argv, one_core=True)
            m = _CELLS.search(run["summary"])
            if m is None:
                raise SystemExit(f"eochain dsm summary without 'N x M cells': {run['summary']!r}")
            mpx = int(m.group(1)) * int(m.group(2)) / 1e6
            cpu = run["phases_cpu_s"]
            d = sum(cpu.get(k, 0.0) for k in DSM_PHASES)
            s = sum(v for k, v in cpu.items() if k not in DSM_PHASES + PROCESS_PHASES)
            stereo.append(s / mpx)
            dsm.append(d / mpx)
            rows.append({"mpx": mpx, "cpu_s": run["cpu_s"], "wall_s": run["wall_s"],
                         "stereo_cpu_s": s, "dsm_cpu_s": d,
                         "process_cpu_s": sum(cpu.get(k, 0.0) for k in PROCESS_PHASES)})
    return {"case": "gizeh", "mpx": rows[0]["mpx"], "runs": rows,
            "stereo_cpu_s_per_mpx": _spread(stereo), "dsm_cpu_s_per_mpx": _spread(dsm)}


def measure_ortho() -> dict[str, Any]:
    doc = json.loads((REPO / "benchmarks" / "results" / "ortho.json").read_text())
    whole = doc["whole_command"]
    cpu = [r["cpu_s"] for r in whole["eochain_1core"]["runs"]]
    mpx = float(whole["output_mpx"])
    return {"source": "benchmarks/results/ortho.json whole_command.eochain_1core", "mpx": mpx,
            "cpu_s": cpu, "cpu_s_per_mpx": _spread([c / mpx for c in cpu])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--write", action="store_true",
                    help="rebuild planner/data/calibration.json from the medians")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    dsm = measure_dsm(args.runs)
    load_after = os.getloadavg()
    ortho = measure_ortho()
    med = {"stereo": dsm["stereo_cpu_s_per_mpx"], "dsm": dsm["dsm_cpu_s_per_mpx"],
           "ortho": ortho["cpu_s_per_mpx"]}
    print(f"planner_calibration: {platform.machine()}, one core, load average "
          f"{load_before[0]:.1f} -> {load_after[0]:.1f}; {args.runs} runs of eochain dsm (Gizeh, "
          f"{dsm['mpx']:.3f} Mpx)")
    for op, s in med.items():
        print(f"  {op:<7} {s['median']:8.3f} CPU-s/Mpx  [{s['min']:.3f} - {s['max']:.3f}]")
    base = load_calibration()
    for op, s in med.items():
        print(f"  {op:<7} shipped {base.profile(op).cpu_s_per_mpx:8.3f} -> measured "
              f"{s['median']:.3f} ({s['median'] / base.profile(op).cpu_s_per_mpx:.2f}x)")
    doc = {"state": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                     "python": sys.version.split()[0], "platform": platform.platform(),
                     "load_avg_1min": [load_before[0], load_after[0]],
                     "command": f"python -m benchmarks.planner_calibration --runs {args.runs}"},
           "dsm": dsm, "ortho": ortho,
           "cpu_s_per_mpx": med}
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    if args.write:
        docs = [{"operation": op, "runs": [{"pixels": 1e6, "cpu_s": s["median"]}]}
                for op, s in med.items()]
        new = rebuild_calibration(base, docs)
        table = json.loads(CALIBRATION.read_text())
        table["status"] = new.status
        for op, prof in new.operations.items():
            table["operations"][op]["cpu_s_per_mpx"] = round(prof.cpu_s_per_mpx, 4)
        CALIBRATION.write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {CALIBRATION.relative_to(REPO)} ({new.status})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
