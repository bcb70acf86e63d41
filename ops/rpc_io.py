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
"""

from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from ops.errors import RpcFormatError
from ops.rpc import RpcModel

PathLike = str | Path

#: Canonical (GDAL RPC metadata) keys, in RpcModel field order.
SCALAR_KEYS = (
    "LINE_OFF", "SAMP_OFF", "LAT_OFF", "LONG_OFF", "HEIGHT_OFF",
    "LINE_SCALE", "SAMP_SCALE", "LAT_SCALE", "LONG_SCALE", "HEIGHT_SCALE",
)
COEFF_KEYS = ("LINE_NUM_COEFF", "LINE_DEN_COEFF", "SAMP_NUM_COEFF", "SAMP_DEN_COEFF")
_FIELDS = {
    "LINE_OFF": "line_off", "SAMP_OFF": "samp_off", "LAT_OFF": "lat_off",
    "LONG_OFF": "lon_off", "HEIGHT_OFF": "height_off", "LINE_SCALE": "line_scale",
    "SAMP_SCALE": "samp_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "lon_scale",
    "HEIGHT_SCALE": "height_scale", "LINE_NUM_COEFF": "line_num",
    "LINE_DEN_COEFF": "line_den", "SAMP_NUM_COEFF": "samp_num", "SAMP_DEN_COEFF": "samp_den",
}
#: RPC00A term i goes to RPC00B position _A_TO_B[i] (A has LPH at 7, B at 10).
_A_TO_B = (0, 1, 2, 3, 4, 5, 6, 10, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19)

_GEOM_KEYS = {
    "LINE_OFF": "line_off", "SAMP_OFF": "samp_off", "LAT_OFF": "lat_off",
    "LONG_OFF": "long_off", "HEIGHT_OFF": "height_off", "LINE_SCALE": "line_scale",
    "SAMP_SCALE": "samp_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "long_scale",
    "HEIGHT_SCALE": "height_scale", "LINE_NUM_COEFF": "line_num_coeff_",
    "LINE_DEN_COEFF": "line_den_coeff_", "SAMP_NUM_COEFF": "samp_num_coeff_",
    "SAMP_DEN_COEFF": "samp_den_coeff_",
}
_RPB_KEYS = {
    "LINE_OFF": "lineOffset", "SAMP_OFF": "sampOffset", "LAT_OFF": "latOffset",
    "LONG_OFF": "longOffset", "HEIGHT_OFF": "heightOffset", "LINE_SCALE": "lineScale",
    "SAMP_SCALE": "sampScale", "LAT_SCALE": "latScale", "LONG_SCALE": "longScale",
    "HEIGHT_SCALE": "heightScale", "LINE_NUM_COEFF": "lineNumCoef",
    "LINE_DEN_COEFF": "lineDenCoef", "SAMP_NUM_COEFF": "sampNumCoef",
    "SAMP_DEN_COEFF": "sampDenCoef",
}
_DG_XML_KEYS = {k: v.upper() for k, v in _RPB_KEYS.items()}
_JSON_KEYS = {
    "LINE_OFF": "row_offset", "SAMP_OFF": "col_offset", "LAT_OFF": "lat_offset",
    "LONG_OFF": "lon_offset", "HEIGHT_OFF": "alt_offset", "LINE_SCALE": "row_scale",
    "SAMP_SCALE": "col_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "lon_scale",
    "HEIGHT_SCALE": "alt_scale", "LINE_NUM_COEFF": "row_num", "LINE_DEN_COEFF": "row_den",
    "SAMP_NUM_COEFF": "col_num", "SAMP_DEN_COEFF": "col_den",
}


# --------------------------------------------------------------- values
def _float(value: Any, key: str, source: str) -> float:
    token = value.split()[0] if isinstance(value, str) and value.split() else value
    try:
        out = float(token)
    except (TypeError, ValueError):
        raise RpcFormatError(
            f"{source}: key {key} = {value!r} is not a number; expected a decimal value"
        ) from None
    return out


def _floats(value: Any, key: str, source: str) -> tuple[float, ...]:
    items: Sequence[Any]
    if isinstance(value, str):
        items = [t for t in re.split(r"[\s,()]+", value) if t]
    elif isinstance(value, Sequence):
        items = value
    else:
        raise RpcFormatError(
            f"{source}: key {key} = {value!r} is not a list; expected 20 coefficients"
        )
    if len(items) != 20:
        raise RpcFormatError(
            f"{source}: key {key} has {len(items)} coefficients, expected 20 "
            "(truncated or malformed RPC)"
        )
    return tuple(_float(v, key, source) for v in items)


def _build(
    fields: Mapping[str, Any], names: Mapping[str, str], source: str, *,
    one_based: bool = False, rpc00a: bool = False,
) -> RpcModel:
    """RpcModel from canonical-key ``fields``; ``names`` gives each key's name in the file."""
    missing = [names[k] for k in (*SCALAR_KEYS, *COEFF_KEYS) if k not in fields]
    if len(missing) == len(SCALAR_KEYS) + len(COEFF_KEYS):
        raise RpcFormatError(
            f"{source}: holds no RPC model (looked for keys {names['LINE_OFF']}, "
            f"{names['LINE_NUM_COEFF']}, ...)"
        )
    if missing:
        raise RpcFormatError(
            f"{source}: RPC key(s) {', '.join(missing)} missing (truncated or malformed RPC)"
        )
    kwargs: dict[str, Any] = {}
    for key in SCALAR_KEYS:
        kwargs[_FIELDS[key]] = _float(fields[key], names[key], source)
    for key in COEFF_KEYS:
        coeffs = _floats(fields[key], names[key], source)
        if rpc00a:
            reordered = [0.0] * 20
            for i, c in enumerate(coeffs):
                reordered[_A_TO_B[i]] = c
            coeffs = tuple(reordered)
        kwargs[_FIELDS[key]] = coeffs
    if one_based:
        kwargs["line_off"] -= 1.0
        kwargs["samp_off"] -= 1.0
    return RpcModel(**kwargs, source=source)


# -------------------------------------------------------------- parsers
def parse_geom(text: str, source: str) -> RpcModel:
    """OSSIM keyword list (``key:  value`` lines)."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip()] = value.strip()
    fields: dict[str, Any] = {}
    for key in SCALAR_KEYS:
        if _GEOM_KEYS[key] in kv:
            fields[key] = kv[_GEOM_KEYS[key]]
    for key in COEFF_KEYS:
        prefix = _GEOM_KEYS[key]
        values = [kv[f"{prefix}{i:02d}"] for i in range(20) if f"{prefix}{i:02d}" in kv]
        if values:
            fields[key] = values
    names = {k: (v + "00..19" if k in COEFF_KEYS else v) for k, v in _GEOM_KEYS.items()}
    fmt = kv.get("polynomial_format", "B").strip().upper()
    if fmt not in ("A", "B"):
        raise RpcFormatError(
            f"{source}: key polynomial_format = {fmt!r}, expected 'A' or 'B' (RPC00A/RPC00B)"
        )
    return _build(fields, names, source, rpc00a=fmt == "A")


def parse_rpc_txt(text: str, source: str) -> RpcModel:
    """``_RPC.TXT`` (``LINE_OFF: value``, ``LINE_NUM_COEFF_1..20``)."""
    kv: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            kv[key.strip().upper()] = value.strip()
    fields: dict[str, Any] = {k: kv[k] for k in SCALAR_KEYS if k in kv}
    for key in COEFF_KEYS:
        if key in kv:  # GDAL metadata style: all 20 on one line
            fields[key] = kv[key]
            continue
        values = [kv[f"{key}_{i}"] for i in range(1, 21) if f"{key}_{i}" in kv]
        if values:
            fields[key] = values
    names = {k: (k + "_1..20" if k in COEFF_KEYS else k) for k in _FIELDS}
    return _build(fields, names, source)


def parse_rpb(text: str, source: str) -> RpcModel:
    """DigitalGlobe ``.RPB`` (ODL ``key = value;``, lists in parentheses)."""
    kv = {m.group(1): m.group(2) for m in re.finditer(r"(\w+)\s*=\s*(\([^)]*\)|[^;]*);", text)}
    fields = {k: kv[v] for k, v in _RPB_KEYS.items() if v in kv}
    return _build(fields, _RPB_KEYS, source)


def _xml_text(element: ET.Element | None) -> str | None:
    return None if element is None or element.text is None else element.text.strip()


def parse_xml(text: str, source: str) -> RpcModel:
    """DIMAP v2 ``RPC_*.XML`` (Pléiades, SPOT6/7) or DigitalGlobe ``<isd>`` XML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise RpcFormatError(
            f"{source}: not well-formed XML ({exc}); expected a DIMAP or DigitalGlobe RPC "
            "file (truncated?)"
        ) from None
    inverse = root.find(".//Inverse_Model")
    validity = root.find(".//RFM_Validity")
    if inverse is not None or validity is not None:
        fields: dict[str, Any] = {}
        for key in SCALAR_KEYS:
            value = _xml_text(validity.find(key) if validity is not None else None)
            if value is not None:
                fields[key] = value
        for key in COEFF_KEYS:
            values = [_xml_text(inverse.find(f"{key}_{i}")) if inverse is not None else None
                      for i in range(1, 21)]
            present = [v for v in values if v is not None]
            if present:
                fields[key] = present
        names = {k: (f"Inverse_Model/{k}_1..20" if k in COEFF_KEYS else f"RFM_Validity/{k}")
                 for k in _FIELDS}
        return _build(fields, names, source, one_based=True)
    image = root.find(".//RPB/IMAGE")
    if image is not None:
        fields = {}
        for key, tag in _DG_XML_KEYS.items():
            if key in COEFF_KEYS:
                values = [t for e in image.iter(tag) if e.text for t in e.text.split()]
                if values:
                    fields[key] = values
            else:
                value = _xml_text(image.find(tag))
                if value is not None:
                    fields[key] = value
        return _build(fields, {k: f"RPB/IMAGE/{v}" for k, v in _DG_XML_KEYS.items()}, source)
    raise RpcFormatError(
        f"{source}: XML root <{root.tag}> holds no RPC (looked for DIMAP "
        "Inverse_Model/RFM_Validity and DigitalGlobe RPB/IMAGE)"
    )


def parse_json(text: str, source: str) -> RpcModel:
    """IARPA/DFC JSON (``rpc`` object with ``row_offset``... keys) or GDAL-key JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RpcFormatError(f"{source}: not valid JSON ({exc}); truncated?") from None
    if isinstance(data, dict) and isinstance(data.get("rpc"), dict):
        data = data["rpc"]
    if not isinstance(data, dict):
        raise RpcFormatError(f"{source}: JSON top level is not an object; expected RPC keys")
    if "LINE_OFF" in data or "line_off" in data:
        upper = {str(k).upper(): v for k, v in data.items()}
        return _build(upper, {k: k for k in _FIELDS}, source)
    fields = {k: data[v] for k, v in _JSON_KEYS.items() if v in data}
    return _build(fields, _JSON_KEYS, source)


# --------------------------------------------------------------- images
def _open(path: PathLike, mode: str = "r") -> Any:
    try:
        return rasterio.open(path, mode)
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


def _from_image(path: PathLike) -> tuple[RpcModel | None, tuple[float, float]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with _open(path) as ds:
            tags = ds.tags(ns="RPC")
            origin = crop_origin(ds)
    if not tags:
        return None, origin
    model = _build(tags, {k: f"RPC metadata {k}" for k in _FIELDS}, str(path))
    return model.with_origin(*origin), origin


def _sniff(path: Path) -> str:
    name = path.name.upper()
    suffix = path.suffix.upper()
    by_suffix = {".GEOM": "geom", ".RPB": "rpb", ".XML": "xml", ".JSON": "json"}
    if name.endswith("_RPC.TXT"):
        return "txt"
    if suffix in by_suffix:
        return by_suffix[suffix]
    try:
        head = path.read_bytes()[:4096]
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

    For an image, the RPC comes from GDAL's RPC metadata and the crop origin
    from a no-CRS unit-pixel geotransform. Raises RpcFormatError naming the
    file and key when there is no RPC or it is malformed.
    """
    p = Path(path)
    if not p.exists():
        raise RpcFormatError(f"{p}: no such file; expected an image or an RPC file")
    kind = _sniff(p)
    if kind == "image":
        model, _ = _from_image(p)
        if model is None:
            raise RpcFormatError(
                f"{p}: image holds no RPC (GDAL's RPC metadata domain is empty); use "
                "find_rpc to also look for .geom/.RPB/_RPC.TXT/RPC_*.XML sidecars"
            )
        return model
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RpcFormatError(f"{p}: cannot be read ({exc})") from None
    try:
        return _PARSERS[kind](text, str(p))
    except RpcFormatError:
        if kind == "xml" and "Dimap_Document" in text and "Rational_Function_Model" not in text:
            # A DIMAP main file (DIM_*.XML): GDAL's DIMAP driver finds its RPC.
            model, _ = _from_image(p)
            if model is not None:
                return model
        raise


def _sidecars(image: Path) -> list[Path]:
    names = (".geom", ".GEOM", ".RPB", ".rpb", "_RPC.TXT", "_rpc.txt")
    return [image.parent / (image.stem + name) for name in names]


def find_rpc(image_path: PathLike) -> RpcModel:
    """The RPC of an image: in the image itself, else in a sidecar next to it.

    Looked for, in order: GDAL's RPC metadata of the image (which includes
    ``.RPB``/``_RPC.TXT``/DigitalGlobe ``.XML`` sidecars GDAL reads itself);
    same-stem ``.geom``, ``.RPB``, ``_RPC.TXT``; a DIMAP ``RPC_<core>.XML`` in
    the folder whose ``<core>`` is part of the image's name (as in DIMAP's
    ``IMG_<core>_R1C1``; exactly one must match). The image's crop origin is
    attached in every case.
    """
    image = Path(image_path)
    model, origin = _from_image(image)
    if model is not None:
        return model
    looked = [str(image) + " (RPC metadata)"]
    for candidate in _sidecars(image):
        looked.append(str(candidate))
        if candidate.is_file():
            return read_rpc(candidate).with_origin(*origin, source=str(candidate))
    # DIMAP products name images IMG_<core>_R1C1.* beside RPC_<core>.XML.
    beside = sorted(set(image.parent.glob("RPC_*.XML")) | set(image.parent.glob("RPC_*.xml")))
    dimap = [p for p in beside if p.stem[4:] and p.stem[4:] in image.stem]
    looked.append(str(image.parent / "RPC_<core>.XML") + f" with <core> in {image.stem!r}")
    if len(dimap) == 1:
        return read_rpc(dimap[0]).with_origin(*origin, source=str(dimap[0]))
    if len(dimap) > 1:
        raise RpcFormatError(
            f"{image}: no RPC of its own and {len(dimap)} DIMAP RPC files match its name "
            f"({', '.join(p.name for p in dimap)}); expected one, or a same-stem .geom"
        )
    if beside:
        looked.append(f"(not matching: {', '.join(p.name for p in beside)})")
    raise RpcFormatError(f"{image}: no RPC found; looked for {', '.join(looked)}")


# --------------------------------------------------------------- writers
def _fmt(value: float) -> str:
    return repr(float(value))


def _product_fields(model: RpcModel) -> dict[str, Any]:
    return {key: getattr(model, field) for key, field in _FIELDS.items()}


def write_geom(model: RpcModel, path: PathLike) -> Path:
    """Write the *product* model as an OSSIM ``.geom`` keyword list (origin not written)."""
    fields = _product_fields(model)
    lines = ["type:  ossimRpcModel", "polynomial_format:  B"]
    for key in SCALAR_KEYS:
        lines.append(f"{_GEOM_KEYS[key]}:  {_fmt(fields[key])}")
    for key in COEFF_KEYS:
        lines.extend(f"{_GEOM_KEYS[key]}{i:02d}:  {_fmt(c)}" for i, c in enumerate(fields[key]))
    out = Path(path)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def write_rpb(model: RpcModel, path: PathLike) -> Path:
    """Write the *product* model as a DigitalGlobe ``.RPB`` (GDAL reads it as a sidecar)."""
    fields = _product_fields(model)
    lines = ['satId = "UNKNOWN";', 'bandId = "P";', 'SpecId = "RPC00B";',
             "BEGIN_GROUP = IMAGE", "\terrBias = 0.0;", "\terrRand = 0.0;"]
    for key in SCALAR_KEYS:
        lines.append(f"\t{_RPB_KEYS[key]} = {_fmt(fields[key])};")
    for key in COEFF_KEYS:
        body = ",\n".join(f"\t\t\t{_fmt(c)}" for c in fields[key])
        lines.append(f"\t{_RPB_KEYS[key]} = (\n{body});")
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
