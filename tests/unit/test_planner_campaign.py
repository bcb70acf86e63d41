"""Campaign spec validation: every error names the key, the value and what was expected."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.campaign import (
    Campaign,
    SceneFacts,
    check_campaign,
    load_campaign,
    parse_campaign,
    survey_scenes,
    validate_against_catalog,
)
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
        ("inputs.scenes", [{"id": "a", "footprint": [5, 44, 6, 45], "rows": 10**12, "cols": 1}],
         ["inputs.scenes[0].rows = 1000000000000", "<= 1,000,000"]),
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


# ---------------------------------------------------------------- strict files
def _load_text(tmp_path: Path, text: str | bytes) -> Campaign:
    path = tmp_path / "c.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return load_campaign(path)


MINIMAL = ("name: t\ninputs:\n  scenes:\n    - {id: a, footprint: [5.0, 44.0, 5.25, 44.18], "
           "rows: 4000, cols: 4000}\nproducts:\n  ortho: {gsd_m: 0.5}\n")


def test_minimal_file_loads(tmp_path: Path) -> None:
    c = _load_text(tmp_path, MINIMAL)
    assert c.name == "t" and c.scenes[0].rows == 4000 and c.deadline_h == 24.0


def test_duplicate_key_names_key_and_both_lines(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"line 8: duplicate key 'deadline_h' \(first at "
                                            r"line 7\)"):
        _load_text(tmp_path, MINIMAL + "deadline_h: 24\ndeadline_h: 1\n")


def test_alias_bomb_fails_fast_without_printing_the_expansion(tmp_path: Path) -> None:
    levels = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = "\n".join(levels) + "\nname: *a8\n"
    with pytest.raises(CampaignError) as err:
        _load_text(tmp_path, bomb)
    assert "anchor &a0 is not accepted" in str(err.value)
    assert len(str(err.value)) < 300


def test_alias_without_anchor_on_a_scalar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"line \d+: (alias \*x|anchor &x) is not accepted"):
        _load_text(tmp_path, MINIMAL + "tiling: &x {tile_px: 512}\n")


@pytest.mark.parametrize(
    ("data", "expected"),
    [(MINIMAL.replace("name: t", "name: caf\u00e9").encode("latin-1"), "not UTF-8 text"),
     (MINIMAL.encode("utf-16"), "UTF-16"),
     (bytes(range(256)) * 4, "binary file")],
    ids=["latin-1", "utf-16", "binary"])
def test_non_utf8_files_are_named(tmp_path: Path, data: bytes, expected: str) -> None:
    with pytest.raises(CampaignError) as err:
        _load_text(tmp_path, data)
    assert expected in str(err.value) and "c.yaml" in str(err.value)


def test_utf8_with_bom_is_accepted(tmp_path: Path) -> None:
    assert _load_text(tmp_path, b"\xef\xbb\xbf" + MINIMAL.encode()).name == "t"


@pytest.mark.parametrize("opener", ["[", "{a: "])
def test_deep_nesting_is_an_error_not_a_recursion_error(tmp_path: Path, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    with pytest.raises(CampaignError, match="nesting deeper than 32 levels|nesting depth"):
        _load_text(tmp_path, "name: " + opener * 5000 + "1" + closer * 5000 + "\n")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize("key", ["deadline_h", "budget_usd", "weight_usd_per_h"])
def test_non_finite_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(CampaignError, match=f"{key} = .*expected a finite number"):
        _load_text(tmp_path, MINIMAL + f"{key}: {value}\n")


def test_non_finite_gsd_is_refused() -> None:
    with pytest.raises(CampaignError, match=r"products.ortho.gsd_m = nan"):
        parse_campaign(_with("products.ortho", {"gsd_m": float("nan")}))


def test_long_values_are_quoted_shortened() -> None:
    with pytest.raises(CampaignError) as err:
        parse_campaign(_with("objective", "x" * 100_000))
    assert "objective = 'xxxx" in str(err.value)
    assert len(str(err.value)) < 300


def test_large_campaign_loads_every_scene(tmp_path: Path) -> None:
    """12,600 scenes by footprint and size (about 1 MB of YAML), all loaded and paired."""
    n = 6_300
    lines = ["name: big", "inputs:", "  scenes:"]
    for k in range(2 * n):
        lon = 4.0 + (k % 100) * 0.01
        lines.append(f"    - {{id: s{k:05d}, footprint: [{lon:.4f}, 44.0, {lon + 0.2:.4f}, "
                     f"44.18], rows: 40000, cols: 40000, uri: s3://raw/s{k:05d}.tif}}")
    lines.append("  pairs:")
    lines += [f"    - [s{2 * k:05d}, s{2 * k + 1:05d}]" for k in range(n)]
    lines.append("products: {ortho: {gsd_m: 0.5}, dsm: {gsd_m: 1.0}}")
    (tmp_path / "big.yaml").write_text("\n".join(lines) + "\n")
    assert (tmp_path / "big.yaml").stat().st_size > 1_000_000
    c = load_campaign(tmp_path / "big.yaml")
    assert len(c.scenes) == 2 * n and len(c.pairs) == n
    assert c.scenes[-1].uri == f"s3://raw/s{2 * n - 1:05d}.tif"


def test_survey_beyond_the_limit_is_refused_unless_allowed() -> None:
    doc = _with("inputs", {"survey": {"pairs": 10**9, "bbox": [4.6, 43.4, 6.6, 44.6]}})
    with pytest.raises(CampaignError, match=r"inputs.survey.pairs = 1,000,000,000 pairs .* "
                                            r"--allow-large"):
        parse_campaign(doc)
    small = _with("inputs", {"survey": {"pairs": 3, "bbox": [4.6, 43.4, 6.6, 44.6]}})
    assert len(parse_campaign(small, allow_large=True).scenes) == 6


# ---------------------------------------------------------------- scenes by path
class FileFacts:
    """A SceneReader over a table of facts per path ("" marks an unreadable file)."""

    def __init__(self, table: dict[str, SceneFacts | str]) -> None:
        self.table = table
        self.asked: list[str] = []

    def __call__(self, paths: Sequence[str]) -> list[SceneFacts | str]:
        self.asked += paths
        return [self.table.get(p, "no such file") for p in paths]


GIZA = SceneFacts(801, 800, (31.1319, 29.9765, 31.1383, 29.9811), "PHR1B",
                  "2013-02-08T08:36:09+00:00", "RPC")


def _by_uri(scenes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "t", "inputs": {"scenes": scenes}, "products": {"ortho": {"gsd_m": 0.5}}}


def test_scene_by_uri_is_completed_from_the_file(tmp_path: Path) -> None:
    reader = FileFacts({str(tmp_path / "img1.tif"): GIZA})
    c = parse_campaign(_by_uri([{"uri": "img1.tif"}]), "c.yaml", tmp_path, reader=reader)
    s = c.scenes[0]
    assert (s.id, s.rows, s.cols, s.footprint) == ("img1", 801, 800, GIZA.footprint)
    assert s.sensor == "PHR1B" and s.acquired.startswith("2013-02-08") and s.uri == "img1.tif"


def test_scene_by_uri_without_a_reader_says_what_is_missing() -> None:
    with pytest.raises(CampaignError, match=r"inputs.scenes\[0\] \('img1.tif'\) states no "
                                            r"footprint, rows, cols"):
        parse_campaign(_by_uri([{"uri": "img1.tif"}]))


def test_stated_values_contradicting_the_file_name_both(tmp_path: Path) -> None:
    reader = FileFacts({str(tmp_path / "img1.tif"): GIZA})
    paris = {"uri": "img1.tif", "footprint": [2.25, 48.8, 2.42, 48.9], "rows": 40000,
             "cols": 800}
    with pytest.raises(CampaignError) as err:
        parse_campaign(_by_uri([paris]), "c.yaml", tmp_path, reader=reader)
    message = str(err.value)
    assert "2 problems" in message
    assert "inputs.scenes[0].rows = 40000 but" in message and "has 801 rows" in message
    assert "footprint = [2.25000, 48.80000, 2.42000, 48.90000]" in message
    assert "[31.13190, 29.97650, 31.13830, 29.98110]" in message


def test_one_unreadable_scene_is_reported_and_the_others_read(tmp_path: Path) -> None:
    reader = FileFacts({str(tmp_path / "a.tif"): GIZA})
    with pytest.raises(CampaignError) as err:
        parse_campaign(_by_uri([{"uri": "a.tif"}, {"uri": "b.tif"}]), "c.yaml", tmp_path,
                       reader=reader)
    assert "inputs.scenes[1] ('b.tif'): no such file" in str(err.value)
    assert reader.asked == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]


def test_remote_scene_with_every_fact_stated_is_not_read() -> None:
    reader = FileFacts({})
    doc = _by_uri([{"id": "a", "uri": "s3://b/a.tif", "footprint": [5, 44, 5.2, 44.2],
                    "rows": 10, "cols": 10}])
    assert parse_campaign(doc, reader=reader).scenes[0].rows == 10
    assert reader.asked == []


def _stac(tmp_path: Path, assets: object, props: dict[str, Any] | None = None) -> Path:
    items = {"type": "FeatureCollection", "features": [
        {"id": "s0", "bbox": [5.0, 44.0, 5.25, 44.18],
         "properties": props if props is not None else {"proj:shape": [400, 400],
                                                         "datetime": "2024-06-01T10:00:00Z"},
         "assets": assets}]}
    (tmp_path / "items.json").write_text(json.dumps(items))
    return tmp_path / "items.json"


@pytest.mark.parametrize(
    ("assets", "stac", "href"),
    [({"thumb": {"href": "t.png"}, "pan": {"href": "p.tif", "roles": ["data"]}},
      "items.json", "p.tif"),
     ({"visual": {"href": "v.tif"}, "pan": {"href": "p.tif"}},
      {"href": "items.json", "asset": "visual"}, "v.tif"),
     ({"image": {"href": "i.tif"}, "thumb": {"href": "t.png"}}, "items.json", "i.tif")],
    ids=["role-data", "named-key", "named-image"])
def test_stac_asset_by_role_or_key_and_datetime_kept(tmp_path: Path, assets: object,
                                                      stac: object, href: str) -> None:
    _stac(tmp_path, assets)
    doc = _by_uri([])
    doc["inputs"] = {"stac": stac}
    c = parse_campaign(doc, "c.yaml", tmp_path)
    assert c.scenes[0].uri == href and c.scenes[0].acquired == "2024-06-01T10:00:00Z"


@pytest.mark.parametrize(
    ("assets", "expected"),
    [("s3://b/x.tif", "assets = 's3://b/x.tif', expected a mapping"),
     ({"a": {"href": "a.tif"}, "b": {"href": "b.tif"}}, "name one with inputs.stac.asset"),
     ({"image": "x.tif"}, "has no 'href' string")])
def test_bad_stac_assets_are_named(tmp_path: Path, assets: object, expected: str) -> None:
    _stac(tmp_path, assets)
    doc = _by_uri([])
    doc["inputs"] = {"stac": "items.json"}
    with pytest.raises(CampaignError) as err:
        parse_campaign(doc, "c.yaml", tmp_path)
    assert expected in str(err.value) and "features[0]" in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"features": [], "features": []}', "duplicate key 'features'"),
     ('{"features": [{"id": NaN}]}', "NaN is not a number here"),
     ("[" * 100_000 + "]" * 100_000, "nesting deeper than 32 levels"),
     ('[{"id": "s0"}]', "top level = [{'id': 's0'}], expected a mapping")])
def test_stac_file_read_strictly(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "items.json").write_text(text)
    doc = _by_uri([])
    doc["inputs"] = {"stac": "items.json"}
    with pytest.raises(CampaignError) as err:
        parse_campaign(doc, "c.yaml", tmp_path)
    assert expected in str(err.value) and "items.json" in str(err.value)


def test_check_campaign_validates_all_but_the_images(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "name: t\ninputs:\n  scenes: [{uri: img1.tif}, {uri: img2.tif}]\n  pairs: [[img1, img2]]\n"
        "products: {dsm: {gsd_m: 1.0}}\n")
    check_campaign(tmp_path / "c.yaml")  # the images are read where the campaign runs
    (tmp_path / "c.yaml").write_text(
        "name: t\ninputs:\n  scenes: [{uri: img1.tif}]\n  pairs: [[img1, img3]]\n"
        "products: {dsm: {gsd_m: .nan}}\n")
    with pytest.raises(CampaignError) as err:
        check_campaign(tmp_path / "c.yaml")
    assert "2 problems" in str(err.value) and "names scene 'img3'" in str(err.value)


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with path.open("wb") as f:
        f.truncate(100 * 2**20)  # sparse: nothing is written or read
    with pytest.raises(CampaignError, match=r"is 100 MiB, expected at most 64 MiB"):
        load_campaign(path)


def test_stac_item_without_shape_is_read_from_its_asset(tmp_path: Path) -> None:
    items = {"type": "FeatureCollection", "features": [
        {"id": "giza", "properties": {"datetime": "2013-02-08T08:36:09Z"},
         "assets": {"pan": {"href": "img1.tif", "roles": ["data"]}}}]}
    (tmp_path / "items.json").write_text(json.dumps(items))
    doc = _by_uri([])
    doc["inputs"] = {"stac": "items.json"}
    reader = FileFacts({str(tmp_path / "img1.tif"): GIZA})
    s = parse_campaign(doc, "c.yaml", tmp_path, reader=reader).scenes[0]
    assert (s.id, s.rows, s.cols, s.footprint) == ("giza", 801, 800, GIZA.footprint)
    assert s.acquired == "2013-02-08T08:36:09Z" and s.uri == "img1.tif"


@pytest.mark.parametrize(("acquired", "ok"), [("2013-02-08", True),
                                              ("2013-02-08T08:36:09Z", True),
                                              ("2014-06-01", False)])
def test_stated_acquisition_is_checked_against_the_file(tmp_path: Path, acquired: str,
                                                        ok: bool) -> None:
    reader = FileFacts({str(tmp_path / "img1.tif"): GIZA})
    doc = _by_uri([{"uri": "img1.tif", "acquired": acquired}])
    if ok:
        assert parse_campaign(doc, "c.yaml", tmp_path, reader=reader).scenes[0].acquired == \
            acquired
    else:
        with pytest.raises(CampaignError, match=r"acquired = '2014-06-01' but .* was acquired "
                                                r"at '2013-02-08T08:36:09\+00:00'"):
            parse_campaign(doc, "c.yaml", tmp_path, reader=reader)


# ---------------------------------------------------------------- any document
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.text(max_size=12), st.sampled_from(["a", "b", "ortho", "dsm", "s3://x"]))
_KEYS = st.sampled_from(["name", "inputs", "products", "scenes", "pairs", "survey", "stac",
                         "uri", "id", "footprint", "rows", "cols", "gsd_m", "ortho", "dsm",
                         "tiling", "tile_px", "deadline_h", "budget_usd", "compute", "data",
                         "regions", "bbox", "asset", "href", "acquired", "x"])
_DOCS = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(_KEYS, inner, max_size=6)), max_leaves=40)


_NUMBER = st.one_of(st.integers(), st.floats(), st.sampled_from([10**400, -(10**400), 10**12]))
_SCENE = st.fixed_dictionaries({}, optional={
    "id": _LEAVES, "uri": st.one_of(_LEAVES, st.just("img.tif")),
    "footprint": st.one_of(_LEAVES, st.lists(_NUMBER, max_size=5)),
    "rows": _NUMBER, "cols": _NUMBER, "acquired": _LEAVES, "sensor": _LEAVES})
_INPUTS = st.fixed_dictionaries({}, optional={
    "scenes": st.one_of(_LEAVES, st.lists(st.one_of(_SCENE, _LEAVES), max_size=4)),
    "pairs": st.one_of(_DOCS, st.lists(st.lists(st.sampled_from(["a", "img", "b"]),
                                                max_size=3), max_size=3)),
    "survey": st.fixed_dictionaries({}, optional={
        "pairs": _NUMBER, "bbox": st.lists(_NUMBER, max_size=5), "scene_km": _NUMBER,
        "seed": _NUMBER}),
    "stac": _DOCS})
_PRODUCTS = st.dictionaries(st.sampled_from(["ortho", "dsm", "orto"]),
                            st.one_of(_LEAVES, st.fixed_dictionaries({"gsd_m": _NUMBER})),
                            max_size=2)


@settings(max_examples=300)
@given(doc=st.one_of(_DOCS, st.fixed_dictionaries(
    {"name": _LEAVES, "inputs": st.one_of(_INPUTS, _DOCS), "products": _PRODUCTS},
    optional={"tiling": st.dictionaries(st.sampled_from(["tile_px", "margin_px"]), _NUMBER),
              "deadline_h": _NUMBER, "budget_usd": _NUMBER, "compute": _DOCS,
              "data": _DOCS})))
def test_any_document_is_a_campaign_or_a_campaign_error(doc: object) -> None:
    """Whatever the structure, parsing ends in a Campaign or one CampaignError, nothing else."""
    try:
        parse_campaign(doc, "c.yaml", reader=FileFacts({}))
    except CampaignError as exc:
        assert str(exc).startswith("c.yaml: ") and len(str(exc)) < 5000
