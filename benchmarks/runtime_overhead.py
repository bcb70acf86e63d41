"""Scheduling overhead: 10,000 no-op tiles through eochain's dispatcher vs bare Ray.

Run: ``python -m benchmarks.runtime_overhead [--tiles N] [--cpus C] [--repeat R]``.
Writes the table to ``benchmarks/results/runtime_overhead.json``.

State machine: one local Ray instance (``ray.init(num_cpus=C)``, loopback,
no dashboard), warmed up; then, in one process and on the same instance,
``--repeat`` rounds (default 5), each running the three in turn:

* bare Ray tasks: N ``noop.remote()`` submitted at once, ``ray.get`` on all
  (Ray's own pipelining, no ordering, no bounds, no recovery);
* bare actor calls: C actors (reserving no CPU, so they stay up beside the
  others), N/C ``actor.noop.remote()`` calls each submitted at once (the
  ceiling of one driver feeding actors);
* eochain: the same N no-op tiles as a campaign (N/100 scenes of 100
  independent tiles, each scene ending in nothing) through
  :class:`scheduler.runtime.dispatch.Dispatcher`: priority order, the
  bytes-in-flight bound, per-task status, an actor pool of C actors, small
  tasks batched per actor call.

throughput = tiles / wall seconds; the median of the rounds is reported with
the spread (min-max); ratio = eochain / bare tasks per round (goal >= 0.70 in
every round), and eochain / bare actor calls (aim 0.70). Actor start-up is
excluded by a warm-up run of the dispatcher, as a long campaign amortises it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from scheduler.ray_private import use_loopback
from scheduler.runtime.actors import TaskContext
from scheduler.runtime.dispatch import Dispatcher, DispatchOptions
from scheduler.runtime.state import Task, TaskGraph

RESULTS = Path(__file__).resolve().parent / "results" / "runtime_overhead.json"
GOAL_TASKS = 0.70
AIM_ACTOR_CALLS = 0.70


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


class _Noop:
    def noop(self) -> None:
        return None


def bare_actor_calls(actors: list[Any], n_tiles: int) -> float:
    import ray

    start = time.perf_counter()
    ray.get([actors[i % len(actors)].noop.remote() for i in range(n_tiles)])
    return time.perf_counter() - start


def eochain(graph: TaskGraph, tasks_per_actor: int) -> float:
    dispatcher = Dispatcher(DispatchOptions(tasks_per_actor=tasks_per_actor))
    report = dispatcher.run(graph)
    if not report.ok or report.task_runs != len(graph.tasks):
        raise SystemExit(f"dispatcher run failed: {report.failures[:3]}")
    return report.wall_s


def _row(runner: str, tiles: int, walls: list[float]) -> dict[str, Any]:
    rates = [tiles / w for w in walls]
    return {"runner": runner, "tiles": tiles, "wall_s": round(statistics.median(walls), 3),
            "tiles_per_s": round(statistics.median(rates), 1),
            "tiles_per_s_min": round(min(rates), 1), "tiles_per_s_max": round(max(rates), 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=10_000)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks-per-actor", type=int, default=DispatchOptions().tasks_per_actor)
    args = parser.parse_args(argv)
    use_loopback()
    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 2**20)
    bare: list[float] = []
    calls: list[float] = []
    ours: list[float] = []
    try:
        graph = campaign(args.tiles)
        eochain(campaign(200), args.tasks_per_actor)  # warm-up: actor start-up, imports
        # no CPU reserved: they sit idle beside the bare tasks' workers and the dispatcher's
        noop_actor: Any = ray.remote(num_cpus=0)(_Noop)
        actors: list[Any] = [noop_actor.remote() for _ in range(args.cpus)]
        ray.get([a.noop.remote() for a in actors])
        for _ in range(args.repeat):
            bare.append(bare_ray(args.tiles))
            calls.append(bare_actor_calls(actors, args.tiles))
            ours.append(eochain(graph, args.tasks_per_actor))
        for a in actors:
            ray.kill(a)
    finally:
        ray.shutdown()
    rows = [_row("bare Ray tasks (baseline)", args.tiles, bare),
            _row("bare Ray actor calls", args.tiles, calls),
            _row("eochain dispatcher", args.tiles, ours)]
    ratios = [b / o for b, o in zip(bare, ours, strict=True)]
    call_ratios = [c / o for c, o in zip(calls, ours, strict=True)]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Ray {ray.__version__}, num_cpus={args.cpus}, tasks_per_actor={args.tasks_per_actor}, "
          f"median of {args.repeat} (spread min-max)")
    print(f"{'runner':<28} {'tiles':>7} {'wall s':>8} {'tiles/s':>9}  spread")
    for r in rows:
        print(f"{r['runner']:<28} {r['tiles']:>7} {r['wall_s']:>8.3f} {r['tiles_per_s']:>9.1f}"
              f"  {r['tiles_per_s_min']:.0f}-{r['tiles_per_s_max']:.0f}")
    ratio = statistics.median(ratios)
    call_ratio = statistics.median(call_ratios)
    print(f"ratio eochain/bare tasks: median {ratio:.2f}, spread {min(ratios):.2f}-"
          f"{max(ratios):.2f} (goal >= {GOAL_TASKS:.2f} in every round: "
          f"{'met' if min(ratios) >= GOAL_TASKS else 'NOT met'})")
    print(f"ratio eochain/bare actor calls: median {call_ratio:.2f}, spread "
          f"{min(call_ratios):.2f}-{max(call_ratios):.2f} (aim >= {AIM_ACTOR_CALLS:.2f})")
    doc = {"cores": os.cpu_count(), "num_cpus": args.cpus, "ray": ray.__version__,
           "tasks_per_actor": args.tasks_per_actor, "repeat": args.repeat, "rows": rows,
           "ratio": round(ratio, 3), "ratio_min": round(min(ratios), 3),
           "ratio_max": round(max(ratios), 3), "goal": GOAL_TASKS,
           "ratio_actor_calls": round(call_ratio, 3),
           "ratio_actor_calls_min": round(min(call_ratios), 3),
           "ratio_actor_calls_max": round(max(call_ratios), 3), "aim": AIM_ACTOR_CALLS}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
