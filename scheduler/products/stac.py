"""STAC beside products: one item per COG, and the campaign's Collection that lists them.

Items (STAC 1.1.0, projection v2.0.0 and raster v1.1.0 extensions):

* geometry and bbox: the product footprint in WGS84 (the geobox outline
  transformed with pyproj), its outer ring counter-clockwise (RFC 7946);
* ``proj:code`` when the product's CRS has one (an ortho's ``EPSG:32631``),
  else ``proj:code: null`` and ``proj:wkt2`` (a DSM's UTM + ellipsoidal
  height, or UTM + EGM96 height); ``proj:shape``, ``proj:transform``,
  ``proj:bbox`` describe the grid exactly;
* the ``data`` asset's ``bands`` (name, description) and ``raster:bands``
  (data type, nodata, resolution, unit: ``m`` for heights);
* ``datetime`` is the acquisition of the inputs (``start_datetime`` /
  ``end_datetime`` when they span time, a stereo pair's two views); a product
  whose inputs state no time is dated when it was planned, and says so in
  ``eochain:datetime_source``;
* ``eochain:*`` properties: product key, operation, checksum and the
  provenance of :mod:`scheduler.products.provenance`, summed up in the
  processing extension (v1.2.0: ``processing:software``, ``:lineage``,
  ``:datetime``, when the product was planned);
* links: ``self`` (its URI in the store) and ``root``/``parent``/
  ``collection``, relative, to the store's ``collection.json``.

An item is published next to its product (``ortho/s1.tif`` ->
``ortho/s1.json``) through the same atomic store write, before the
manifest record that marks the product done.

The Collection (``collection.json`` at the store's root, id = the
destination's last path part) is written by the driver: rebuilt from the
manifest's records when a run starts (so products of earlier or interrupted
runs are listed), then rewritten, atomically through the same
:class:`~scheduler.products.store.ObjectStore` (local or S3), as products are
recorded (at most every ``PUBLISH_INTERVAL_S``) and when the run ends. Its extent is the union of its items' bboxes and time
spans; it links every item.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pystac
from pyproj import CRS
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from ops.raster.crs import lonlat_transformer
from planner.geometry.grid import GeoBox
from scheduler.products.errors import ManifestError
from scheduler.products.manifest import MANIFEST_DIR, ProductRecord
from scheduler.products.provenance import ProductMetadata, plain_metadata, processing_time
from scheduler.products.store import ObjectStore

COLLECTION_KEY = "collection.json"
#: Shortest time between two rewrites of the collection while a run adds products.
PUBLISH_INTERVAL_S = 10.0
GEOJSON = "application/geo+json"
STAC_JSON = "application/json"
PROCESSING_EXTENSION = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"


def stac_key(object_key: str) -> str:
    """Key of the item beside a product key (extension replaced by ``.json``)."""
    stem, dot, _ = object_key.rpartition(".")
    return (stem if dot else object_key) + ".json"


def collection_id(store: ObjectStore) -> str:
    """The collection's id: the destination's last path part (``s3://b/campaign`` -> ``campaign``)."""
    parent = posixpath.dirname(store.uri(COLLECTION_KEY).rstrip("/"))
    return posixpath.basename(parent.rstrip("/")) or "eochain"


@dataclass(frozen=True, slots=True)
class ItemLinks:
    """An item's place: its own URI, its collection's id and the collection's relative href."""

    self_href: str
    collection: str
    collection_href: str


def _signed_area(ring: list[tuple[float, float]]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in pairwise(ring))


def footprint_lonlat(geobox: GeoBox) -> list[tuple[float, float]]:
    """The geobox outline (corners and edge midpoints) in lon/lat: a closed, counter-clockwise ring."""
    left, bottom, right, top = geobox.bounds
    xs = [left, (left + right) / 2, right, right, right, (left + right) / 2, left, left]
    ys = [top, top, top, (top + bottom) / 2, bottom, bottom, bottom, (top + bottom) / 2]
    to_ll = lonlat_transformer(geobox.crs)
    lon, lat = to_ll.transform(xs, ys)
    ring = [(float(x), float(y)) for x, y in zip(lon, lat, strict=True)]
    ring.append(ring[0])
    return ring if _signed_area(ring) > 0 else ring[::-1]


def _crs_fields(crs: str) -> tuple[str | None, str | None]:
    """(``proj:code``, ``proj:wkt2``): the code when the CRS has one, else the WKT2."""
    parsed = CRS.from_user_input(crs)
    authority = parsed.to_authority(min_confidence=100)
    if authority is not None:
        return f"{authority[0]}:{authority[1]}", None
    return None, str(parsed.to_wkt())


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def make_item(
    item_id: str,
    href: str,
    geobox: GeoBox,
    *,
    dtype: str,
    nodata: float | None,
    meta: ProductMetadata | None = None,
    band_names: Sequence[str] = (),
    datetime: dt.datetime | None = None,
    links: ItemLinks | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A STAC item (as a dict) for the COG at ``href`` on ``geobox``, stating ``meta``.

    Without ``meta``, the product states its geobox's CRS and ``band_names`` (or
    ``band1``), no unit, no provenance. ``datetime`` dates a product whose inputs
    state no acquisition time (default: now).
    """
    if meta is None:
        meta = plain_metadata(geobox.crs, tuple(band_names) or ("band1",))
    planned_at = datetime or processing_time()
    ring = footprint_lonlat(geobox)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    props: dict[str, Any] = dict(properties or {})
    props.update(meta.stac_properties())
    provenance = meta.provenance
    if provenance:
        props["processing:software"] = {"eochain": provenance["version"]}
        props["processing:datetime"] = _iso(planned_at)
        props["processing:lineage"] = (
            f"eochain {provenance['op']} of {', '.join(provenance['inputs'])} "
            f"(RPC: {', '.join(provenance['rpc'])}; DEM: {provenance['dem']}"
            + (f"; geoid: {provenance['geoid']}" if provenance.get("geoid") else "")
            + (f"; initial heights: {provenance['initial_heights']}"
               if provenance.get("initial_heights") else "")
            + (f"; heights above the {provenance['heights']}" if provenance.get("heights") else "")
            + ")")
    acquired = meta.acquired
    if acquired is None:
        when: dt.datetime = planned_at
        props["eochain:datetime_source"] = "processing"
    else:
        when = acquired.start
        props["eochain:datetime_source"] = "acquisition"
        if acquired.end > acquired.start:
            props["start_datetime"] = _iso(acquired.start)
            props["end_datetime"] = _iso(acquired.end)
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=when,
        properties=props,
        collection=None if links is None else links.collection,
    )
    code, wkt2 = _crs_fields(meta.crs)
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = code
    if wkt2 is not None:
        proj.wkt2 = wkt2
    proj.shape = [geobox.height, geobox.width]
    proj.transform = [float(v) for v in geobox.transform]
    proj.bbox = [float(v) for v in geobox.bounds]
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset("data", asset)
    raster = RasterExtension.ext(asset, add_if_missing=True)
    bands = []
    for unit in meta.stac_units():
        band = RasterBand.create(nodata=nodata, data_type=DataType(dtype),
                                 spatial_resolution=abs(float(geobox.transform[0])))
        if unit:
            band.unit = unit
        bands.append(band)
    raster.bands = bands
    doc: dict[str, Any] = item.to_dict(include_self_link=False)
    if provenance:
        doc["stac_extensions"].append(PROCESSING_EXTENSION)
    doc["assets"]["data"]["bands"] = [
        {"name": name, **({"description": text} if text else {})}
        for name, text in zip(meta.band_names, meta.band_descriptions, strict=True)
    ]
    if nodata is not None and math.isnan(nodata):
        for band in doc["assets"]["data"]["raster:bands"]:
            band["nodata"] = "nan"  # the raster extension's spelling; JSON has no NaN
    doc["links"] = [] if links is None else [
        {"rel": "self", "href": links.self_href, "type": GEOJSON},
        *({"rel": rel, "href": links.collection_href, "type": STAC_JSON}
          for rel in ("root", "parent", "collection")),
    ]
    return doc


def item_bytes(item: Mapping[str, Any]) -> bytes:
    return json.dumps(item, sort_keys=True, indent=1).encode()


def item_links(store: ObjectStore, object_key: str) -> ItemLinks:
    """The links of the item of the product at ``object_key`` of ``store``."""
    item_key = stac_key(object_key)
    depth = item_key.count("/")
    return ItemLinks(store.uri(item_key), collection_id(store),
                     "../" * depth + COLLECTION_KEY if depth else "./" + COLLECTION_KEY)


@dataclass(frozen=True, slots=True)
class ItemExtent:
    """What the collection needs of an item: its bbox and time span."""

    bbox: tuple[float, float, float, float]
    start: dt.datetime
    end: dt.datetime

    @classmethod
    def of(cls, item: Mapping[str, Any], where: str) -> ItemExtent:
        try:
            props = item["properties"]
            start = props.get("start_datetime") or props["datetime"]
            end = props.get("end_datetime") or props["datetime"]
            x0, y0, x1, y1 = (float(v) for v in item["bbox"])
            return cls((x0, y0, x1, y1), dt.datetime.fromisoformat(start),
                       dt.datetime.fromisoformat(end))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"{where}: not a STAC item with bbox and datetime ({type(exc).__name__}: {exc})"
            ) from exc


class CampaignCollection:
    """The store's ``collection.json``: every recorded product's item, kept up to date.

    The document grows with the campaign (about 100 bytes an item), so while a
    run adds products it is rewritten at most every ``min_interval_s``; the run
    calls :meth:`publish` once more at its end.
    """

    def __init__(self, store: ObjectStore, min_interval_s: float = 0.0) -> None:
        self.store = store
        self.id = collection_id(store)
        self.min_interval_s = min_interval_s
        self.items: dict[str, ItemExtent] = {}
        self._published: bytes | None = None
        self._published_at = -math.inf

    @classmethod
    def load(
        cls, store: ObjectStore, min_interval_s: float = PUBLISH_INTERVAL_S,
    ) -> CampaignCollection:
        """The collection of the products the manifest records; published if it changed."""
        coll = cls(store, min_interval_s)
        if store.exists(COLLECTION_KEY):
            coll._published = store.get_bytes(COLLECTION_KEY)
        present = set(store.list_keys())
        for rk in store.list_keys(MANIFEST_DIR + "/"):
            rec = ProductRecord.from_json(store.get_bytes(rk), store.uri(rk))
            if rec.stac_key and rec.stac_key in present and rec.object_key in present:
                try:
                    coll._read(rec.stac_key)
                except ManifestError:
                    continue  # left out until the run that verifies its product rewrites it
        coll.publish()
        return coll

    def _read(self, item_key: str) -> None:
        where = self.store.uri(item_key)
        try:
            item = json.loads(self.store.get_bytes(item_key))
        except ValueError as exc:
            raise ManifestError(f"{where}: not JSON ({exc}); expected a STAC item") from exc
        self.items[item_key] = ItemExtent.of(item, where)

    def add(self, record: ProductRecord) -> None:
        """List the recorded product's item; republish unless the last write is too recent."""
        if record.stac_key:
            self._read(record.stac_key)
            if time.monotonic() - self._published_at >= self.min_interval_s:
                self.publish()

    def document(self) -> dict[str, Any]:
        extents = list(self.items.values())
        bbox = [min(e.bbox[0] for e in extents), min(e.bbox[1] for e in extents),
                max(e.bbox[2] for e in extents), max(e.bbox[3] for e in extents)]
        interval = [_iso(min(e.start for e in extents)), _iso(max(e.end for e in extents))]
        self_href = self.store.uri(COLLECTION_KEY)
        links = [{"rel": "root", "href": self_href, "type": STAC_JSON},
                 {"rel": "self", "href": self_href, "type": STAC_JSON}]
        links += [{"rel": "item", "href": "./" + key, "type": GEOJSON} for key in sorted(self.items)]
        return {
            "type": "Collection",
            "stac_version": pystac.get_stac_version(),
            "stac_extensions": [],
            "id": self.id,
            "description": f"eochain products of the campaign written to {posixpath.dirname(self_href)}",
            "license": "other",
            "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [interval]}},
            "links": links,
        }

    def _merge_published(self) -> None:
        """Take in the items another driver on the same store has listed meanwhile."""
        if not self.store.exists(COLLECTION_KEY):
            return
        current = self.store.get_bytes(COLLECTION_KEY)
        if current == self._published:
            return
        try:
            links = json.loads(current).get("links", [])
        except (ValueError, AttributeError):
            return  # not ours to repair: rewritten whole below
        for link in links:
            href = link.get("href", "") if isinstance(link, dict) else ""
            key = href.removeprefix("./")
            if link.get("rel") == "item" and key not in self.items and self.store.exists(key):
                try:
                    self._read(key)
                except ManifestError:
                    continue

    def publish(self) -> None:
        """Write the collection atomically when it lists anything and differs from the last.

        Drivers sharing a store each keep one: what another listed since this one last
        wrote is merged in first, so concurrent runs do not drop each other's items.
        """
        self._merge_published()
        if not self.items:
            return
        data = item_bytes(self.document())
        if data != self._published:
            self.store.put_bytes(COLLECTION_KEY, data)
            self._published = data
        self._published_at = time.monotonic()
