"""Peak intermediate bytes in Ray's object store: depth-first vs breadth-first dispatch.

Run: ``python -m benchmarks.runtime_memory [--scenes S] [--tiles T] [--cpus C]``.
Writes the table to ``benchmarks/results/runtime_memory.json``.

State machine: one local Ray instance (``ray.init(num_cpus=C)``, loopback,
512 MiB object store). A wide campaign: S scenes, each T tile tasks that
produce a 128 x 128 float64 array (128 KiB, above Ray's inline limit, so it
lives in the object store) and one write task per scene that consumes all
of them (a sum, standing in for the COG assembly). The same graph is
dispatched twice by :class:`scheduler.runtime.dispatch.Dispatcher` with the
bytes-in-flight bound off (1 TiB), so only the order differs:

* baseline: breadth-first (topological generations: every tile, then every write);
* eochain: the planner's depth-first order (:func:`planner.order.depth_first_order`).

Peak bytes, two ways: the dispatcher's accounting (the largest total size
of intermediate results alive at once: a held ObjectRef lives from its
task's end to its last consumer's end, sizes as the actors report them), and
Ray's own object-store usage (``memory_summary``, MiB, sampled every
``--sample-every`` completions: a lower bound of the true peak).
ratio = depth-first peak / breadth-first peak (goal <= 0.25). Results
must be equal between the two runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scheduler.ray_private import use_loopback
from scheduler.runtime.actors import TaskContext
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions, Progress, RunReport
from scheduler.runtime.state import Task, TaskGraph

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_memory.json"
TILE = 128


@dataclass(frozen=True, slots=True)
class MakeTile:
    seed: int

    def __call__(self, ctx: TaskContext) -> NDArray[np.float64]:
        return np.full((TILE, TILE), float(self.seed))


def write_scene(ctx: TaskContext, *tiles: NDArray[np.float64]) -> float:
    return float(sum(float(t.sum()) for t in tiles))


def campaign(scenes: int, tiles: int) -> TaskGraph:
    tasks: list[Task] = []
    for s in range(scenes):
        keys = tuple(f"s{s:04d}/t{t:03d}" for t in range(tiles))
        tasks.extend(Task(k, MakeTile(s * tiles + t), (), TILE * TILE * 8, f"s{s}")
                     for t, k in enumerate(keys))
        tasks.append(Task(f"s{s:04d}/write", write_scene, keys, 64, f"s{s}"))
    return TaskGraph.build(tasks)


PLASMA = re.compile(r"Plasma memory usage (\d+) MiB")


def plasma_mib() -> int:
    """Object-store bytes in use across the cluster, as Ray reports them (MiB)."""
    import ray

    from scheduler.ray_private import memory_summary

    text = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)
    match = PLASMA.search(text)
    return int(match.group(1)) if match else 0


def run(graph: TaskGraph, sample_every: int) -> tuple[RunReport, int]:
    """Dispatch; the peak of Ray's object-store usage sampled every few completions."""
    peak = 0
    events = 0

    def sample(p: Progress) -> None:
        nonlocal peak, events
        events += 1
        if events % sample_every == 0:
            peak = max(peak, plasma_mib())

    report = Dispatcher(DispatchOptions(max_bytes_in_flight=1 << 40)).run(graph, sample)
    if not report.ok:
        raise SystemExit(f"run failed: {report.failures[:3]}")
    return report, peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=48)
    parser.add_argument("--tiles", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--sample-every", type=int, default=4,
                        help="sample Ray's object-store usage every K task completions")
    args = parser.parse_args(argv)
    use_loopback()
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=512 * 2**20)
    try:
        depth_graph = campaign(args.scenes, args.tiles)
        breadth_graph = depth_graph.with_priority(depth_graph.breadth_first_priority())
        breadth, breadth_plasma = run(breadth_graph, args.sample_every)
        depth, depth_plasma = run(depth_graph, args.sample_every)
    finally:
        ray.shutdown()
    if depth.results != breadth.results:
        raise SystemExit("depth-first and breadth-first results differ")
    rows = [
        {"order": "breadth-first (baseline)", "peak_mib": breadth.peak_bytes_in_flight / 2**20,
         "plasma_peak_mib": breadth_plasma, "wall_s": breadth.wall_s},
        {"order": "depth-first (eochain)", "peak_mib": depth.peak_bytes_in_flight / 2**20,
         "plasma_peak_mib": depth_plasma, "wall_s": depth.wall_s},
    ]
    ratio = depth.peak_bytes_in_flight / breadth.peak_bytes_in_flight
    n_tasks = len(depth_graph.tasks)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Ray {ray.__version__}, num_cpus={args.cpus}; {args.scenes} scenes x {args.tiles} "
          f"tiles of {TILE * TILE * 8 // 1024} KiB + 1 write each = {n_tasks} tasks")
    print(f"{'order':<26} {'peak MiB':>9} {'Ray plasma peak MiB':>20} {'wall s':>8}")
    for r in rows:
        print(f"{r['order']:<26} {r['peak_mib']:>9.2f} {r['plasma_peak_mib']:>20} "
              f"{r['wall_s']:>8.2f}")
    plasma_ratio = depth_plasma / max(breadth_plasma, 1)
    print(f"ratio depth/breadth peak: {ratio:.3f} (dispatcher accounting), "
          f"{plasma_ratio:.3f} (Ray's sampled object-store usage); goal <= 0.25")
    doc = {"cores": os.cpu_count(), "num_cpus": args.cpus, "scenes": args.scenes,
           "tiles": args.tiles, "tile_bytes": TILE * TILE * 8, "tasks": n_tasks,
           "rows": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
                    for r in rows],
           "ratio": round(ratio, 4), "plasma_ratio": round(plasma_ratio, 4), "goal": 0.25}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
