"""What ``eochain submit`` sends before any network call, and how long it waits for an answer.

Campaign folder of the staging tests::

    campaign/
      campaign.yaml        inputs.stac: catalog/items.json
      catalog/items.json   assets: ../images/s1.tif, s3://raw/s2.tif
      images/s1.tif        + s1.geom (sidecar, same stem)
      images/other.tif     (not referenced: stays home)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from scheduler.cli.jobs import jobs_group, status_cmd
from scheduler.cloud.bundle import Bundle
from scheduler.cloud.errors import JobSubmissionError
from scheduler.cloud.jobs import (
    DEFAULT_ADDRESS,
    build_job,
    connect,
    job_server_address,
    referenced_files,
)

pytestmark = pytest.mark.unit

ITEM = {"type": "Feature", "stac_version": "1.0.0", "bbox": [5.0, 44.0, 5.1, 44.1],
        "properties": {"datetime": "2024-06-01T10:00:00Z", "proj:shape": [1000, 1000]}}


def _campaign(tmp_path: Path, **inputs: object) -> Path:
    root = tmp_path / "campaign"
    (root / "catalog").mkdir(parents=True)
    (root / "images").mkdir()
    for name in ("s1.tif", "s1.geom", "other.tif"):
        (root / "images" / name).write_bytes(name.encode())
    items = {"type": "FeatureCollection", "features": [
        {**ITEM, "id": "s1", "assets": {"image": {"href": "images/s1.tif"}}},
        {**ITEM, "id": "s2", "assets": {"image": {"href": "s3://raw/s2.tif"}}}]}
    (root / "catalog" / "items.json").write_text(json.dumps(items))
    path = root / "campaign.yaml"
    path.write_text(yaml.safe_dump({"name": "staged", "inputs": inputs or {
        "stac": "catalog/items.json"}, "products": {"ortho": {"gsd_m": 0.5}}}))
    return path


def test_relative_files_of_the_campaign_are_staged_in_place(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    (tmp_path / "dem.tif").write_bytes(b"dem")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "old.tif").write_bytes(b"an earlier output: never shipped")
    with pytest.raises(JobSubmissionError, match="--out 'results': a relative output"):
        build_job(path, run_args=["--dem", "dem.tif", "--out", "results"], cwd=tmp_path)
    out = str(tmp_path / "results")
    spec = build_job(path, run_args=["--dem", "dem.tif", "--out", out], cwd=tmp_path)
    try:
        staged = sorted(str(p.relative_to(spec.staging_dir))
                        for p in spec.staging_dir.rglob("*") if p.is_file())
        assert staged == ["campaign.yaml", "catalog/items.json", "dem.tif", "images/s1.geom",
                          "images/s1.tif"]
        assert spec.runtime_env["working_dir"] == str(spec.staging_dir)
        assert spec.entrypoint.endswith(f"--dem dem.tif --out {out}")
        assert "py_modules" in spec.runtime_env and "pip" not in spec.runtime_env
    finally:
        shutil.rmtree(spec.staging_dir)


def test_the_wheel_is_installed_from_the_working_dir(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "eochain-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (dist / "constraints.txt").write_text("numpy==2.2.6\n")
    spec = build_job(_campaign(tmp_path), bundle=Bundle(dist, "eochain-0.1.0-py3-none-any.whl"))
    try:
        # a build tag from the wheel's bytes: Ray's cached environments never mix builds
        tagged = f"eochain-0.1.0-1{hashlib.sha256(b'wheel').hexdigest()[:12]}-py3-none-any.whl"
        assert spec.runtime_env["pip"]["packages"] == [
            "-c ${RAY_RUNTIME_ENV_CREATE_WORKING_DIR}/constraints.txt",
            f"${{RAY_RUNTIME_ENV_CREATE_WORKING_DIR}}/{tagged}[runtime]"]
        assert (spec.staging_dir / tagged).read_bytes() == b"wheel"
        assert "py_modules" not in spec.runtime_env
    finally:
        shutil.rmtree(spec.staging_dir)


def test_scene_uris_urls_and_absolute_paths(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    doc = {"inputs": {"scenes": [{"uri": "images/other.tif"}, {"uri": "s3://b/k.tif"},
                                 {"uri": "/data/abs.tif"}, {"uri": "/vsis3/b/k.tif"}]}}
    assert referenced_files(doc, path.parent) == ["images/other.tif"]


def test_a_bad_campaign_is_refused_before_staging(tmp_path: Path) -> None:
    path = _campaign(tmp_path, stac="catalog/missing.json")
    before = set(Path(tempfile.gettempdir()).glob("eochain-job-*"))
    with pytest.raises(JobSubmissionError, match="missing.json"):
        build_job(path)
    path.write_text("name: x\ninputs: {stac: catalog/items.json}\n")
    with pytest.raises(JobSubmissionError, match="products"):
        build_job(path)
    assert set(Path(tempfile.gettempdir()).glob("eochain-job-*")) == before


def test_a_reference_outside_the_campaign_folder_is_refused(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    (tmp_path / "outside.tif").write_bytes(b"x")
    path.write_text(yaml.safe_dump({"name": "escape", "inputs": {"scenes": [
        {"id": "a", "uri": "../outside.tif", "footprint": [5.0, 44.0, 5.1, 44.1],
         "rows": 10, "cols": 10}]}, "products": {"ortho": {"gsd_m": 0.5}}}))
    with pytest.raises(JobSubmissionError, match=r"'\.\./outside.tif' leaves the campaign"):
        build_job(path)


def test_address_variables_in_order() -> None:
    assert job_server_address({}) == DEFAULT_ADDRESS
    assert job_server_address({"RAY_ADDRESS": "auto"}) == DEFAULT_ADDRESS  # a GCS address
    assert job_server_address({"RAY_ADDRESS": "http://h:8265"}) == "http://h:8265"
    assert job_server_address({"RAY_ADDRESS": "http://h:8265",
                               "RAY_API_SERVER_ADDRESS": "http://api:8265"}) == "http://api:8265"
    assert job_server_address({"RAY_API_SERVER_ADDRESS": "http://api:8265",
                               "EOCHAIN_RAY_ADDRESS": "http://eo:8265"}) == "http://eo:8265"


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_black_holed_job_server_is_an_error_not_a_hang(black_hole: str) -> None:
    with pytest.raises(JobSubmissionError, match="no answer within 1 s"):
        connect(black_hole, timeout_s=1.0)
    for command, args in ((status_cmd, ["some-job"]), (jobs_group, ["list"])):
        result = CliRunner().invoke(command, [*args, "--address", black_hole, "--timeout", "1"])
        assert result.exit_code == 1, result.output
        assert "no answer within 1 s" in result.output and "Traceback" not in result.output


def test_ray_address_variable_is_honoured_by_the_commands(black_hole: str) -> None:
    result = CliRunner(env={"RAY_ADDRESS": black_hole, "EOCHAIN_RAY_ADDRESS": None,
                            "RAY_API_SERVER_ADDRESS": None}).invoke(
        status_cmd, ["some-job", "--timeout", "1"])
    assert result.exit_code == 1 and f"connecting to {black_hole}" in result.output
