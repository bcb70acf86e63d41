"""RPC text containers: parsers from each format's keys to :class:`RpcModel`.

Each parser takes the file's text and a ``source`` name (for messages) and
returns the product model, 0-based offsets with integer values at pixel
centres. :mod:`ops.sensor.rpc_io` picks the parser by file name or content; the
formats and their keys are listed there.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from ops.errors import RpcFormatError
from ops.sensor.rpc import RpcModel

#: Canonical (GDAL RPC metadata) keys, in RpcModel field order.
SCALAR_KEYS = (
    "LINE_OFF", "SAMP_OFF", "LAT_OFF", "LONG_OFF", "HEIGHT_OFF",
    "LINE_SCALE", "SAMP_SCALE", "LAT_SCALE", "LONG_SCALE", "HEIGHT_SCALE",
)
COEFF_KEYS = ("LINE_NUM_COEFF", "LINE_DEN_COEFF", "SAMP_NUM_COEFF", "SAMP_DEN_COEFF")
FIELDS = {
    "LINE_OFF": "line_off", "SAMP_OFF": "samp_off", "LAT_OFF": "lat_off",
    "LONG_OFF": "lon_off", "HEIGHT_OFF": "height_off", "LINE_SCALE": "line_scale",
    "SAMP_SCALE": "samp_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "lon_scale",
    "HEIGHT_SCALE": "height_scale", "LINE_NUM_COEFF": "line_num",
    "LINE_DEN_COEFF": "line_den", "SAMP_NUM_COEFF": "samp_num", "SAMP_DEN_COEFF": "samp_den",
}
#: RPC00A term i goes to RPC00B position _A_TO_B[i] (A has LPH at 7, B at 10).
_A_TO_B = (0, 1, 2, 3, 4, 5, 6, 10, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19)

GEOM_KEYS = {
    "LINE_OFF": "line_off", "SAMP_OFF": "samp_off", "LAT_OFF": "lat_off",
    "LONG_OFF": "long_off", "HEIGHT_OFF": "height_off", "LINE_SCALE": "line_scale",
    "SAMP_SCALE": "samp_scale", "LAT_SCALE": "lat_scale", "LONG_SCALE": "long_scale",
    "HEIGHT_SCALE": "height_scale", "LINE_NUM_COEFF": "line_num_coeff_",
    "LINE_DEN_COEFF": "line_den_coeff_", "SAMP_NUM_COEFF": "samp_num_coeff_",
    "SAMP_DEN_COEFF": "samp_den_coeff_",
}
RPB_KEYS = {
    "LINE_OFF": "lineOffset", "SAMP_OFF": "sampOffset", "LAT_OFF": "latOffset",
    "LONG_OFF": "longOffset", "HEIGHT_OFF": "heightOffset", "LINE_SCALE": "lineScale",
    "SAMP_SCALE": "sampScale", "LAT_SCALE": "latScale", "LONG_SCALE": "longScale",
    "HEIGHT_SCALE": "heightScale", "LINE_NUM_COEFF": "lineNumCoef",
    "LINE_DEN_COEFF": "lineDenCoef", "SAMP_NUM_COEFF": "sampNumCoef",
    "SAMP_DEN_COEFF": "sampDenCoef",
}
_DG_XML_KEYS = {k: v.upper() for k, v in RPB_KEYS.items()}
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


def build_model(
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
        kwargs[FIELDS[key]] = _float(fields[key], names[key], source)
    for key in COEFF_KEYS:
        coeffs = _floats(fields[key], names[key], source)
        if rpc00a:
            reordered = [0.0] * 20
            for i, c in enumerate(coeffs):
                reordered[_A_TO_B[i]] = c
            coeffs = tuple(reordered)
        kwargs[FIELDS[key]] = coeffs
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
        if GEOM_KEYS[key] in kv:
            fields[key] = kv[GEOM_KEYS[key]]
    for key in COEFF_KEYS:
        prefix = GEOM_KEYS[key]
        values = [kv[f"{prefix}{i:02d}"] for i in range(20) if f"{prefix}{i:02d}" in kv]
        if values:
            fields[key] = values
    names = {k: (v + "00..19" if k in COEFF_KEYS else v) for k, v in GEOM_KEYS.items()}
    fmt = kv.get("polynomial_format", "B").strip().upper()
    if fmt not in ("A", "B"):
        raise RpcFormatError(
            f"{source}: key polynomial_format = {fmt!r}, expected 'A' or 'B' (RPC00A/RPC00B)"
        )
    return build_model(fields, names, source, rpc00a=fmt == "A")


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
    names = {k: (k + "_1..20" if k in COEFF_KEYS else k) for k in FIELDS}
    return build_model(fields, names, source)


def parse_rpb(text: str, source: str) -> RpcModel:
    """DigitalGlobe ``.RPB`` (ODL ``key = value;``, lists in parentheses)."""
    kv = {m.group(1): m.group(2) for m in re.finditer(r"(\w+)\s*=\s*(\([^)]*\)|[^;]*);", text)}
    fields = {k: kv[v] for k, v in RPB_KEYS.items() if v in kv}
    return build_model(fields, RPB_KEYS, source)


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
                 for k in FIELDS}
        return build_model(fields, names, source, one_based=True)
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
        return build_model(fields, {k: f"RPB/IMAGE/{v}" for k, v in _DG_XML_KEYS.items()}, source)
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
        return build_model(upper, {k: k for k in FIELDS}, source)
    fields = {k: data[v] for k, v in _JSON_KEYS.items() if v in data}
    return build_model(fields, _JSON_KEYS, source)
