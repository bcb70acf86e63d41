"""A real small campaign's catalog: its items and collection validate and say what the products are.

A synthetic stereo pair is tagged with acquisition times the way real
products carry them (DIMAP ``IMAGING_DATE``/``IMAGING_TIME`` in the TIFF, an
OSSIM ``.geom``'s time range), then the flow writes a DSM of the pair and an
ortho of each view (in-process executor: the same product code as a Ray
run). Then:

* every item and the campaign collection pass offline STAC validation;
* items are dated by their inputs' acquisition (the DSM: start and end over
  both views), their rings are counter-clockwise, their links resolve to
  the collection, which lists every item and spans their extent;
* the DSM file and its item state the heights' 3D CRS, metres and provenance;
* ``eochain dsm --heights ellipsoid`` and ``--heights geoid`` files differ in
  their vertical CRS (geoid: compound with EGM96 height in the GeoTIFF keys);
* written to ``s3://`` (moto's server), the collection goes through the same
  store, atomically, and links items by their ``s3://`` URIs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import rasterio
from click.testing import CliRunner
from pyproj import CRS

from scheduler.cli.demo_campaign import write_coarse_dem
from scheduler.products.driver import Driver
from scheduler.products.flow import FlowReport, SceneInput
from scheduler.products.store import S3Store, open_store
from tests.conftest import aws_environment
from tests.stac_validation import validate_stac

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "eochain-catalog"
LEFT_TIME = "2024-06-01T10:30:00.5Z"
RIGHT_START, RIGHT_END = "2024-06-01T10:30:40.25Z", "2024-06-01T10:30:43.75Z"


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ops.synthetic.scene import SceneSpec, generate_scene

    root = tmp_path_factory.mktemp("stac") / "scene"
    generate_scene(SceneSpec(width=256, height=256, seed=1), root)
    with rasterio.open(root / "view_0.tif", "r+") as dst:
        date, time = LEFT_TIME.split("T")
        dst.update_tags(IMAGING_DATE=date, IMAGING_TIME=time)
    geom = root / "view_1.geom"
    if geom.is_file():
        text = geom.read_text()
    else:  # the RPC is in the TIFF: a .geom holding only the times is still read for them
        text = ""
    geom.write_text(text + f"support_data.time_range_start:  {RIGHT_START}\n"
                           f"support_data.time_range_end:  {RIGHT_END}\n")
    write_coarse_dem(root, root / "coarse_dem.tif")
    return root


def _run(scene: Path, out: Path) -> FlowReport:
    views = [SceneInput("left", str(scene / "view_0.tif")),
             SceneInput("right", str(scene / "view_1.tif"))]
    return (Driver(address="serial").get_flow(views)
            .dsm([("left", "right")], dem=scene / "coarse_dem.tif", tile_px=128)
            .ortho(dem=scene / "dem.tif", tile_px=128)
            .write(out).run())


@pytest.fixture(scope="module")
def campaign(scene: Path) -> tuple[Path, FlowReport]:
    out = scene.parent / "campaign"
    report = _run(scene, out)
    assert report.ok, report.failures
    return out, report


def _json(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def _signed_area(ring: list[list[float]]) -> float:
    return 0.5 * sum(a[0] * b[1] - b[0] * a[1] for a, b in pairwise(ring))


def test_items_validate_link_the_collection_and_are_dated_by_acquisition(
    campaign: tuple[Path, FlowReport],
) -> None:
    out, report = campaign
    assert sorted(r.object_key for r in report.written) == [
        "dsm/left+right.tif", "ortho/left.tif", "ortho/right.tif"]
    collection_path = out / "collection.json"
    for record in report.written:
        path = out / record.stac_key
        item = _json(path)
        validate_stac(item)
        assert item["collection"] == "campaign"
        links = {link["rel"]: link["href"] for link in item["links"]}
        assert links["self"] == str(path)
        for rel in ("root", "parent", "collection"):
            assert (path.parent / links[rel]).resolve() == collection_path.resolve()
        assert _signed_area(item["geometry"]["coordinates"][0]) > 0
        assert item["properties"]["eochain:datetime_source"] == "acquisition"
        assert item["properties"]["eochain:version"]

    left = _json(out / "ortho" / "left.json")["properties"]
    assert _utc(left["datetime"]) == _utc(LEFT_TIME)
    right = _json(out / "ortho" / "right.json")["properties"]
    assert (_utc(right["start_datetime"]), _utc(right["end_datetime"])) == (
        _utc(RIGHT_START), _utc(RIGHT_END))
    pair = _json(out / "dsm" / "left+right.json")["properties"]
    assert _utc(pair["datetime"]) == _utc(LEFT_TIME)
    assert (_utc(pair["start_datetime"]), _utc(pair["end_datetime"])) == (
        _utc(LEFT_TIME), _utc(RIGHT_END))


def test_collection_lists_every_item_and_spans_them(campaign: tuple[Path, FlowReport]) -> None:
    out, report = campaign
    doc = _json(out / "collection.json")
    validate_stac(doc)
    assert doc["id"] == "campaign"
    assert sorted(link["href"] for link in doc["links"] if link["rel"] == "item") == sorted(
        f"./{r.stac_key}" for r in report.written)
    start, end = doc["extent"]["temporal"]["interval"][0]
    assert (_utc(start), _utc(end)) == (_utc(LEFT_TIME), _utc(RIGHT_END))
    x0, y0, x1, y1 = doc["extent"]["spatial"]["bbox"][0]
    for record in report.written:
        a, b, c, d = _json(out / record.stac_key)["bbox"]
        assert x0 <= a and y0 <= b and c <= x1 and d <= y1


def test_dsm_states_its_heights_units_and_provenance(
    campaign: tuple[Path, FlowReport], scene: Path,
) -> None:
    out, _ = campaign
    with rasterio.open(out / "dsm" / "left+right.tif") as src:
        tags, units = src.tags(), src.units
    stated = CRS.from_wkt(tags["EOCHAIN_CRS"])
    assert [a.name for a in stated.axis_info][2] == "Ellipsoidal height"
    assert units[0] == "metre"
    assert tags["EOCHAIN_HEIGHTS"] == "ellipsoid" and tags["EOCHAIN_OP"] == "dsm"
    assert json.loads(tags["EOCHAIN_INPUTS"]) == [str(scene / "view_0.tif"),
                                                  str(scene / "view_1.tif")]
    assert tags["EOCHAIN_DEM"] == str(scene / "coarse_dem.tif")
    assert tags["EOCHAIN_INITIAL_HEIGHTS"] == "DEM"  # (without one: the images' surface)
    assert len(json.loads(tags["EOCHAIN_RPC"])) == 2
    assert json.loads(tags["EOCHAIN_PARAMETERS"])["tile_px"] == 128
    item = _json(out / "dsm" / "left+right.json")
    assert item["properties"]["proj:code"] is None
    assert CRS.from_wkt(item["properties"]["proj:wkt2"]) == stated
    assert item["assets"]["data"]["raster:bands"][0]["unit"] == "m"
    assert item["properties"]["eochain:inputs"] == json.loads(tags["EOCHAIN_INPUTS"])
    assert item["properties"]["eochain:initial_heights"] == "DEM"


def test_rerun_keeps_the_collection(campaign: tuple[Path, FlowReport], scene: Path) -> None:
    out, _ = campaign
    before = (out / "collection.json").read_bytes()
    again = _run(scene, out)
    assert again.ok and not again.written
    assert (out / "collection.json").read_bytes() == before


def test_dsm_cli_ellipsoid_and_geoid_outputs_differ_in_vertical_crs(
    scene: Path, shared_data: Path, tmp_path: Path,
) -> None:
    from scheduler.cli.dsm import dsm

    geoid = shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    crs: dict[str, CRS] = {}
    for heights in ("ellipsoid", "geoid"):
        out = tmp_path / f"{heights}.tif"
        result = CliRunner().invoke(dsm, [
            str(scene / "view_0.tif"), str(scene / "view_1.tif"),
            "--dem", str(scene / "coarse_dem.tif"), "--geoid", str(geoid),
            "--heights", heights, "--tile-size", "128", "-o", str(out), "-q"])
        assert result.exit_code == 0, result.output
        with rasterio.open(out) as src:
            assert src.units[0] == "metre"
            assert src.tags()["EOCHAIN_HEIGHTS"] == heights
            assert src.tags()["EOCHAIN_GEOID"] == str(geoid.resolve())
            crs[heights] = CRS.from_wkt(src.tags()["EOCHAIN_CRS"])
            if heights == "geoid":  # the GeoTIFF keys themselves hold the compound CRS
                assert CRS.from_wkt(src.crs.to_wkt()) == crs[heights]
    assert crs["geoid"].is_compound
    assert crs["geoid"].sub_crs_list[1].to_epsg() == 5773
    assert crs["ellipsoid"].axis_info[2].name == "Ellipsoidal height"
    assert crs["ellipsoid"] != crs["geoid"]


@pytest.fixture
def s3_env(moto_endpoint: str) -> Iterator[str]:
    """The AWS variables pointing at moto's S3 server, and a fresh bucket."""
    with aws_environment(moto_endpoint):
        store = open_store(f"s3://{BUCKET}")
        assert isinstance(store, S3Store)
        store.client.create_bucket(Bucket=BUCKET)
        yield BUCKET


def test_collection_is_kept_on_s3_through_the_store(scene: Path, s3_env: str) -> None:
    views = [SceneInput("left", str(scene / "view_0.tif")),
             SceneInput("right", str(scene / "view_1.tif"))]
    report = (Driver(address="serial").get_flow(views).ortho(dem=scene / "dem.tif", tile_px=128)
              .write(f"s3://{s3_env}/survey").run())
    assert report.ok, report.failures
    store = open_store(f"s3://{s3_env}/survey")
    doc = json.loads(store.get_bytes("collection.json"))
    validate_stac(doc)
    assert doc["id"] == "survey"
    links = {link["rel"]: link["href"] for link in doc["links"]}
    assert links["self"] == f"s3://{s3_env}/survey/collection.json"
    assert sorted(link["href"] for link in doc["links"] if link["rel"] == "item") == [
        "./ortho/left.json", "./ortho/right.json"]
    item = json.loads(store.get_bytes("ortho/left.json"))
    validate_stac(item)
    assert {link["rel"]: link["href"] for link in item["links"]}["self"] == (
        f"s3://{s3_env}/survey/ortho/left.json")
    assert not [k for k in store.list_keys() if "_eochain_tmp" in k]


def test_ortho_cli_records_provenance_and_acquisition(scene: Path, tmp_path: Path) -> None:
    from scheduler.cli.ortho import ortho

    out = tmp_path / "left.tif"
    result = CliRunner().invoke(ortho, [str(scene / "view_0.tif"), "--dem", str(scene / "dem.tif"),
                                        "--tile-size", "128", "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as src:
        tags = src.tags()
    assert tags["EOCHAIN_OP"] == "ortho"
    assert json.loads(tags["EOCHAIN_INPUTS"]) == [str(scene / "view_0.tif")]
    assert tags["EOCHAIN_DEM"] == str(scene / "dem.tif")
    assert json.loads(tags["EOCHAIN_PARAMETERS"])["tile_px"] == 128
    assert _utc(tags["EOCHAIN_ACQUISITION_START"]) == _utc(LEFT_TIME)
