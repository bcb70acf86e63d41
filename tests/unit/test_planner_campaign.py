"""Campaign spec validation: every error names the key, the value and what was expected."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from planner.campaign import load_campaign, parse_campaign, survey_scenes, validate_against_catalog
from planner.catalog import load_catalog
from planner.errors import CampaignError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]

BASE: dict[str, Any] = {
    "name": "t",
    "inputs": {
        "scenes": [
            {"id": "a", "footprint": [5.0, 44.0, 5.25, 44.18], "rows": 40000, "cols": 40000},
            {"id": "b", "footprint": [5.01, 44.0, 5.26, 44.18], "rows": 40000, "cols": 40000},
        ],
        "pairs": [["a", "b"]],
    },
    "products": {"ortho": {"gsd_m": 0.5}, "dsm": {"gsd_m": 1.0}},
    "data": {"region": "eu-west-3", "bucket": "raw"},
    "deadline_h": 24,
    "compute": {"regions": ["eu-west-3"], "families": ["c7g", "m7g"]},
}


def _with(path: str, value: object) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    node = doc
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return doc


def test_valid_campaign_parses_with_defaults() -> None:
    c = parse_campaign(BASE)
    assert [s.id for s in c.scenes] == ["a", "b"]
    assert c.pairs[0].id == "a+b"
    assert c.objective == "cheapest" and c.compute.markets == ("spot", "on-demand")
    assert c.tiling.tile_px == 4096 and c.quotas.spot_vcpus == 2048
    validate_against_catalog(c, load_catalog())


@pytest.mark.parametrize(
    ("path", "value", "fragments"),
    [
        ("deadline_h", -3, ["deadline_h = -3", "a finite number > 0"]),
        ("objective", "cheapst", ["objective = 'cheapst'", "did you mean 'cheapest'"]),
        ("tiling", {"tile_pix": 512}, ["tiling.tile_pix", "did you mean 'tile_px'"]),
        ("products", {"orto": {"gsd_m": 0.5}}, ["products.orto", "did you mean 'ortho'"]),
        ("compute.markets", ["spto"], ["compute.markets = 'spto'", "did you mean 'spot'"]),
        ("inputs.pairs", [["a", "c"]], ["inputs.pairs[0]", "'c'"]),
        ("inputs.scenes", [{"id": "a", "footprint": [5, 44, 4, 45], "rows": 1, "cols": 1}],
         ["inputs.scenes[0].footprint", "lon_min"]),
        ("objective", "weighted", ["weight_usd_per_h", "objective: weighted"]),
    ],
)
def test_errors_name_key_value_and_expectation(path: str, value: object,
                                               fragments: list[str]) -> None:
    with pytest.raises(CampaignError) as err:
        parse_campaign(_with(path, value), "c.yaml")
    for frag in fragments:
        assert frag in str(err.value)
    assert "c.yaml" in str(err.value)


def test_every_missing_or_bad_key_is_reported_in_one_message() -> None:
    doc = copy.deepcopy(BASE)
    del doc["name"], doc["products"]
    doc["deadline_h"] = float("nan")
    doc["tiling"] = {"tile_px": 16}
    with pytest.raises(CampaignError) as err:
        parse_campaign(doc, "c.yaml")
    message = str(err.value)
    assert message.startswith("c.yaml: 4 problems:")
    for frag in ("missing key 'name'", "missing key 'products'", "deadline_h = nan",
                 "tiling.tile_px = 16, expected an integer >= 64"):
        assert frag in message


def test_local_campaign_needs_only_name_inputs_products() -> None:
    doc = {k: BASE[k] for k in ("name", "inputs", "products")}
    c = parse_campaign(doc)
    assert c.deadline_h == 24.0 and c.data_region == "eu-west-3" and c.data_bucket == ""
    assert c.compute.regions == ("eu-west-3",) and "c7g" in c.compute.families
    assert c.defaults_used == ("deadline_h", "data", "compute")
    regions = parse_campaign({**doc, "compute": {"regions": ["eu-west-1"]}})
    assert regions.data_region == "eu-west-1"


@pytest.mark.parametrize(
    ("path", "value", "suggestion"),
    [("data.region", "eu-west3", "eu-west-3"), ("compute.regions", ["us-east1"], "us-east-1"),
     ("compute.families", ["c7gg"], "c7g")],
)
def test_catalog_names_get_did_you_mean(path: str, value: object, suggestion: str) -> None:
    c = parse_campaign(_with(path, value))
    with pytest.raises(CampaignError, match=f"did you mean '{suggestion}'"):
        validate_against_catalog(c, load_catalog())


def test_survey_generates_overlapping_pairs() -> None:
    scenes, pairs = survey_scenes(30, (4.6, 43.4, 6.6, 44.6), 20.0, seed=1)
    assert len(scenes) == 60 and len(pairs) == 30
    by_id = {s.id: s for s in scenes}
    for p in pairs:
        a, b = by_id[p.left].footprint, by_id[p.right].footprint
        assert max(a[1], b[1]) < min(a[3], b[3])
        assert by_id[p.left].rows == 40000


def test_stac_item_collection(tmp_path: Path) -> None:
    items: dict[str, Any] = {"type": "FeatureCollection", "features": [
        {"id": f"s{i}", "bbox": [5.0, 44.0, 5.25, 44.18],
         "properties": {"proj:shape": [40000, 40000]},
         "assets": {"image": {"href": f"s3://b/s{i}.tif"}}} for i in range(2)]}
    (tmp_path / "items.json").write_text(json.dumps(items))
    doc = _with("inputs", {"stac": "items.json", "pairs": [["s0", "s1"]]})
    (tmp_path / "c.yaml").write_text(json.dumps(doc))  # JSON is YAML
    c = load_campaign(tmp_path / "c.yaml")
    assert [s.uri for s in c.scenes] == ["s3://b/s0.tif", "s3://b/s1.tif"]
    bad = copy.deepcopy(items)
    del bad["features"][1]["properties"]["proj:shape"]
    (tmp_path / "items.json").write_text(json.dumps(bad))
    with pytest.raises(CampaignError, match=r"STAC items.json features\[1\] .* states no rows, "
                                            r"cols; they are read from the file only"):
        load_campaign(tmp_path / "c.yaml")


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match="cannot be read"):
        load_campaign(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(CampaignError, match="not valid YAML"):
        load_campaign(tmp_path / "bad.yaml")
