"""Loading a large campaign file: 12,600 scenes (about 1 MB of YAML) against the 2 s target.

Run: ``python -m benchmarks.campaign_load`` (``--scenes 12600 --repeat 3``).
Writes ``benchmarks/results/campaign_load.json``.

Input: a generated campaign of ``--scenes`` scenes stated in full (id, uri,
footprint, rows, cols; one flow mapping a line) paired two by two, ortho and
DSM products. Timed, best of ``--repeat``:

- ``strict``: :func:`planner.campaign.load_campaign`, the path every command
  takes (strict YAML from libyaml's events, then validation of every key);
- ``pyyaml_c``: ``yaml.load(..., CSafeLoader)`` alone, PyYAML's constructor
  over libyaml (no strictness, no validation) as the baseline;
- with ``--pure``, ``yaml.safe_load`` alone (PyYAML's pure-Python loader,
  the loader before the strict one; tens of seconds).

Ratios: strict / 2 s target (below 1 meets it), strict / pyyaml_c.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from planner.campaign import load_campaign

RESULTS = Path(__file__).resolve().parent / "results" / "campaign_load.json"
TARGET_S = 2.0


def write_campaign(path: Path, n_scenes: int) -> None:
    lines = ["name: big", "inputs:", "  scenes:"]
    for k in range(n_scenes):
        lon = 4.0 + (k % 100) * 0.01
        lines.append(f"    - {{id: s{k:05d}, footprint: [{lon:.4f}, 44.0, {lon + 0.2:.4f}, "
                     f"44.18], rows: 40000, cols: 40000, uri: s3://raw/s{k:05d}.tif}}")
    lines.append("  pairs:")
    lines += [f"    - [s{2 * k:05d}, s{2 * k + 1:05d}]" for k in range(n_scenes // 2)]
    lines.append("products: {ortho: {gsd_m: 0.5}, dsm: {gsd_m: 1.0}}")
    path.write_text("\n".join(lines) + "\n")


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=12_600)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pure", action="store_true", help="also time yaml.safe_load")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "campaign.yaml"
        write_campaign(path, args.scenes)
        size = path.stat().st_size
        campaign = load_campaign(path)
        if len(campaign.scenes) != args.scenes:
            raise SystemExit(f"loaded {len(campaign.scenes)} scenes, expected {args.scenes}")
        text = path.read_text()
        strict = best_of(lambda: load_campaign(path), args.repeat)
        c_base = best_of(lambda: yaml.load(text, Loader=yaml.CSafeLoader), args.repeat)
        pure = best_of(lambda: yaml.safe_load(text), 1) if args.pure else None
    result = {
        "benchmark": "campaign_load",
        "machine": {"python": platform.python_version(), "cpu": platform.processor()},
        "inputs": {"scenes": args.scenes, "bytes": size, "repeat": args.repeat},
        "seconds": {"strict": strict, "pyyaml_c": c_base, "pyyaml_pure": pure},
        "ratios": {"strict_vs_target_2s": strict / TARGET_S, "strict_vs_pyyaml_c": strict / c_base,
                   **({"strict_vs_pyyaml_pure": strict / pure} if pure else {})},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.scenes} scenes, {size / 1e6:.2f} MB: strict load {strict:.2f} s "
          f"(target {TARGET_S:g} s, ratio {strict / TARGET_S:.2f}); PyYAML C loader alone "
          f"{c_base:.2f} s" + (f"; PyYAML pure {pure:.1f} s" if pure else ""))


if __name__ == "__main__":
    main()
