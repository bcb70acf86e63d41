"""Products state what they are: acquisition time, heights' datum, band units, provenance, catalog.

Acquisition spans are read from the places real products put them (DIMAP tags,
OSSIM ``.geom``, DigitalGlobe XML); the DSM's CRS carries its heights
(ellipsoid: projected 3D, geoid: compound with EGM96 height) in the written
file; STAC items and the campaign collection pass offline validation
(pystac's core schemas + ``tests/data/stac_schemas``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import CRS
from pystac.validation.stac_validator import GetSchemaError

from ops.errors import AcquisitionError
from ops.raster.raster_io import CogWriter
from ops.sensor.acquisition import Acquisition, read_acquisition, span
from planner.geometry.grid import GeoBox, Window
from scheduler.products.errors import MetadataError
from scheduler.products.manifest import MANIFEST_DIR, ProductRecord
from scheduler.products.provenance import (
    DIMENSIONLESS,
    METRE,
    ProductMetadata,
    dsm_metadata,
    height_crs,
    ortho_metadata,
)
from scheduler.products.stac import (
    COLLECTION_KEY,
    CampaignCollection,
    footprint_lonlat,
    item_bytes,
    item_links,
    make_item,
)
from scheduler.products.store import LocalStore
from tests.stac_validation import validate_stac

pytestmark = pytest.mark.unit

UTC = dt.UTC
DSM_BANDS = ("height (m)", "points per cell", "matching confidence (NCC)")
GEOBOX = GeoBox.from_bounds("EPSG:32631", 374000, 4828500, 374100, 4828600, 0.5)


def _image(path: Path, **tags: str) -> Path:
    # a sensor crop: no CRS, its origin in the full product as the geotransform's
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint16",
                       transform=rasterio.Affine(1, 0, 20500, 0, 1, 5000)) as dst:
        dst.write(np.ones((1, 8, 8), np.uint16))
        if tags:
            dst.update_tags(**tags)
    return path


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    return 0.5 * sum(a[0] * b[1] - b[0] * a[1] for a, b in pairwise(ring))


#: What a DSM made without a DEM records of its initial heights (``plan_views_dsm_product``).
FLAT_PRIOR = ("from the images, flat at 41.2 m, search 10.9 to 78.5 m: 1514 tie points; flat "
              "kept: terrain tilt 0.003 disparity px per px (< 0.05)")


def _dsm_meta(heights: str, acquired: Acquisition | None = None,
              dem: str | None = "/d/srtm") -> ProductMetadata:
    return dsm_metadata(horizontal_crs="EPSG:32631", heights=heights, band_descriptions=DSM_BANDS,
                        images=["/d/l.tif", "/d/r.tif"], rpc_sources=["/d/l.geom", "/d/r.geom"],
                        dem=dem, geoid="/d/egm96.gtx", acquired=acquired,
                        parameters={"gsd_m": 0.5, "tile_px": 512},
                        initial_heights="DEM" if dem else FLAT_PRIOR)


# -- acquisition -------------------------------------------------------------------------------
def test_acquisition_from_dimap_tags(tmp_path: Path) -> None:
    image = _image(tmp_path / "img.tif", IMAGING_DATE="2013-02-08", IMAGING_TIME="08:36:09.1Z")
    got = read_acquisition(image)
    assert got is not None
    assert got.start == got.end == dt.datetime(2013, 2, 8, 8, 36, 9, 100000, tzinfo=UTC)
    assert "IMAGING_DATE" in got.source


def test_acquisition_from_ossim_geom_time_range(tmp_path: Path) -> None:
    image = _image(tmp_path / "left.tif")
    (tmp_path / "left.geom").write_text(
        "type:  ossimPleiadesModel\n"
        "support_data.image_date:  2013-08-05T10:42:19.4Z\n"
        "support_data.time_range_end:  2013-08-05T10:42:22.5693580Z\n"
        "support_data.time_range_start:  2013-08-05T10:42:19.4970580Z\n")
    got = read_acquisition(image)
    assert got is not None
    assert got.start == dt.datetime(2013, 8, 5, 10, 42, 19, 497058, tzinfo=UTC)
    assert got.end == dt.datetime(2013, 8, 5, 10, 42, 22, 569358, tzinfo=UTC)


def test_acquisition_from_digitalglobe_xml(tmp_path: Path) -> None:
    image = _image(tmp_path / "wv.tif")
    (tmp_path / "wv.XML").write_text(
        "<isd><IMD><IMAGE><FIRSTLINETIME>2015-09-30T10:56:56.973685Z</FIRSTLINETIME>"
        "<EARLIESTACQTIME>2015-09-30T10:56:57.204388Z</EARLIESTACQTIME>"
        "<LATESTACQTIME>2015-09-30T10:56:58.5Z</LATESTACQTIME></IMAGE></IMD></isd>")
    got = read_acquisition(image)
    assert got is not None
    assert got.start == dt.datetime(2015, 9, 30, 10, 56, 57, 204388, tzinfo=UTC)
    assert got.end == dt.datetime(2015, 9, 30, 10, 56, 58, 500000, tzinfo=UTC)


def test_acquisition_unknown_is_none_and_a_bad_value_names_file_and_key(tmp_path: Path) -> None:
    assert read_acquisition(_image(tmp_path / "plain.tif")) is None
    bad = _image(tmp_path / "bad.tif", IMAGING_DATE="8 Feb 2013")
    with pytest.raises(AcquisitionError, match=r"bad\.tif: tag IMAGING_DATE = '8 Feb 2013'"):
        read_acquisition(bad)


def test_real_products_state_their_acquisition(shared_data: Path) -> None:
    gizeh = read_acquisition(shared_data / "gizeh" / "img1.tif")  # DIMAP tags in the TIFF
    ventoux = read_acquisition(shared_data / "ventoux" / "left_image.tif")  # .geom sidecar
    assert gizeh is not None and gizeh.start.date() == dt.date(2013, 2, 8)
    assert ventoux is not None and ventoux.start.date() == dt.date(2013, 8, 5)
    assert ventoux.end > ventoux.start


def test_span_of_a_pair_covers_both_views_and_is_unknown_if_one_is() -> None:
    t = dt.datetime(2013, 8, 5, 10, 42, 19, tzinfo=UTC)
    left = Acquisition(t, t + dt.timedelta(seconds=3), "l")
    right = Acquisition(t + dt.timedelta(seconds=33), t + dt.timedelta(seconds=36), "r")
    both = span([right, left])
    assert both is not None
    assert (both.start, both.end) == (left.start, right.end)
    assert span([left, None]) is None


# -- CRS, units, provenance --------------------------------------------------------------------
def test_height_crs_ellipsoid_is_projected_3d_and_geoid_is_compound_egm96() -> None:
    ell = CRS.from_wkt(height_crs("EPSG:32631", "ellipsoid"))
    geo = CRS.from_wkt(height_crs("EPSG:32631", "geoid"))
    assert not ell.is_compound and len(ell.axis_info) == 3
    assert ell.axis_info[2].name == "Ellipsoidal height" and ell.axis_info[2].unit_name == "metre"
    assert geo.is_compound
    horizontal, vertical = geo.sub_crs_list
    assert horizontal.to_epsg() == 32631 and vertical.to_epsg() == 5773
    assert vertical.axis_info[0].unit_name == "metre"


def test_height_crs_refuses_what_it_cannot_state() -> None:
    with pytest.raises(MetadataError, match="heights = 'msl'"):
        height_crs("EPSG:32631", "msl")
    with pytest.raises(MetadataError, match="Clarke 1880"):
        height_crs("EPSG:22391", "ellipsoid")  # Carthage / Nord Tunisie: not WGS 84
    with pytest.raises(MetadataError, match="not a horizontal CRS"):
        height_crs("EPSG:5773", "geoid")
    lambert93 = CRS.from_wkt(height_crs("EPSG:2154", "ellipsoid"))  # on GRS 1980: accepted
    assert lambert93.axis_info[2].name == "Ellipsoidal height"


def test_dsm_metadata_states_units_crs_and_provenance_as_tags() -> None:
    t = dt.datetime(2013, 8, 5, 10, 42, 19, tzinfo=UTC)
    meta = _dsm_meta("ellipsoid", Acquisition(t, t + dt.timedelta(seconds=36), "x"))
    assert meta.band_units == (METRE, DIMENSIONLESS, DIMENSIONLESS)
    assert meta.band_names == ("height", "points_per_cell", "matching_confidence")
    assert meta.file_crs == "EPSG:32631"  # GeoTIFF keys cannot hold a projected 3D CRS
    tags = meta.tags()
    assert CRS.from_wkt(tags["EOCHAIN_CRS"]).axis_info[2].name == "Ellipsoidal height"
    assert tags["EOCHAIN_HEIGHTS"] == "ellipsoid" and tags["EOCHAIN_OP"] == "dsm"
    assert json.loads(tags["EOCHAIN_INPUTS"]) == ["/d/l.tif", "/d/r.tif"]
    assert json.loads(tags["EOCHAIN_RPC"]) == ["/d/l.geom", "/d/r.geom"]
    assert tags["EOCHAIN_DEM"] == "/d/srtm" and tags["EOCHAIN_GEOID"] == "/d/egm96.gtx"
    assert tags["EOCHAIN_INITIAL_HEIGHTS"] == "DEM"
    assert json.loads(tags["EOCHAIN_PARAMETERS"]) == {"gsd_m": 0.5, "tile_px": 512}
    # without a DEM: no DEM named, the images' surface and why it was kept
    no_dem = _dsm_meta("ellipsoid", dem=None).tags()
    assert "EOCHAIN_DEM" not in no_dem and no_dem["EOCHAIN_INITIAL_HEIGHTS"] == FLAT_PRIOR
    assert tags["EOCHAIN_VERSION"]
    assert tags["EOCHAIN_ACQUISITION_START"] == "2013-08-05T10:42:19+00:00"
    assert _dsm_meta("geoid").file_crs == _dsm_meta("geoid").crs


@pytest.mark.parametrize("heights", ["ellipsoid", "geoid"])
def test_cog_states_heights_datum_units_and_tags(tmp_path: Path, heights: str) -> None:
    meta = _dsm_meta(heights)
    dest = tmp_path / f"{heights}.tif"
    with CogWriter(dest, GEOBOX, count=3, dtype="float32", nodata=-32768.0,
                   descriptions=DSM_BANDS, crs=meta.file_crs, units=meta.band_units,
                   tags=meta.tags()) as out:
        out.write(Window(0, 0, GEOBOX.height, GEOBOX.width),
                  np.zeros((3, GEOBOX.height, GEOBOX.width), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == [dest.name]  # no .aux.xml sidecar
    with rasterio.open(dest) as src:
        assert src.units == ("metre", "1", "1")
        assert src.descriptions == DSM_BANDS
        file_crs = CRS.from_wkt(src.crs.to_wkt())
        stated = CRS.from_wkt(src.tags()["EOCHAIN_CRS"])
        assert src.tags()["EOCHAIN_HEIGHTS"] == heights
    assert stated == CRS.from_wkt(meta.crs)
    if heights == "geoid":
        assert file_crs.is_compound and file_crs.sub_crs_list[1].to_epsg() == 5773
    else:
        assert file_crs.to_epsg() == 32631
        assert stated.axis_info[2].name == "Ellipsoidal height"


# -- items ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("crs", ["EPSG:32631", "EPSG:32731", "EPSG:3857"])
def test_footprint_ring_is_counter_clockwise(crs: str) -> None:
    geobox = GeoBox.from_bounds(crs, 374000, 4828500, 374100, 4828600, 0.5) if crs != "EPSG:3857" \
        else GeoBox.from_bounds(crs, 160000, 5400000, 160100, 5400100, 0.5)
    ring = footprint_lonlat(geobox)
    assert ring[0] == ring[-1] and len(ring) == 9
    assert _signed_area(ring) > 0


def test_ortho_item_states_acquisition_bands_projection_and_links() -> None:
    t = dt.datetime(2013, 2, 8, 8, 36, 9, 100000, tzinfo=UTC)
    meta = ortho_metadata(crs="EPSG:32631", band_descriptions=(None,), image="/d/img1.tif",
                          rpc_source="/d/img1.geom", dem="/d/srtm", geoid=None,
                          acquired=Acquisition(t, t, "x"), parameters={"gsd_m": 0.5})
    store = LocalStore("/data/campaign")
    item = make_item("img1", "img1.tif", GEOBOX, dtype="uint16", nodata=0, meta=meta,
                     links=item_links(store, "ortho/img1.tif"))
    validate_stac(item)
    props = item["properties"]
    assert props["datetime"] == "2013-02-08T08:36:09.100000Z"
    assert "start_datetime" not in props and props["eochain:datetime_source"] == "acquisition"
    assert props["proj:code"] == "EPSG:32631" and "proj:wkt2" not in props
    assert props["eochain:inputs"] == ["/d/img1.tif"] and props["eochain:rpc"] == ["/d/img1.geom"]
    assert item["collection"] == "campaign"
    assert item["assets"]["data"]["bands"] == [{"name": "band1"}]
    assert _signed_area(item["geometry"]["coordinates"][0]) > 0
    links = {link["rel"]: link["href"] for link in item["links"]}
    assert links == {"self": "/data/campaign/ortho/img1.json", "root": "../collection.json",
                     "parent": "../collection.json", "collection": "../collection.json"}
    ext = {e.rsplit("/", 3)[-3] + "/" + e.rsplit("/", 3)[-2] for e in item["stac_extensions"]}
    assert ext == {"projection/v2.0.0", "raster/v1.1.0", "processing/v1.2.0"}
    assert props["processing:software"] == {"eochain": props["eochain:version"]}
    assert "/d/img1.tif" in props["processing:lineage"] and "/d/srtm" in props["processing:lineage"]


@pytest.mark.parametrize("heights", ["ellipsoid", "geoid"])
def test_dsm_item_states_its_3d_crs_span_and_height_unit(heights: str) -> None:
    t = dt.datetime(2013, 8, 5, 10, 42, 19, tzinfo=UTC)
    acquired = Acquisition(t, t + dt.timedelta(seconds=36), "x")
    item = make_item("l+r", "l+r.tif", GEOBOX, dtype="float32", nodata=-32768.0,
                     meta=_dsm_meta(heights, acquired))
    validate_stac(item)
    props = item["properties"]
    assert props["datetime"] == "2013-08-05T10:42:19Z"
    assert (props["start_datetime"], props["end_datetime"]) == (
        "2013-08-05T10:42:19Z", "2013-08-05T10:42:55Z")
    assert props["proj:code"] is None
    crs = CRS.from_wkt(props["proj:wkt2"])
    assert len(crs.axis_info) == 3 and crs.is_compound == (heights == "geoid")
    assert props["eochain:heights"] == heights
    bands = item["assets"]["data"]["raster:bands"]
    assert [b.get("unit") for b in bands] == ["m", "1", "1"]
    assert [b["name"] for b in item["assets"]["data"]["bands"]] == [
        "height", "points_per_cell", "matching_confidence"]
    assert props["eochain:initial_heights"] == "DEM"

    no_dem = make_item("l+r", "l+r.tif", GEOBOX, dtype="float32", nodata=-32768.0,
                       meta=_dsm_meta(heights, acquired, dem=None))
    validate_stac(no_dem)
    props = no_dem["properties"]
    assert "eochain:dem" not in props and props["eochain:initial_heights"] == FLAT_PRIOR
    assert "DEM: None; " in props["processing:lineage"]
    assert f"initial heights: {FLAT_PRIOR}" in props["processing:lineage"]


def test_item_without_acquisition_is_dated_by_processing_and_says_so() -> None:
    planned = dt.datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
    item = make_item("a", "a.tif", GEOBOX, dtype="float32", nodata=float("nan"),
                     datetime=planned)
    validate_stac(item)
    assert item["properties"]["datetime"] == "2026-12-05T01:00:00Z"
    assert item["properties"]["eochain:datetime_source"] == "processing"
    assert item["assets"]["data"]["raster:bands"][0]["nodata"] == "nan"
    assert not [k for k in item["properties"] if k.startswith("processing:")]  # no provenance


# -- collection ----------------------------------------------------------------------------------
def _publish(store: LocalStore, name: str, start: dt.datetime, x0: float) -> ProductRecord:
    geobox = GeoBox.from_bounds("EPSG:32631", x0, 4828500, x0 + 100, 4828600, 0.5)
    meta = ortho_metadata(crs="EPSG:32631", band_descriptions=("pan",), image=f"/d/{name}.tif",
                          rpc_source=f"/d/{name}.geom", dem=None, geoid=None,
                          acquired=Acquisition(start, start, "x"), parameters={})
    object_key = f"ortho/{name}.tif"
    store.put_bytes(object_key, b"cog")
    item = make_item(name, f"{name}.tif", geobox, dtype="uint16", nodata=0, meta=meta,
                     links=item_links(store, object_key))
    store.put_bytes(f"ortho/{name}.json", item_bytes(item))
    record = ProductRecord(f"key-{name}", object_key, store.uri(object_key), "ortho", name,
                           "0" * 64, 3, f"ortho/{name}.json")
    store.put_bytes(f"{MANIFEST_DIR}/key-{name}.json", record.to_json())
    return record


def test_collection_lists_recorded_items_with_their_extent(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "campaign"))
    t0 = dt.datetime(2013, 2, 8, 8, 36, tzinfo=UTC)
    _publish(store, "a", t0, 374000)
    _publish(store, "b", t0 + dt.timedelta(days=2), 380000)
    collection = CampaignCollection.load(store, min_interval_s=0.0)
    doc = json.loads(store.get_bytes(COLLECTION_KEY))
    validate_stac(doc)
    assert doc["id"] == "campaign"
    assert doc["extent"]["temporal"]["interval"] == [["2013-02-08T08:36:00Z",
                                                      "2013-02-10T08:36:00Z"]]
    items = [link["href"] for link in doc["links"] if link["rel"] == "item"]
    assert items == ["./ortho/a.json", "./ortho/b.json"]
    bbox_ab = doc["extent"]["spatial"]["bbox"][0]

    collection.add(_publish(store, "c", t0 - dt.timedelta(days=1), 390000))
    doc = json.loads(store.get_bytes(COLLECTION_KEY))
    validate_stac(doc)
    assert [link["href"] for link in doc["links"] if link["rel"] == "item"][-1] == "./ortho/c.json"
    assert doc["extent"]["temporal"]["interval"][0][0] == "2013-02-07T08:36:00Z"
    assert doc["extent"]["spatial"]["bbox"][0][2] > bbox_ab[2]  # c lies further east
    assert not [p for p in (tmp_path / "campaign").iterdir() if p.name.startswith(".")]


def test_collections_of_two_drivers_keep_each_others_items(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "campaign"))
    t0 = dt.datetime(2013, 2, 8, tzinfo=UTC)
    _publish(store, "a", t0, 374000)
    first = CampaignCollection.load(store, min_interval_s=0.0)
    second = CampaignCollection.load(store, min_interval_s=0.0)
    first.add(_publish(store, "b", t0, 380000))
    second.add(_publish(store, "c", t0, 390000))  # has not seen b: merges it from the store
    doc = json.loads(store.get_bytes(COLLECTION_KEY))
    assert [link["href"] for link in doc["links"] if link["rel"] == "item"] == [
        "./ortho/a.json", "./ortho/b.json", "./ortho/c.json"]


def test_collection_rewrites_are_spaced_while_a_run_adds_products(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "campaign"))
    t0 = dt.datetime(2013, 2, 8, tzinfo=UTC)
    _publish(store, "a", t0, 374000)
    collection = CampaignCollection.load(store, min_interval_s=3600.0)  # loading publishes
    listed = store.get_bytes(COLLECTION_KEY)
    collection.add(_publish(store, "b", t0, 380000))
    assert store.get_bytes(COLLECTION_KEY) == listed  # within the interval: not rewritten
    collection.publish()  # the run's end
    doc = json.loads(store.get_bytes(COLLECTION_KEY))
    assert [link["href"] for link in doc["links"] if link["rel"] == "item"] == [
        "./ortho/a.json", "./ortho/b.json"]


@pytest.mark.parametrize("breakage", ["proj:shape", "raster:nodata", "processing:software",
                                      "ring", "unknown extension"])
def test_offline_validation_catches_a_broken_item(breakage: str) -> None:
    item = make_item("l+r", "l+r.tif", GEOBOX, dtype="float32", nodata=-32768.0,
                     meta=_dsm_meta("geoid"))
    validate_stac(item)
    if breakage == "proj:shape":
        item["properties"]["proj:shape"] = [200]
    elif breakage == "raster:nodata":
        item["assets"]["data"]["raster:bands"][0]["nodata"] = "none"
    elif breakage == "processing:software":
        item["properties"]["processing:software"] = "eochain"
    elif breakage == "ring":
        item["geometry"]["coordinates"][0] = item["geometry"]["coordinates"][0][:3]
    else:
        item["stac_extensions"].append("https://example.invalid/ext/v1.0.0/schema.json")
    # an extension schema we do not hold is an error, never a network fetch
    expected = GetSchemaError if breakage == "unknown extension" else pystac.STACValidationError
    with pytest.raises(expected):
        validate_stac(item)
