"""Scheduling overhead: 10,000 no-op tiles through eochain's dispatcher vs bare Ray tasks.

Run: ``python -m benchmarks.runtime_overhead [--tiles N] [--cpus C]``. Writes the
table to ``benchmarks/results/runtime_overhead.json``.

State machine: one local Ray instance (``ray.init(num_cpus=C)``, loopback,
no dashboard), warmed up; then, in one process and on the same instance:

* baseline: N bare Ray tasks ``noop.remote()`` submitted at once, ``ray.get``
  on all (Ray's own pipelining, no ordering, no bounds, no recovery);
* eochain: the same N no-op tiles as a campaign (N/100 scenes of 100
  independent tiles, each scene ending in nothing) through
  :class:`scheduler.runtime.dispatch.Dispatcher`: priority order, the
  bytes-in-flight bound, per-task status, an actor pool of C actors.

throughput = tiles / wall seconds; ratio = eochain / bare (goal >= 0.70).
Best of ``--repeat`` runs each (actor start-up is excluded by a warm-up run
of the dispatcher, as a long campaign amortises it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from scheduler.runtime.actors import TaskContext
from scheduler.runtime.cluster import use_loopback
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions
from scheduler.runtime.state import Task, TaskGraph

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_overhead.json"


def noop_tile(ctx: TaskContext) -> None:
    return None


def campaign(n_tiles: int, tiles_per_scene: int = 100) -> TaskGraph:
    tasks = [
        Task(f"s{i // tiles_per_scene:05d}/t{i % tiles_per_scene:03d}", noop_tile, (), 0,
             f"s{i // tiles_per_scene:05d}")
        for i in range(n_tiles)
    ]
    return TaskGraph.build(tasks)


def bare_ray(n_tiles: int) -> float:
    import ray

    @ray.remote(num_cpus=1)
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(100)])  # warm the worker pool
    start = time.perf_counter()
    ray.get([noop.remote() for _ in range(n_tiles)])
    return time.perf_counter() - start


def eochain(graph: TaskGraph, tasks_per_actor: int) -> float:
    dispatcher = Dispatcher(DispatchOptions(tasks_per_actor=tasks_per_actor))
    report = dispatcher.run(graph)
    if not report.ok or report.task_runs != len(graph.tasks):
        raise SystemExit(f"dispatcher run failed: {report.failures[:3]}")
    return report.wall_s


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks-per-actor", type=int, default=16)
    args = parser.parse_args(argv)
    use_loopback()
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    try:
        graph = campaign(args.tiles)
        eochain(campaign(200), args.tasks_per_actor)  # warm-up: actor start-up, imports
        bare = min(bare_ray(args.tiles) for _ in range(args.repeat))
        ours = min(eochain(graph, args.tasks_per_actor) for _ in range(args.repeat))
    finally:
        ray.shutdown()
    rows = [
        {"runner": "bare Ray tasks (baseline)", "tiles": args.tiles, "wall_s": round(bare, 3),
         "tiles_per_s": round(args.tiles / bare, 1)},
        {"runner": "eochain dispatcher", "tiles": args.tiles, "wall_s": round(ours, 3),
         "tiles_per_s": round(args.tiles / ours, 1)},
    ]
    ratio = bare / ours
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Ray {ray.__version__}, num_cpus={args.cpus}, tasks_per_actor={args.tasks_per_actor}, "
          f"best of {args.repeat}")
    print(f"{'runner':<28} {'tiles':>7} {'wall s':>8} {'tiles/s':>9}")
    for r in rows:
        print(f"{r['runner']:<28} {r['tiles']:>7} {r['wall_s']:>8.3f} {r['tiles_per_s']:>9.1f}")
    print(f"ratio eochain/bare throughput: {ratio:.2f} (goal >= 0.70)")
    doc = {"cores": os.cpu_count(), "num_cpus": args.cpus, "ray": ray.__version__,
           "tasks_per_actor": args.tasks_per_actor, "repeat": args.repeat, "rows": rows,
           "ratio": round(ratio, 3), "goal": 0.70}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
