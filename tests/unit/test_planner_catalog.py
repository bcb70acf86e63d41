"""Price catalog and calibration data: shipped, dated, sourced, refreshable, rebuildable."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from planner.calibration import (
    benchmark_runs,
    calibration_to_dict,
    load_calibration,
    rebuild_calibration,
)
from planner.catalog import (
    TypeInfo,
    catalog_from_dict,
    catalog_to_dict,
    load_catalog,
    refresh_catalog,
)
from planner.errors import CatalogError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_shipped_catalog_covers_the_regions_and_families() -> None:
    cat = load_catalog()
    assert cat.date and len(cat.sources) >= 3
    assert {"eu-west-1", "eu-west-3", "us-east-1", "us-west-2"} <= set(cat.regions)
    cats = {t.category for t in cat.instance_types.values()}
    archs = {t.arch for t in cat.instance_types.values()}
    assert cats == {"general", "compute", "memory"} and archs == {"x86_64", "arm64"}
    for region, table in cat.prices.items():
        for p in table.values():
            assert p.spot_usd_per_h is not None and 0 < p.spot_usd_per_h < p.on_demand_usd_per_h
            assert cat.transfer_usd_per_gb(region, region) == 0.0
    # known anchor: m7i.xlarge on demand in us-east-1
    assert cat.prices["us-east-1"]["m7i.xlarge"].on_demand_usd_per_h == pytest.approx(0.2016)
    assert cat.transfer_usd_per_gb("eu-west-3", "eu-west-1") == pytest.approx(0.02)


def test_interruption_band_to_hazard() -> None:
    cat = load_catalog()
    lam = cat.interruptions_per_h("5-10%")
    # the Advisor share is per instance life (24 h by the shipped spot_model), not per month
    assert cat.spot_model.mean_instance_lifetime_h == 24.0
    assert lam == pytest.approx(-math.log(1 - 0.075) / 24.0)
    assert lam / (-math.log(1 - 0.075) / 730) == pytest.approx(730 / 24)
    spot = [o for o in cat.offers(["eu-west-3"], ["c7g"], ["spot"])]
    assert spot and all(o.interruptions_per_h > 0 for o in spot)
    assert all(o.interruptions_per_h == 0 for o in cat.offers(["eu-west-3"], ["c7g"],
                                                               ["on-demand"]))


def test_unknown_region_gets_did_you_mean() -> None:
    with pytest.raises(CatalogError, match="did you mean 'eu-west-3'"):
        load_catalog().offers(["eu-west3"], ["c7g"])


def test_catalog_round_trips_and_rejects_bad_prices() -> None:
    cat = load_catalog()
    doc = catalog_to_dict(cat)
    again = catalog_from_dict(doc)
    assert again.prices == cat.prices and again.instance_types == cat.instance_types
    doc["prices"]["eu-west-3"]["c7g.xlarge"]["on_demand_usd_per_h"] = -1
    with pytest.raises(CatalogError, match=r"prices.eu-west-3.c7g.xlarge.on_demand_usd_per_h"):
        catalog_from_dict(doc, "bad.json")


class TableSource:
    """A second real CatalogSource: figures from a table (the boto3 one is in scheduler/)."""

    def instance_types(self, region: str, names: Sequence[str]) -> list[TypeInfo]:
        return [TypeInfo("c7g.xlarge", 4, 8.0, "arm64")]

    def spot_prices_usd_per_h(self, region: str, names: Sequence[str]) -> dict[str, float]:
        return {"c7g.xlarge": 0.0555}

    def on_demand_prices_usd_per_h(self, region: str, names: Sequence[str]) -> dict[str, float]:
        return {}


def test_refresh_replaces_only_reported_figures() -> None:
    base = load_catalog()
    new = refresh_catalog(base, TableSource(), ["eu-west-3"], "2026-01-01")
    p, old = new.prices["eu-west-3"]["c7g.xlarge"], base.prices["eu-west-3"]["c7g.xlarge"]
    assert p.spot_usd_per_h == 0.0555 and p.on_demand_usd_per_h == old.on_demand_usd_per_h
    assert p.interruption_band == old.interruption_band
    assert new.prices["eu-west-1"] == base.prices["eu-west-1"]
    assert new.date == "2026-01-01" and "boto3" in new.sources[-1]


def test_rebuild_calibration_from_benchmark_output() -> None:
    base = load_calibration()
    docs = [{"operation": "ortho", "runs": [
        {"pixels": 4e6, "cpu_s": 2.0, "peak_mem_gib": 0.1},
        {"pixels": 8e6, "cpu_s": 4.0, "peak_mem_gib": 0.2}]}]
    new = rebuild_calibration(base, docs)
    ortho = new.profile("ortho")
    assert ortho.cpu_s_per_mpx == pytest.approx(0.5 / base.speed(base.reference_family))
    assert ortho.mem_bytes_per_px == pytest.approx(0.1 / 4e6 * 2**30)
    assert new.profile("stereo") == base.profile("stereo")
    assert new.status == "partly measured"
    with pytest.raises(CatalogError, match="operation='sar'"):
        rebuild_calibration(base, [{"operation": "sar", "runs": []}])
    json.dumps(calibration_to_dict(new))


def test_a_cpu_second_is_counted_once() -> None:
    """The stereo benchmark times the whole DSM command, gridding included: dsm's share goes."""
    base = load_calibration()
    doc = {"operation": "stereo", "covers": ["dsm"], "runs": [{"pixels": 1e6, "cpu_s": 20.0}]}
    new = rebuild_calibration(base, [doc])
    speed = base.speed(base.reference_family)
    assert new.profile("stereo").cpu_s_per_mpx == pytest.approx(
        20.0 / speed - base.profile("dsm").cpu_s_per_mpx)
    with pytest.raises(CatalogError, match="not more than"):
        half_of_dsm = 0.5 * base.profile("dsm").cpu_s_per_mpx * speed
        rebuild_calibration(base, [{**doc, "runs": [{"pixels": 1e6, "cpu_s": half_of_dsm}]}])
    with pytest.raises(CatalogError, match="covers="):
        rebuild_calibration(base, [{**doc, "covers": ["stereo"]}])


def test_benchmark_result_files_are_understood() -> None:
    ortho = {"machine": {"cpus": 2}, "inputs": {"output_mpx": 10.0},
             "throughput": {"eochain_1thread_s": 1.0, "eochain_cog_write_all_s": 2.0}}
    assert benchmark_runs(ortho) == {"operation": "ortho",
                                     "runs": [{"pixels": 1e7, "cpu_s": 5.0}]}
    stereo = {"state": {"cpu_count": 2},
              "eochain": {"wall_s": 10.0, "summary": "x.tif: 100 x 50 cells, EPSG:1"}}
    assert benchmark_runs(stereo) == {"operation": "stereo", "covers": ["dsm"],
                                      "runs": [{"pixels": 5000.0, "cpu_s": 20.0}]}
    assert benchmark_runs({"unrelated": 1}) is None
