"""Reading and writing RPC models in every container a user meets.

Containers, and where each keeps the model (all become :class:`RpcModel`
with 0-based offsets, integer values at pixel centres):

==================  =========================================================
image (GTiff, NITF  GDAL's RPC metadata domain: GeoTIFF RPC tags, the NITF
VRT, ... )          RPC00B TRE, a VRT's ``<Metadata domain="RPC">``, or an
                    ``.RPB``/``_RPC.TXT``/DigitalGlobe ``.XML`` sidecar that
                    GDAL itself picked up
``.geom``           OSSIM keyword list, ``line_off:  11469.5``; RPC00A
                    ordering (``polynomial_format: A``) is reordered to B
``.RPB``            DigitalGlobe ODL, ``lineOffset = 11984;``
``_RPC.TXT``        ``LINE_OFF: 539.48`` and ``LINE_NUM_COEFF_1..20``
DIMAP ``RPC_*.XML`` Pléiades/SPOT6/7 ``Inverse_Model`` (ground to image) and
                    ``RFM_Validity``; offsets there are **1-based** and are
                    shifted by -1 here, as GDAL does
DigitalGlobe XML    ``<isd><RPB><IMAGE>`` (WorldView-2/3 ``.XML``)
IARPA/DFC ``.json`` ``{"rpc": {"row_offset": ..., "row_num": [...]}}``
==================  =========================================================

Crop convention (see the shared data README): RPC metadata, wherever it is,
describes the full *product*. An image with no CRS whose geotransform is a
unit-pixel translation ``(1, 0, c, 0, 1, f)`` is a crop starting at product
pixel (row f, col c); :func:`read_rpc` and :func:`find_rpc` attach that
origin to the model. Writers keep the same convention: :func:`write_geom`
and :func:`write_rpb` write the product model; :func:`write_rpc_tags` writes
tags that give back the same model through :func:`read_rpc`, which for a file
without such a geotransform means the crop origin is folded into the offsets
(so GDAL tools work on the file directly).

:func:`find_rpc` gathers every source of an image's RPC (its own metadata and
the sidecars beside it), requires them to agree unless the caller picks one,
and checks that the model fits the image (:mod:`ops.sensor.rpc_check`). Images and
sidecars may be local or remote (``s3://``, ``https://``, ``/vsis3/``...):
text files are read through GDAL's virtual file systems (:mod:`ops.raster.vsi`),
never with local path tests.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ops.errors import RpcConflictError, RpcFitError, RpcFormatError
from ops.raster import vsi
from ops.sensor.rpc import RpcModel
from ops.sensor.rpc_check import SOURCES_AGREE_PX, ImageFrame, check_rpc_fits, rpc_disagreement_px
from ops.sensor.rpc_formats import (
    COEFF_KEYS,
    FIELDS,
    GEOM_KEYS,
    RPB_KEYS,
    SCALAR_KEYS,
    build_model,
    parse_geom,
    parse_json,
    parse_rpb,
    parse_rpc_txt,
    parse_xml,
)

PathLike = str | Path

#: Same-stem sidecar names looked for beside an image.
_SIDECAR_SUFFIXES = (".geom", ".GEOM", ".RPB", ".rpb", "_RPC.TXT", "_rpc.txt")
#: Files GDAL itself reads an image's RPC metadata from (upper-cased endings).
_GDAL_RPC_SIDECARS = (".RPB", "_RPC.TXT", ".XML")

# --------------------------------------------------------------- images
def _open(path: PathLike, mode: str = "r") -> Any:
    try:
        return rasterio.open(vsi.gdal_path(path), mode)
    except RasterioIOError as exc:
        raise RpcFormatError(
            f"{path}: GDAL cannot open it ({exc}); expected an image or an RPC file "
            "(.geom, .RPB, _RPC.TXT, RPC_*.XML, .json)"
        ) from None


def crop_origin(dataset: Any) -> tuple[float, float]:
    """(row, col) origin of a crop: a no-CRS unit-pixel translation geotransform."""
    a, b, c, d, e, f = tuple(dataset.transform)[:6]
    if dataset.crs is None and (a, b, d, e) == (1.0, 0.0, 0.0, 1.0):
        return float(f), float(c)
    return 0.0, 0.0


def _frame(dataset: Any, path: str) -> ImageFrame:
    """The image's size, stated crop origin (None for an identity geotransform) and map CRS."""
    t = tuple(float(v) for v in tuple(dataset.transform)[:6])
    stated = dataset.crs is None and (t[0], t[1], t[3], t[4]) == (1.0, 0.0, 0.0, 1.0) and (
        (t[2], t[5]) != (0.0, 0.0))
    return ImageFrame(
        path, int(dataset.height), int(dataset.width),
        (t[5], t[2]) if stated else None,
        None if dataset.crs is None else dataset.crs.to_wkt(),
        (t[0], t[1], t[2], t[3], t[4], t[5]),
    )


def _from_image(path: str) -> tuple[RpcModel | None, ImageFrame, str | None]:
    """GDAL's RPC metadata of an image (product model), its frame, and the sidecar GDAL read.

    GDAL fills the RPC domain from the file itself (GeoTIFF tags, NITF TRE,
    VRT metadata) or from an ``.RPB``/``_RPC.TXT``/DigitalGlobe ``.XML`` it
    finds beside it; the third value names that sidecar, None otherwise.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(path) as ds:
            tags = ds.tags(ns="RPC")
            frame = _frame(ds, path)
            files = [str(f) for f in ds.files]
    if not tags:
        return None, frame, None
    sidecar = next((f for f in files if f.upper().endswith(_GDAL_RPC_SIDECARS)), None)
    source = path if sidecar is None else sidecar
    return build_model(tags, {k: f"RPC metadata {k}" for k in FIELDS}, source), frame, sidecar


def _sniff(path: str) -> str:
    name = vsi.name(path).upper()
    suffix = Path(name).suffix
    by_suffix = {".GEOM": "geom", ".RPB": "rpb", ".XML": "xml", ".JSON": "json"}
    if name.endswith("_RPC.TXT"):
        return "txt"
    if suffix in by_suffix:
        return by_suffix[suffix]
    try:
        head = vsi.read_head(path, 4096)
    except OSError as exc:
        raise RpcFormatError(f"{path}: cannot be read ({exc})") from None
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"NITF", b"NSIF")):
        return "image"
    text = head.decode("utf-8", errors="replace").lstrip()
    if text.startswith("<VRTDataset"):
        return "image"
    if text.startswith("<"):
        return "xml"
    if text.startswith("{"):
        return "json"
    if "lineOffset" in text:
        return "rpb"
    if "LINE_OFF" in text:
        return "txt"
    if "line_off" in text:
        return "geom"
    return "image"


_PARSERS = {
    "geom": parse_geom, "rpb": parse_rpb, "txt": parse_rpc_txt,
    "xml": parse_xml, "json": parse_json,
}


def read_rpc(path: PathLike) -> RpcModel:
    """The RPC model in ``path``, whatever its container (detected by name, then content).

    ``path`` is local, a remote URI (``s3://``, ``https://``...) or a GDAL
    ``/vsi...`` path (see :mod:`ops.raster.vsi`). For an image, the RPC comes from
    GDAL's RPC metadata and the crop origin from a no-CRS unit-pixel
    geotransform. Raises RpcFormatError naming the file and key when there is
    no RPC or it is malformed.
    """
    p = vsi.gdal_path(path)
    with vsi.remote_timeouts(p):
        return _read_rpc(p)


def _read_rpc(p: str) -> RpcModel:
    if not vsi.is_file(p):
        raise RpcFormatError(f"{p}: no such file; expected an image or an RPC file")
    kind = _sniff(p)
    if kind == "image":
        model, frame, _ = _from_image(p)
        if model is None:
            raise RpcFormatError(
                f"{p}: image holds no RPC (GDAL's RPC metadata domain is empty); use "
                "find_rpc to also look for .geom/.RPB/_RPC.TXT/RPC_*.XML sidecars"
            )
        return model.with_origin(*(frame.origin or (0.0, 0.0)))
    try:
        text = vsi.read_bytes(p).decode("utf-8", errors="replace")
    except OSError as exc:
        raise RpcFormatError(f"{p}: cannot be read ({exc})") from None
    try:
        return _PARSERS[kind](text, p)
    except RpcFormatError:
        if kind == "xml" and "Dimap_Document" in text and "Rational_Function_Model" not in text:
            # A DIMAP main file (DIM_*.XML): GDAL's DIMAP driver finds its RPC.
            model, _, _ = _from_image(p)
            if model is not None:
                return model
        raise


# ---------------------------------------------------------- finding one
def _sidecars(image: str) -> tuple[list[str], list[str]]:
    """Sidecar RPC files beside ``image``, and what was looked for (for messages).

    Same-stem ``.geom``, ``.RPB``, ``_RPC.TXT`` (either case), then a DIMAP
    ``RPC_<core>.XML`` whose ``<core>`` is part of the image's name (DIMAP
    names images ``IMG_<core>_R1C1.*``); more than one DIMAP match is an error.
    The folder is listed once (one request on an object store); where it
    cannot be listed, the same-stem names are probed one by one.
    """
    folder, stem = vsi.parent(image), Path(vsi.name(image)).stem
    wanted = [stem + suffix for suffix in _SIDECAR_SUFFIXES]
    try:
        names = set(vsi.list_names(folder))
    except OSError:
        names = set()
    if names:
        found = [vsi.join(folder, n) for n in wanted if n in names]
    else:
        found = [vsi.join(folder, n) for n in wanted if vsi.is_file(vsi.join(folder, n))]
    looked = [vsi.join(folder, n) for n in wanted]
    beside = sorted(n for n in names if n.upper().startswith("RPC_") and n.upper().endswith(".XML"))
    dimap = [n for n in beside if Path(n).stem[4:] and Path(n).stem[4:] in stem]
    looked.append(vsi.join(folder, "RPC_<core>.XML") + f" with <core> in {stem!r}")
    if len(dimap) > 1:
        raise RpcFormatError(
            f"{image}: {len(dimap)} DIMAP RPC files match its name ({', '.join(dimap)}); "
            "expected one, or a same-stem .geom"
        )
    if beside and not dimap:
        looked.append(f"(not matching: {', '.join(beside)})")
    return found + [vsi.join(folder, n) for n in dimap], looked


def _parse_origin(origin: Sequence[float] | None, frame: ImageFrame) -> tuple[float, float] | None:
    if origin is None:
        return frame.origin
    values = tuple(float(v) for v in origin)
    if len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise RpcFitError(f"{frame.path}: RPC origin {origin!r}; expected two finite numbers "
                          "(row, col) of the image's first pixel in the product")
    row0, col0 = values
    if frame.origin is not None and frame.origin != (row0, col0):
        raise RpcFitError(
            f"{frame.path}: RPC origin ({row0:g}, {col0:g}) given, but the file's geotransform "
            f"states ({frame.origin[0]:g}, {frame.origin[1]:g}); expected one origin (drop "
            "the option, or fix the file's geotransform)"
        )
    if frame.crs is not None:
        raise RpcFitError(f"{frame.path}: RPC origin given for a georeferenced image (a map "
                          "CRS); expected a raw sensor image")
    return row0, col0


def find_rpc(image_path: PathLike, *, rpc_source: str | PathLike | None = None,
             origin: Sequence[float] | None = None) -> RpcModel:
    """The RPC of an image, checked to describe it, with its crop origin attached.

    Sources: GDAL's RPC metadata of the image ("embedded": GeoTIFF tags, NITF
    TRE, VRT metadata, or an ``.RPB``/``_RPC.TXT`` GDAL reads with it) and the
    sidecars :func:`_sidecars` finds. ``rpc_source`` picks: None takes them all
    and requires them to agree (RpcConflictError naming them otherwise),
    ``'embedded'`` or ``'sidecar'`` one kind, anything else is the path of
    the RPC file to use. ``origin`` (row, col) states the image's first pixel
    in the product when the file does not (a crop saved without its
    geotransform). The image may be local or remote (``s3://``, ``/vsis3/``,
    ``https://``..., read through GDAL, see :mod:`ops.raster.vsi`).

    The model must fit the image (:func:`ops.sensor.rpc_check.check_rpc_fits`):
    RpcFitError for a crop of unknown origin, pixels outside the model's box,
    or a georeferenced map given as a raw image.
    """
    image = vsi.gdal_path(image_path)
    with vsi.remote_timeouts(image):
        return _find_rpc(image, rpc_source, origin)


def _find_rpc(image: str, rpc_source: str | PathLike | None,
              origin: Sequence[float] | None) -> RpcModel:
    embedded, frame, gdal_sidecar = _from_image(image)
    row_col = _parse_origin(origin, frame)
    candidates: list[tuple[RpcModel, bool]] = []  # (product model, from a sidecar)
    looked = [f"{image} (RPC metadata)"]
    if rpc_source not in (None, "embedded", "sidecar"):
        path = vsi.gdal_path(str(rpc_source))
        candidates.append((read_rpc(path), path != image))
        looked = [path]
    else:
        if rpc_source in (None, "embedded") and embedded is not None:
            candidates.append((embedded, gdal_sidecar is not None))
        if rpc_source in (None, "sidecar"):
            found, searched = _sidecars(image)
            looked += searched
            candidates += [(read_rpc(p), True) for p in found if p != gdal_sidecar]
    if not candidates:
        what = {"embedded": "no RPC in its metadata", "sidecar": "no RPC sidecar"}.get(
            str(rpc_source), "no RPC found")
        raise RpcFormatError(f"{image}: {what}; looked for {', '.join(looked)}")
    first, from_sidecar = candidates[0]
    for other, _ in candidates[1:]:
        gap_px = rpc_disagreement_px(first, other)
        if gap_px > SOURCES_AGREE_PX:
            raise RpcConflictError(
                f"{image}: its RPC sources disagree by up to {gap_px:.3g} px: {first.source} "
                f"and {other.source}; expected one model. Choose one: rpc_source 'embedded' "
                "(the image's metadata), 'sidecar', or the path of the RPC file "
                "(eochain ortho --rpc)"
            )
    model = first.with_origin(*(row_col or (0.0, 0.0)))
    check_rpc_fits(model, frame, from_sidecar=from_sidecar, origin_stated=row_col is not None)
    return model


# --------------------------------------------------------------- writers
def _fmt(value: float) -> str:
    return repr(float(value))


def _product_fields(model: RpcModel) -> dict[str, Any]:
    return {key: getattr(model, field) for key, field in FIELDS.items()}


def write_geom(model: RpcModel, path: PathLike) -> Path:
    """Write the *product* model as an OSSIM ``.geom`` keyword list (origin not written)."""
    fields = _product_fields(model)
    lines = ["type:  ossimRpcModel", "polynomial_format:  B"]
    for key in SCALAR_KEYS:
        lines.append(f"{GEOM_KEYS[key]}:  {_fmt(fields[key])}")
    for key in COEFF_KEYS:
        lines.extend(f"{GEOM_KEYS[key]}{i:02d}:  {_fmt(c)}" for i, c in enumerate(fields[key]))
    out = Path(path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def write_rpb(model: RpcModel, path: PathLike) -> Path:
    """Write the *product* model as a DigitalGlobe ``.RPB`` (GDAL reads it as a sidecar)."""
    fields = _product_fields(model)
    lines = ['satId = "UNKNOWN";', 'bandId = "P";', 'SpecId = "RPC00B";',
             "BEGIN_GROUP = IMAGE", "\terrBias = 0.0;", "\terrRand = 0.0;"]
    for key in SCALAR_KEYS:
        lines.append(f"\t{RPB_KEYS[key]} = {_fmt(fields[key])};")
    for key in COEFF_KEYS:
        body = ",\n".join(f"\t\t\t{_fmt(c)}" for c in fields[key])
        lines.append(f"\t{RPB_KEYS[key]} = (\n{body});")
    lines += ["END_GROUP = IMAGE", "END;"]
    out = Path(path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def write_rpc_tags(target: PathLike | Any, model: RpcModel) -> None:
    """Attach ``model`` as GDAL RPC metadata (GeoTIFF RPC tags) to an image.

    ``target`` is a path (opened in update mode) or a dataset open for
    writing. The tags are written so that :func:`read_rpc` on the file gives
    back ``model``: relative to the file's own crop origin if it has one
    (product offsets), else folded (GDAL tools then work on the file as is).
    """
    def attach(ds: Any) -> None:
        row0, col0 = crop_origin(ds)
        ds.rpcs = model.folded().with_origin(-row0, -col0).to_rasterio()

    if hasattr(target, "rpcs") and hasattr(target, "transform"):
        attach(target)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(target, "r+") as ds:
            attach(ds)
