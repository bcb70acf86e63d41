"""The vertical reference of DEM heights: the WGS84 ellipsoid, or a geoid.

RPC models take heights above the WGS84 ellipsoid. SRTM stores heights above
the EGM96 geoid, which lies up to about 100 m from the ellipsoid (about 50 m
at Mont Ventoux): a geoid height used as an ellipsoidal one shifts a
Pléiades ortho by metres, with nothing to see. So every DEM source gets a
reference, and a geoid reference must be converted (``--geoid``) or
overridden explicitly (``vertical_datum='ellipsoid'``); it is never skipped silently.

How a file's reference is known, first match wins:

1. stated by the caller: ``vertical_datum`` is one of :data:`VERTICAL_DATUMS`;
2. its CRS: the vertical part of a compound CRS (``EGM96 height``,
   ``EGM2008 height``; any other geoid model is a geoid of unknown kind), or
   a 3D geographic CRS (ellipsoidal heights);
3. its metadata: a tag naming EGM96 or EGM2008 (``VERTICAL_DATUM=EGM96``...);
4. its format or name: an SRTM ``.hgt``, or a file named like an SRTM tile
   (``N29E031_*.tif``, ``n44_e005_1arc_v3.tif``, ``srtm_38_05.tif``) is EGM96;
   a Copernicus DEM (``Copernicus_DSM_*``) is EGM2008;
5. otherwise it is *assumed* ellipsoidal, and says so (:attr:`reason`).

Tiles of one mosaic must agree; an assumed tile takes the reference of the
tiles that state one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyproj
import pyproj.exceptions

from ops.errors import DemError

#: References a caller may state; all but "ellipsoid" need a geoid grid.
VERTICAL_DATUMS = ("ellipsoid", "egm96", "egm2008")

_SRTM_NAME = re.compile(r"^([NS]\d{1,2}_?[EW]\d{1,3}([_.-]|$))|(^srtm)", re.IGNORECASE)
_COPERNICUS_NAME = re.compile(r"^Copernicus_DSM", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class VerticalReference:
    """``datum``: 'ellipsoid', 'egm96', 'egm2008' or 'geoid' (another or unnamed geoid)."""

    datum: str
    reason: str
    assumed: bool = False

    @property
    def is_geoid(self) -> bool:
        return self.datum != "ellipsoid"


def stated(datum: str) -> VerticalReference:
    """The reference a caller states; DemError for an unknown name."""
    key = datum.strip().lower()
    if key not in VERTICAL_DATUMS:
        raise DemError(f"DEM vertical datum {datum!r}; expected one of "
                       f"{', '.join(VERTICAL_DATUMS)}")
    return VerticalReference(key, f"stated (vertical_datum={key!r})")


def of_hgt(name: str) -> VerticalReference:
    """An SRTM ``.hgt`` tile (file ``name``): EGM96 by the format's definition."""
    return VerticalReference("egm96", f"{name} is an SRTM .hgt tile (heights above EGM96)")


def of_dataset(name: str, dataset: Any) -> VerticalReference:
    """The reference of a raster GDAL opened (file ``name``), from its CRS, tags and name."""
    by_crs = _from_crs(dataset.crs)
    if by_crs is not None:
        return VerticalReference(by_crs[0], f"{name}: CRS {by_crs[1]}")
    tags = {**dataset.tags(), **dataset.tags(1)}
    for key, value in tags.items():
        text = f"{key}={value}".upper()
        for datum in ("EGM2008", "EGM96"):
            if datum in text.replace(" ", ""):
                return VerticalReference(datum.lower(), f"{name}: tag {key}={value}")
    if _SRTM_NAME.match(name):
        return VerticalReference("egm96", f"{name} is named like an SRTM tile "
                                          "(SRTM heights are above EGM96)")
    if _COPERNICUS_NAME.match(name):
        return VerticalReference("egm2008", f"{name} is a Copernicus DEM (heights above "
                                            "EGM2008)")
    return VerticalReference("ellipsoid", f"{name} states no vertical reference (CRS, tags "
                                          "or SRTM naming): taken as ellipsoidal", assumed=True)


def _from_crs(crs: Any) -> tuple[str, str] | None:
    if crs is None:
        return None
    try:
        parsed = pyproj.CRS.from_user_input(crs.to_wkt())
    except pyproj.exceptions.CRSError:
        return None
    for sub in parsed.sub_crs_list:
        if sub.is_vertical:
            name = sub.name or "a vertical CRS"
            upper = name.upper().replace(" ", "")
            for datum in ("EGM2008", "EGM96"):
                if datum in upper:
                    return datum.lower(), f"vertical part {name!r}"
            return "geoid", f"vertical part {name!r} (a geoid other than EGM96/EGM2008)"
    if parsed.is_geographic and len(parsed.axis_info) == 3:
        return "ellipsoid", f"{parsed.name!r} is 3D geographic (ellipsoidal heights)"
    return None


def combine(references: Sequence[tuple[str, VerticalReference]], name: str) -> VerticalReference:
    """One reference for a mosaic's tiles; DemError naming two tiles that disagree."""
    known = [(p, r) for p, r in references if not r.assumed]
    if not known:
        return references[0][1]
    first = known[0][1]
    for _, ref in known[1:]:
        if ref.datum != first.datum:
            raise DemError(
                f"DEM {name}: tiles with different vertical references: {first.reason}; "
                f"{ref.reason}; expected one (convert the tiles to one reference first)"
            )
    return first


def check_geoid_use(ref: VerticalReference, name: str, geoid_source: str | None
                    ) -> VerticalReference:
    """The reference after checking the geoid grid matches it; DemError otherwise.

    A geoid reference without a geoid grid is refused (the conversion would be
    skipped); a geoid grid for heights known to be ellipsoidal too. For a
    source assumed ellipsoidal, a geoid grid says its heights are above that geoid.
    """
    if ref.is_geoid and geoid_source is None:
        raise DemError(
            f"DEM {name}: heights are above the {ref.datum.upper()} geoid ({ref.reason}), and "
            "no geoid grid was given to convert them to the ellipsoidal heights RPCs use; "
            "pass --geoid (an EGM96 grid such as egm96_15.gtx), or state "
            "--dem-heights ellipsoid if they are in fact ellipsoidal"
        )
    if geoid_source is not None and not ref.is_geoid:
        if not ref.assumed:
            raise DemError(
                f"DEM {name}: heights are ellipsoidal ({ref.reason}), yet a geoid grid "
                f"{geoid_source} was given; expected no --geoid for ellipsoidal heights"
            )
        return VerticalReference("geoid", f"heights above the geoid grid {geoid_source}, as "
                                          "given (the DEM states no reference)")
    return ref
