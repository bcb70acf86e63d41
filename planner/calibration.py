"""Kernel cost per tile: CPU-seconds, peak memory and bytes, calibrated as data.

Each operation (``stereo``, ``dsm``, ``ortho``) has a linear model in the
tile's (padded) output pixels ``px``::

    cpu_s(family)  = cpu_s_per_mpx * px / 1e6 * family_speed[family]
    peak_mem_gib   = mem_base_gib + mem_bytes_per_px * px / 2**30
    output_bytes   = out_bytes_per_px * px      input_bytes = in_bytes_per_px * px

run on ``threads`` vCPUs. ``family_speed`` is CPU-seconds on one vCPU of the
family per CPU-second of the reference family. The shipped figures
(``planner/data/calibration.json``) are provisional until the ortho and
stereo benchmarks produce measured ones; :func:`rebuild_calibration` turns
their JSON output into a new table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from planner.catalog import read_data_file
from planner.config_loader import parse_json, short
from planner.errors import CatalogError, ConfigError


@dataclass(frozen=True, slots=True)
class OperationProfile:
    cpu_s_per_mpx: float
    threads: int
    mem_base_gib: float
    mem_bytes_per_px: float
    out_bytes_per_px: float
    in_bytes_per_px: float

    def __post_init__(self) -> None:
        for name in ("cpu_s_per_mpx", "mem_base_gib", "mem_bytes_per_px", "out_bytes_per_px",
                     "in_bytes_per_px"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise CatalogError(f"calibration {name} = {v!r}, expected a number >= 0")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise CatalogError(f"calibration threads = {self.threads!r}, expected an int >= 1")


@dataclass(frozen=True, slots=True)
class Calibration:
    reference_family: str
    operations: Mapping[str, OperationProfile]
    family_speed: Mapping[str, float]
    status: str = "provisional"
    note: str = ""

    def profile(self, operation: str) -> OperationProfile:
        if operation not in self.operations:
            raise CatalogError(f"calibration has no operation {operation!r}, expected one of "
                               f"{', '.join(sorted(self.operations))}")
        return self.operations[operation]

    def speed(self, family: str) -> float:
        if family not in self.family_speed:
            raise CatalogError(f"calibration has no speed for family {family!r}, expected one "
                               f"of {', '.join(sorted(self.family_speed))}")
        return self.family_speed[family]


def calibration_from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> Calibration:
    try:
        ops = {name: OperationProfile(**{k: v for k, v in p.items()})
               for name, p in doc["operations"].items()}
        speed = {k: float(v) for k, v in doc["family_speed"].items() if k != "note"}
        ref = str(doc["reference_family"])
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CatalogError(f"calibration {source}: malformed ({short(exc)}); expected keys "
                           "reference_family, operations, family_speed") from exc
    return Calibration(ref, ops, speed, str(doc.get("status", "provisional")),
                       str(doc.get("note", "")))


def calibration_to_dict(cal: Calibration) -> dict[str, Any]:
    return {
        "status": cal.status,
        "note": cal.note,
        "reference_family": cal.reference_family,
        "operations": {n: {"cpu_s_per_mpx": p.cpu_s_per_mpx, "threads": p.threads,
                           "mem_base_gib": p.mem_base_gib, "mem_bytes_per_px": p.mem_bytes_per_px,
                           "out_bytes_per_px": p.out_bytes_per_px,
                           "in_bytes_per_px": p.in_bytes_per_px}
                       for n, p in sorted(cal.operations.items())},
        "family_speed": dict(sorted(cal.family_speed.items())),
    }


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The shipped calibration table, or the JSON file at ``path``."""
    text, source = read_data_file("calibration.json", path, "calibration")
    try:
        doc = parse_json(text, f"calibration {source!r}")
    except ConfigError as exc:
        raise CatalogError(str(exc)) from exc
    if not isinstance(doc, Mapping):
        raise CatalogError(f"calibration {source!r} holds {short(doc)}, expected a JSON object")
    return calibration_from_dict(doc, source)


def rebuild_calibration(
    base: Calibration, benchmark_docs: Iterable[Mapping[str, Any]], family: str | None = None
) -> Calibration:
    """A calibration whose per-megapixel CPU cost comes from measured benchmark output.

    Each benchmark document (the JSON a ``benchmarks/`` script writes) must
    carry ``operation`` (``ortho``, ``stereo`` or ``dsm``) and ``runs``: a list
    of ``{"pixels": N, "cpu_s": S}`` (or ``"runtime_s"`` and ``"threads"``,
    multiplied) measured on ``family`` (default the reference family; figures
    are divided by its speed so they stay reference CPU-seconds). Optional
    ``peak_mem_gib`` per run refits the memory slope when two or more runs
    differ in size. Operations no document mentions keep the base figures.

    Each CPU-second is counted once: a document whose measured command also
    did the work of later stages lists them under ``covers`` (the stereo
    benchmark times the whole ``eochain dsm``, gridding included, so it
    covers ``dsm``); their per-megapixel figures are taken out of the
    measured one.
    """
    fam = family or base.reference_family
    speed = base.speed(fam)
    ops = dict(base.operations)
    measured = []
    for n, doc in enumerate(benchmark_docs):
        op = doc.get("operation")
        runs = doc.get("runs")
        if op not in ops or not isinstance(runs, list) or not runs:
            raise CatalogError(
                f"benchmark document {n}: operation={op!r}, runs={type(runs).__name__}; expected "
                f"operation in {sorted(ops)} and a non-empty list of runs")
        px = 0.0
        cpu = 0.0
        mem_points: list[tuple[float, float]] = []
        for run in runs:
            p = float(run["pixels"])
            c = float(run["cpu_s"]) if "cpu_s" in run else (
                float(run["runtime_s"]) * float(run.get("threads", 1)))
            if not (p > 0 and c >= 0):
                raise CatalogError(f"benchmark document {n}: run {run!r} has pixels <= 0 "
                                   "or negative CPU time")
            px += p
            cpu += c
            if "peak_mem_gib" in run:
                mem_points.append((p, float(run["peak_mem_gib"])))
        per_mpx = cpu / (px / 1e6) / speed
        covered = doc.get("covers", [])
        if not isinstance(covered, list) or any(c not in ops or c == op for c in covered):
            raise CatalogError(f"benchmark document {n}: covers={covered!r}; expected a list of "
                               f"other operations among {sorted(ops)}")
        rest = sum(ops[c].cpu_s_per_mpx for c in covered)
        if rest >= per_mpx:
            raise CatalogError(
                f"benchmark document {n}: {op} measured {per_mpx:.3g} CPU-s/Mpx, not more than "
                f"the {rest:.3g} of the stages it covers ({', '.join(covered)})")
        new = replace(ops[op], cpu_s_per_mpx=per_mpx - rest)
        if len({p for p, _ in mem_points}) >= 2:
            xs = [p for p, _ in mem_points]
            ys = [m for _, m in mem_points]
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum(
                (x - mx) ** 2 for x in xs)
            slope = max(slope, 0.0)
            new = replace(new, mem_bytes_per_px=slope * 2**30,
                          mem_base_gib=max(my - slope * mx, 0.0))
        ops[op] = new
        measured.append(str(op))
    status = "measured" if set(measured) >= {"ortho", "stereo"} else "partly measured"
    return replace(base, operations=ops, status=status,
                   note=f"{status}: {', '.join(sorted(set(measured)))} from benchmark output")


_CELLS = re.compile(r"(\d+)\s*x\s*(\d+)\s*cells")


def benchmark_runs(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``{"operation", "runs"}`` form of a benchmark's JSON output, or None.

    Understands the generic form itself and the result files of
    ``benchmarks.ortho`` (single-thread ortho time plus the COG write time on
    all cores, per output pixel) and ``benchmarks.stereo`` (the real Gizeh
    pair: wall time times cores per DSM cell, an upper bound on CPU time).
    """
    if "operation" in doc and "runs" in doc:
        return dict(doc)
    thr, inputs = doc.get("throughput"), doc.get("inputs")
    if isinstance(thr, Mapping) and isinstance(inputs, Mapping) and "output_mpx" in inputs:
        cpus = float(doc.get("machine", {}).get("cpus", 1))
        cpu_s = float(thr["eochain_1thread_s"]) + float(thr.get("eochain_cog_write_all_s", 0.0)) * cpus
        run: dict[str, float] = {"pixels": float(inputs["output_mpx"]) * 1e6, "cpu_s": cpu_s}
        return {"operation": "ortho", "runs": [run]}
    eo, state = doc.get("eochain"), doc.get("state")
    if isinstance(eo, Mapping) and isinstance(state, Mapping) and "wall_s" in eo:
        m = _CELLS.search(str(eo.get("summary", "")))
        if m:
            cells = float(m.group(1)) * float(m.group(2))
            return {"operation": "stereo", "covers": ["dsm"], "runs": [
                {"pixels": cells, "cpu_s": float(eo["wall_s"]) * float(state.get("cpu_count", 1))}]}
    return None
