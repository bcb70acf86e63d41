"""STAC items beside products: one JSON item per COG, with projection and raster extensions.

The item's geometry and bbox are the product footprint in WGS84 (the
geobox corners transformed with pyproj); ``proj:code``, ``proj:shape`` and
``proj:transform`` describe the grid exactly; the ``data`` asset carries the
``raster:bands`` (data type, nodata, resolution). The item is published next
to its product (``ortho/s1.tif`` -> ``ortho/s1.json``) through the same
atomic store write, before the manifest record that marks the product done.
The datetime is fixed by the caller (the scene's acquisition time), not the
processing time, so reruns produce identical items.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pystac
from pyproj import Transformer
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from planner.grid import GeoBox

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def stac_key(object_key: str) -> str:
    """Key of the item beside a product key (extension replaced by ``.json``)."""
    stem, dot, _ = object_key.rpartition(".")
    return (stem if dot else object_key) + ".json"


def footprint_lonlat(geobox: GeoBox) -> list[tuple[float, float]]:
    """The geobox outline (corners and edge midpoints) in lon/lat, closed ring."""
    left, bottom, right, top = geobox.bounds
    xs = [left, (left + right) / 2, right, right, right, (left + right) / 2, left, left]
    ys = [top, top, top, (top + bottom) / 2, bottom, bottom, bottom, (top + bottom) / 2]
    to_ll = Transformer.from_crs(geobox.crs, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(xs, ys)
    ring = [(float(x), float(y)) for x, y in zip(lon, lat, strict=True)]
    return ring + [ring[0]]


def make_item(
    item_id: str,
    href: str,
    geobox: GeoBox,
    *,
    dtype: str,
    nodata: float | None,
    band_names: Sequence[str] = (),
    datetime: dt.datetime | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A STAC item (as a dict) for the COG at ``href`` on ``geobox``."""
    ring = footprint_lonlat(geobox)
    lons = [p[0] for p in ring]
    lats = [p[1] for p in ring]
    item = pystac.Item(
        id=item_id,
        geometry={"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=datetime or EPOCH,
        properties=dict(properties or {}),
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = geobox.crs
    proj.shape = [geobox.height, geobox.width]
    proj.transform = [float(v) for v in geobox.transform]
    proj.bbox = [float(v) for v in geobox.bounds]
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset("data", asset)
    raster = RasterExtension.ext(asset, add_if_missing=True)
    names = list(band_names) or ["band1"]
    raster.bands = [
        RasterBand.create(
            nodata=nodata,
            data_type=DataType(dtype),
            spatial_resolution=abs(float(geobox.transform[0])),
        )
        for _ in names
    ]
    doc: dict[str, Any] = item.to_dict(include_self_link=False)
    if nodata is not None and math.isnan(nodata):
        for band in doc["assets"]["data"]["raster:bands"]:
            band["nodata"] = "nan"  # the raster extension's spelling; JSON has no NaN
    return doc


def item_bytes(item: Mapping[str, Any]) -> bytes:
    return json.dumps(item, sort_keys=True, indent=1).encode()
