"""The Flow API without Ray: laziness, validation, and a tiny in-process campaign."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.fleet.departures import Departure, DepartureCause
from scheduler.products.driver import Driver, worker_env
from scheduler.products.flow import SceneInput, merge_reports
from scheduler.runtime.dispatch import RunReport
from scheduler.runtime.errors import FlowError

pytestmark = pytest.mark.unit


def test_flow_is_lazy_and_immutable(tmp_path: Path) -> None:
    flow = Driver(address="serial").get_flow([tmp_path / "missing.tif"])
    ortho = flow.ortho(dem=tmp_path / "dem.tif", tile_px=64)
    written = ortho.write(tmp_path / "out")
    assert flow.ortho_step is None and ortho.dest is None
    assert written.scenes == (SceneInput("missing", str(tmp_path / "missing.tif")),)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_flow_validates_what_it_is_given(tmp_path: Path) -> None:
    driver = Driver(address="serial")
    with pytest.raises(FlowError, match="no scenes"):
        driver.get_flow([])
    with pytest.raises(FlowError, match=r"scene ids \['a'\] appear more than once"):
        driver.get_flow([tmp_path / "x" / "a.tif", tmp_path / "y" / "a.tif"])
    flow = driver.get_flow([SceneInput("a", "a.tif"), SceneInput("b", "b.tif")])
    with pytest.raises(FlowError, match=r"names scenes \['c'\]"):
        flow.dsm([("a", "c")])
    with pytest.raises(FlowError, match="no operation"):
        flow.write(tmp_path).run()
    with pytest.raises(FlowError, match="no destination"):
        flow.ortho(dem="dem.tif").run()
    assert driver.get_flow(["s3://bucket/raw/a.tif"]).scenes[0].uri == "/vsis3/bucket/raw/a.tif"


def test_unreadable_scenes_fail_by_name_and_nothing_is_written(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff")
    report = (Driver(address="serial").get_flow([bad, tmp_path / "absent.tif"])
              .ortho(dem=tmp_path / "dem.tif").write(tmp_path / "out").run())
    assert not report.ok and report.products_total == 2
    assert {f.label for f in report.failures} == {"bad", "absent"}
    assert all(str(tmp_path) in f.error for f in report.failures)
    assert not report.written and report.dispatch is None


def test_worker_env_passes_settings_not_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_S3_ENDPOINT", "127.0.0.1:9000")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "3")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    env = worker_env()
    assert env["AWS_S3_ENDPOINT"] == "127.0.0.1:9000" and env["GDAL_HTTP_MAX_RETRY"] == "3"
    assert "AWS_SECRET_ACCESS_KEY" not in env and "AWS_ACCESS_KEY_ID" not in env


def test_merged_rounds_keep_departures_cpu_and_span() -> None:
    gone = Departure("n1", "c7g.large", "spot", DepartureCause.SCALE_DOWN, 3.0)
    a = RunReport({"a": 1}, (), 2, 0, 0, 10, 1.0, {"a": 1}, cpu_s=1.5, actor_cpus=2,
                  first_task_at_s=100.0, ended_at_s=101.0, busy_s=1.4, departures=(gone,))
    b = RunReport({"b": 2}, (), 3, 1, 0, 30, 2.0, {"a": 1}, cpu_s=2.5, actor_cpus=4,
                  first_task_at_s=105.0, ended_at_s=107.0, busy_s=2.4)
    m = merge_reports(a, b)
    assert m.departures == (gone,)
    assert (m.cpu_s, m.actor_cpus, m.busy_s) == (4.0, 4, pytest.approx(3.8))
    assert (m.first_task_at_s, m.ended_at_s) == (100.0, 107.0)
    assert m.runs_by_key == {"a": 2} and m.peak_bytes_in_flight == 30 and m.task_runs == 5
