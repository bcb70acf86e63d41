"""What a product states about itself: CRS with its heights, band names and units, provenance.

One :class:`ProductMetadata` per product, built where the product is
planned (``eochain dsm``, ``eochain ortho``, the runtime's survey) and
written twice, identically, by :class:`ops.raster.raster_io.CogWriter` (the file's
CRS, band units and ``EOCHAIN_*`` GDAL tags) and by
:func:`scheduler.products.stac.make_item` (``proj:``, ``raster:bands``,
``bands``, ``eochain:*`` properties and the acquisition datetime).

The DSM's heights are part of its CRS (:func:`height_crs`):

* ``heights="geoid"``: a compound CRS, horizontal + EGM96 height (EPSG:5773),
  written as such in the GeoTIFF keys (GeoTIFF 1.1 vertical keys);
* ``heights="ellipsoid"``: the horizontal CRS promoted to 3D, its third axis
  the WGS 84 ellipsoidal height (ISO 19111 has no compound CRS with an
  ellipsoidal height; its base is the geographic 3D EPSG:4979). GDAL's GeoTIFF
  keys cannot hold a projected 3D CRS (GDAL moves it to an ``.aux.xml``
  sidecar, which a store publication would drop), so the file's keys hold the
  horizontal CRS and the full 3D CRS is stated by the ``EOCHAIN_CRS`` tag
  (WKT2), ``EOCHAIN_HEIGHTS=ellipsoid`` and the STAC item's ``proj:wkt2``.

Every DSM file carries ``EOCHAIN_CRS``; bands state their unit (``metre``
for heights, ``1`` for counts and scores: without one GDAL would report the
vertical CRS's metre for every band).

Provenance: eochain's version, the operation, its inputs (images, the RPC
file each model came from, DEM, geoid), the height reference, the
parameters and, for a DSM, what its initial heights were (``initial_heights``:
the DEM, or the surface the images gave, on the DEM or without one, and
why); in the file as ``EOCHAIN_<KEY>`` tags (lists and mappings as JSON) and
in the STAC item as ``eochain:<key>`` properties.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pyproj import CRS
from pyproj.crs import CompoundCRS
from pyproj.exceptions import CRSError

from ops.sensor.acquisition import Acquisition
from scheduler.products.errors import MetadataError

HEIGHT_REFERENCES = ("ellipsoid", "geoid")
#: The vertical CRS of heights above the EGM96 geoid.
EGM96_HEIGHT = "EPSG:5773"
WGS84_SEMI_MAJOR_M = 6378137.0
WGS84_INVERSE_FLATTENING = 298.257223563
#: Unit names as GDAL writes them in the file and as STAC spells them (UDUNITS).
METRE = "metre"
DIMENSIONLESS = "1"
STAC_UNITS = {METRE: "m"}
TAG_PREFIX = "EOCHAIN_"
STAC_PREFIX = "eochain:"


def eochain_version() -> str:
    """The installed eochain's version (``0+unknown`` when run from a bare checkout)."""
    try:
        return metadata.version("eochain")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def height_crs(horizontal: str, heights: str) -> str:
    """The WKT2 of the 3D CRS of heights above ``heights`` on the ``horizontal`` grid."""
    if heights not in HEIGHT_REFERENCES:
        raise MetadataError(f"heights = {heights!r}; expected one of {HEIGHT_REFERENCES}")
    try:
        base = CRS.from_user_input(horizontal)
    except CRSError as exc:
        raise MetadataError(f"CRS {horizontal!r} is not understood by PROJ ({exc})") from exc
    if base.is_vertical or len(base.axis_info) != 2:
        raise MetadataError(f"CRS {horizontal!r} is not a horizontal CRS; expected e.g. EPSG:32631")
    if heights == "ellipsoid":
        # RPC heights are above WGS 84's ellipsoid: the 3D CRS may say so only if its
        # ellipsoid is that one (GRS 1980 differs by 0.1 mm in height: the same here)
        ellipsoid = base.ellipsoid
        if ellipsoid is None or ellipsoid.semi_major_metre != WGS84_SEMI_MAJOR_M or abs(
                ellipsoid.inverse_flattening - WGS84_INVERSE_FLATTENING) > 1e-5:
            raise MetadataError(
                f"CRS {horizontal!r} is on the {ellipsoid.name if ellipsoid else 'unknown'} "
                "ellipsoid; heights above WGS 84's cannot be stated on it, expected a CRS on "
                "WGS 84 (or GRS 1980), e.g. its UTM zone"
            )
        return str(base.to_3d().to_wkt())
    compound = CompoundCRS(f"{base.name} + EGM96 height", [base, CRS(EGM96_HEIGHT)])
    return str(compound.to_wkt())


def band_name(description: str | None, index: int) -> str:
    """A band's short name from its description: ``"height (m)"`` -> ``"height"``."""
    if not description:
        return f"band{index + 1}"
    return description.split(" (")[0].strip().replace(" ", "_").lower() or f"band{index + 1}"


@dataclass(frozen=True, slots=True)
class ProductMetadata:
    """A product's CRS, bands, acquisition span and provenance (see the module).

    ``crs`` is the product's whole CRS (with its heights), ``file_crs`` what the
    GeoTIFF keys hold of it (the same, unless GDAL cannot encode it there).
    """

    crs: str
    file_crs: str
    band_descriptions: tuple[str | None, ...]
    band_units: tuple[str | None, ...]
    acquired: Acquisition | None
    provenance_json: str

    def __post_init__(self) -> None:
        if len(self.band_units) != len(self.band_descriptions):
            raise MetadataError(
                f"{len(self.band_units)} band units for {len(self.band_descriptions)} bands"
            )

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(band_name(d, i) for i, d in enumerate(self.band_descriptions))

    @property
    def provenance(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.provenance_json)
        return doc

    def tags(self) -> dict[str, str]:
        """The product file's GDAL tags (default domain)."""
        out = {
            TAG_PREFIX + key.upper(): value if isinstance(value, str) else json.dumps(
                value, sort_keys=True)
            for key, value in self.provenance.items() if value is not None
        }
        if self.crs != self.file_crs or self.provenance.get("op") == "dsm":
            out[TAG_PREFIX + "CRS"] = self.crs
        if self.acquired is not None:
            out[TAG_PREFIX + "ACQUISITION_START"] = self.acquired.start.isoformat()
            out[TAG_PREFIX + "ACQUISITION_END"] = self.acquired.end.isoformat()
        return out

    def stac_properties(self) -> dict[str, Any]:
        """The item's ``eochain:*`` provenance properties."""
        return {STAC_PREFIX + key: value for key, value in self.provenance.items()
                if value is not None}

    def stac_units(self) -> tuple[str | None, ...]:
        return tuple(STAC_UNITS.get(u, u) if u else None for u in self.band_units)


def _provenance(op: str, images: Sequence[str], rpc_sources: Sequence[str], dem: str | None,
                geoid: str | None, heights: str | None,
                parameters: Mapping[str, object], **extra: str) -> str:
    doc = {"version": eochain_version(), "op": op, "inputs": list(images),
           "rpc": list(rpc_sources), "dem": dem, "geoid": geoid, "heights": heights,
           "parameters": dict(parameters), **extra}
    try:
        return json.dumps(doc, sort_keys=True)
    except TypeError as exc:
        raise MetadataError(f"parameters of {op} are not JSON values: {parameters!r}") from exc


def dsm_metadata(
    *, horizontal_crs: str, heights: str, band_descriptions: Sequence[str | None],
    images: Sequence[str], rpc_sources: Sequence[str], dem: str | None, geoid: str | None,
    acquired: Acquisition | None, parameters: Mapping[str, object], initial_heights: str,
) -> ProductMetadata:
    """A DSM's metadata: band 1 holds heights (metres) above ``heights``; the others are
    counts and scores (unit ``1``). ``initial_heights``: what the matching started from."""
    units = tuple(METRE if i == 0 else DIMENSIONLESS for i in range(len(band_descriptions)))
    crs = height_crs(horizontal_crs, heights)
    file_crs = crs if heights == "geoid" else horizontal_crs
    return ProductMetadata(crs, file_crs, tuple(band_descriptions), units, acquired,
                           _provenance("dsm", images, rpc_sources, dem, geoid, heights,
                                       parameters, initial_heights=initial_heights))


def ortho_metadata(
    *, crs: str, band_descriptions: Sequence[str | None], image: str, rpc_source: str,
    dem: str | None, geoid: str | None, acquired: Acquisition | None,
    parameters: Mapping[str, object], band_units: Sequence[str | None] | None = None,
) -> ProductMetadata:
    """An ortho's metadata: the input's bands (and units, when it states them) on ``crs``."""
    units = tuple(band_units) if band_units is not None else (None,) * len(band_descriptions)
    return ProductMetadata(crs, crs, tuple(band_descriptions), units, acquired,
                           _provenance("ortho", [image], [rpc_source], dem, geoid, None,
                                       parameters))


def plain_metadata(crs: str, band_descriptions: Sequence[str | None]) -> ProductMetadata:
    """Metadata of a product that states only its grid's CRS and band descriptions."""
    return ProductMetadata(crs, crs, tuple(band_descriptions), (None,) * len(band_descriptions),
                           None, "{}")


def processing_time() -> dt.datetime:
    """Now, in UTC: the date of a product whose inputs state no acquisition time."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
