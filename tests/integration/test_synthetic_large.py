"""A large synthetic scene is written in bounded memory.

A subprocess imports the generator, writes a 1000 x 1000 scene (which reaches
the steady state of every block buffer, the GDAL cache and the JIT), then a
4000 x 4000 one (two float32 views of 64 MB each), reading its peak resident
set size (``ru_maxrss``) after each. Bounded memory means the second scene
raises the peak by far less than one of its images, and the whole generator
stays under one image above the bare import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from ops.synthetic.scene import SceneSpec, generate_scene

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    out = sys.argv[1]
    base = peak_mib()
    generate_scene(SceneSpec(width=1000, height=1000, seed=1), out + "/small")
    small = peak_mib()
    scene = generate_scene(SceneSpec(width=4000, height=4000, seed=1), out + "/large")
    print(json.dumps({"import_mib": base, "small_mib": small, "large_mib": peak_mib(),
                      "unresolved": list(scene.unresolved_px)}))
    """
)


def test_a_4000_px_scene_is_written_in_bounded_memory(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, capture_output=True,
        text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    image_mib = 4000 * 4000 * 4 / 2**20
    assert report["unresolved"] == [0, 0]
    assert report["large_mib"] - report["small_mib"] < 0.25 * image_mib, report
    assert report["large_mib"] - report["import_mib"] < image_mib, report
    with rasterio.open(tmp_path / "large" / "view_1.tif") as src:
        assert (src.height, src.width) == (4000, 4000)
        last_rows = src.read(1, window=((3744, 4000), (0, 4000)))
    assert np.all(np.isfinite(last_rows)) and float(last_rows.std()) > 0.01
