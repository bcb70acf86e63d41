"""What several benchmarks share: where the real sample data is, synthetic scenes, where
results go."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scheduler.products.flow import SceneInput

REPO = Path(__file__).resolve().parents[1]


def write_result(name: str, result: object) -> Path:
    """Write a benchmark's result as ``benchmarks/results/NAME.json`` and say where."""
    out = REPO / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out.relative_to(REPO)}")
    return out


def shared_data() -> Path:
    """The shared sample-data folder (``$EOCHAIN_SHARED_DATA`` or ``../shared/data``).

    A benchmark on real data cannot run without it: exit with the reason.
    """
    env = os.environ.get("EOCHAIN_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        raise SystemExit(f"shared sample data not found at {path}; set EOCHAIN_SHARED_DATA")
    return path


def synthetic_scenes(root: Path, n: int, size: int) -> list[SceneInput]:
    """``n`` synthetic stereo scenes of ``size`` px (seeds 0..n-1), both views each, own DEM."""
    from ops.synthetic.scene import SceneSpec, generate_scene
    from scheduler.products.flow import SceneInput

    out: list[SceneInput] = []
    for seed in range(n):
        scene = generate_scene(SceneSpec(width=size, height=size, seed=seed), root / f"s{seed}")
        dem = str(scene.out_dir / "dem.tif")
        out.extend(SceneInput(f"s{seed}v{k}", str(scene.out_dir / f"view_{k}.tif"), dem)
                   for k in (0, 1))
    return out
