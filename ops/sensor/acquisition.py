"""When an image was acquired: the time span its metadata states, wherever it states it.

Products are dated by their inputs' acquisition, never by processing time.
The span is read, first found first taken, from:

1. the image's own GDAL metadata: ``EOCHAIN_ACQUISITION_START``/``_END``,
   then ``IMAGING_DATE`` + ``IMAGING_TIME`` (DIMAP, as Pléiades and SPOT
   TIFFs carry them), then ``ACQUISITION_DATETIME`` or ``ACQUISITION_DATE``
   (+ ``ACQUISITION_TIME``);
2. a same-stem OSSIM ``.geom`` sidecar: ``support_data.time_range_start`` /
   ``time_range_end``, else ``support_data.image_date``;
3. a same-stem XML sidecar: DigitalGlobe ``EARLIESTACQTIME`` /
   ``LATESTACQTIME`` (or ``FIRSTLINETIME``), or DIMAP ``IMAGING_DATE`` +
   ``IMAGING_TIME``.

Times without a zone are taken as UTC (every one of these formats is UTC).
An image whose metadata states no time has no :class:`Acquisition`; a
stated but unreadable time is an error naming the file, key and value.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from ops.errors import AcquisitionError, RasterReadError


@dataclass(frozen=True, slots=True)
class Acquisition:
    """The UTC span over which an image (or a set of images) was acquired, and where it was read."""

    start: dt.datetime
    end: dt.datetime
    source: str

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise AcquisitionError(f"{self.source}: acquisition times must carry a time zone")
        if self.end < self.start:
            raise AcquisitionError(
                f"{self.source}: acquisition ends ({self.end.isoformat()}) before it starts "
                f"({self.start.isoformat()})"
            )


def parse_time(text: str, where: str) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime (no zone: UTC)."""
    value = text.strip()
    # Python reads at most 6 fractional digits; OSSIM writes 7.
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise AcquisitionError(
            f"{where} = {text!r} is not an ISO 8601 date or date-time; expected e.g. "
            "'2013-08-05T10:42:19.4Z'"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _join(date: str, time: str | None) -> str:
    return f"{date.strip()}T{time.strip()}" if time and "T" not in date else date


def _from_tags(tags: Mapping[str, str], source: str) -> Acquisition | None:
    def get(key: str) -> str | None:
        value = tags.get(key)
        return value if value and value.strip() else None

    spans: list[tuple[str | None, str | None, str]] = [
        (get("EOCHAIN_ACQUISITION_START"), get("EOCHAIN_ACQUISITION_END"),
         "EOCHAIN_ACQUISITION_START"),
    ]
    for date_key, time_key in (("IMAGING_DATE", "IMAGING_TIME"),
                               ("ACQUISITION_DATETIME", None),
                               ("ACQUISITION_DATE", "ACQUISITION_TIME")):
        date = get(date_key)
        if date is not None:
            when = _join(date, get(time_key) if time_key else None)
            spans.append((when, None, date_key))
    for start, end, key in spans:
        if start is not None:
            t0 = parse_time(start, f"{source}: tag {key}")
            t1 = parse_time(end, f"{source}: tag EOCHAIN_ACQUISITION_END") if end else t0
            return Acquisition(t0, t1, f"{source} ({key})")
    return None


def _from_geom(path: Path) -> Acquisition | None:
    fields: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().startswith("support_data."):
            fields[key.strip()] = value.strip()
    start = fields.get("support_data.time_range_start")
    end = fields.get("support_data.time_range_end")
    if start:
        t0 = parse_time(start, f"{path}: support_data.time_range_start")
        t1 = parse_time(end, f"{path}: support_data.time_range_end") if end else t0
        return Acquisition(t0, t1, f"{path} (time_range)")
    date = fields.get("support_data.image_date")
    if date:
        t = parse_time(date, f"{path}: support_data.image_date")
        return Acquisition(t, t, f"{path} (image_date)")
    return None


def _xml_value(text: str, tag: str) -> str | None:
    found = re.search(rf"<{tag}>\s*([^<]+?)\s*</{tag}>", text)
    return found.group(1) if found else None


def _from_xml(path: Path) -> Acquisition | None:
    text = path.read_text(errors="replace")
    first = _xml_value(text, "EARLIESTACQTIME") or _xml_value(text, "FIRSTLINETIME")
    if first is not None:
        t0 = parse_time(first, f"{path}: <EARLIESTACQTIME>")
        last = _xml_value(text, "LATESTACQTIME")
        t1 = parse_time(last, f"{path}: <LATESTACQTIME>") if last else t0
        return Acquisition(t0, max(t0, t1), f"{path} (DigitalGlobe)")
    date = _xml_value(text, "IMAGING_DATE")
    if date is not None:
        t = parse_time(_join(date, _xml_value(text, "IMAGING_TIME")), f"{path}: <IMAGING_DATE>")
        return Acquisition(t, t, f"{path} (DIMAP)")
    return None


def _sidecars(image: Path) -> Iterable[tuple[Path, str]]:
    for suffix in (".geom", ".GEOM"):
        yield image.with_suffix(suffix), "geom"
    for suffix in (".XML", ".xml"):
        yield image.with_suffix(suffix), "xml"


def read_acquisition(path: str | Path) -> Acquisition | None:
    """The acquisition span of the image at ``path`` (see the module docstring), or None."""
    try:
        with warnings.catch_warnings():
            # raw sensor images are not georeferenced (their RPC may be a sidecar)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                tags = src.tags()
    except RasterioError as exc:
        raise RasterReadError(f"{path}: cannot open as a raster ({exc}); expected an image") from exc
    found = _from_tags(tags, str(path))
    if found is not None:
        return found
    text = str(path)
    if "://" in text or text.startswith("/vsi"):
        return None
    for sidecar, kind in _sidecars(Path(path)):
        if sidecar.is_file():
            found = _from_geom(sidecar) if kind == "geom" else _from_xml(sidecar)
            if found is not None:
                return found
    return None


def span(acquisitions: Sequence[Acquisition | None]) -> Acquisition | None:
    """The span covering every input, or None when any input's time is unknown."""
    if not acquisitions or any(a is None for a in acquisitions):
        return None
    known = [a for a in acquisitions if a is not None]
    return Acquisition(min(a.start for a in known), max(a.end for a in known),
                       "; ".join(a.source for a in known))
