"""The campaign spec: what to process, where the data is, and under which limits.

A campaign file is YAML (or the same structure as a dict)::

    name: provence-2025
    inputs:
      scenes:                       # explicit scenes ...
        - {id: s1, footprint: [5.0, 44.0, 5.25, 44.18], rows: 40000, cols: 40000}
      pairs: [[s1, s2]]             # stereo pairs by scene id
      survey:                       # ... or a generated survey of stereo pairs
        pairs: 240
        bbox: [4.6, 43.4, 6.6, 44.6]   # lon_min, lat_min, lon_max, lat_max
        scene_km: 20
      stac: items.json              # ... or a STAC ItemCollection of scenes
    products:
      ortho: {gsd_m: 0.5}
      dsm: {gsd_m: 1.0}
    tiling: {tile_px: 4096, margin_px: 64}
    data: {region: eu-west-3, bucket: eo-raw}
    deadline_h: 24
    budget_usd: 1500
    objective: cheapest             # cheapest | fastest | weighted
    weight_usd_per_h: 0             # only for objective: weighted
    compute:
      regions: [eu-west-3, eu-west-1]
      families: [c7g, m7g, r7g, c7i, m7i, r7i]
      markets: [spot, on-demand]
      startup_s: 180
      interruption_scale: 1       # x the Spot Advisor's hazard (stress tests)
    quotas: {on_demand_vcpus: 1024, spot_vcpus: 2048, max_instances_per_type: 64}

Everything is validated up front: an error names the key path, the bad value
and what was expected, with "did you mean" for misspelt keys, regions and
instance families (:func:`validate_against_catalog` checks the latter two
against a price catalog).
"""

from __future__ import annotations

import difflib
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from planner.errors import CampaignError

PRODUCT_KINDS = ("ortho", "dsm")
OBJECTIVES = ("cheapest", "fastest", "weighted")
MARKETS = ("spot", "on-demand")
#: Pléiades primary products: 0.5 m panchromatic (0.7 m native), 20 km swath.
PLEIADES_GSD_M = 0.5
M_PER_DEG_LAT = 110_574.0
M_PER_DEG_LON_EQUATOR = 111_320.0


@dataclass(frozen=True, slots=True)
class Scene:
    """One raw image: lon/lat footprint (min/max) and size in sensor pixels."""

    id: str
    footprint: tuple[float, float, float, float]
    rows: int
    cols: int
    uri: str = ""

    @property
    def pixels(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True, slots=True)
class Pair:
    """A stereo pair, by scene id."""

    left: str
    right: str

    @property
    def id(self) -> str:
        return f"{self.left}+{self.right}"


@dataclass(frozen=True, slots=True)
class Product:
    """A product wanted (``ortho`` per scene, ``dsm`` per pair) at ``gsd_m``."""

    kind: str
    gsd_m: float


@dataclass(frozen=True, slots=True)
class Tiling:
    tile_px: int
    margin_px: int


@dataclass(frozen=True, slots=True)
class Compute:
    regions: tuple[str, ...]
    families: tuple[str, ...]
    markets: tuple[str, ...]
    startup_s: float
    interruption_scale: float = 1.0


@dataclass(frozen=True, slots=True)
class Quotas:
    """Account limits: vCPUs per region and market, instances per type and market."""

    on_demand_vcpus: int
    spot_vcpus: int
    max_instances_per_type: int


@dataclass(frozen=True, slots=True)
class Campaign:
    name: str
    scenes: tuple[Scene, ...]
    pairs: tuple[Pair, ...]
    products: tuple[Product, ...]
    tiling: Tiling
    data_region: str
    data_bucket: str
    deadline_h: float
    budget_usd: float | None
    objective: str
    weight_usd_per_h: float
    compute: Compute
    quotas: Quotas
    source: str = "<dict>"

    def product(self, kind: str) -> Product | None:
        return next((p for p in self.products if p.kind == kind), None)

    def scene(self, scene_id: str) -> Scene:
        for s in self.scenes:
            if s.id == scene_id:
                return s
        raise CampaignError(f"{self.source}: no scene with id {scene_id!r}")


def _suggest(value: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Reader:
    """Reads one mapping of the campaign, naming ``source: key.path`` in every error."""

    def __init__(self, data: object, path: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise CampaignError(f"{source}: {path or 'top level'} = {data!r}, expected a mapping")
        self.data: Mapping[str, Any] = data
        self.path = path
        self.source = source

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, value: object, expected: str, hint: str = "") -> CampaignError:
        return CampaignError(
            f"{self.source}: {self.key(name)} = {value!r}, expected {expected}{hint}"
        )

    def check_keys(self, allowed: Sequence[str]) -> None:
        for k in self.data:
            if k not in allowed:
                raise CampaignError(
                    f"{self.source}: unknown key {self.key(str(k))!r}, expected one of "
                    f"{', '.join(allowed)}{_suggest(str(k), allowed)}"
                )

    def get(self, name: str, default: object = ...) -> Any:
        if name not in self.data:
            if default is ...:
                raise CampaignError(f"{self.source}: missing key {self.key(name)!r}")
            return default
        return self.data[name]

    def number(self, name: str, default: object = ..., *, minimum: float = 0.0,
               strict: bool = True) -> float:
        value = self.get(name, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value < minimum or (strict and value == minimum):
            bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
            raise self.fail(name, value, f"a number {bound}")
        return float(value)

    def integer(self, name: str, default: object = ..., *, minimum: int = 1) -> int:
        value = self.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(name, value, f"an integer >= {minimum}")
        return value

    def text(self, name: str, default: object = ...) -> str:
        value = self.get(name, default)
        if not isinstance(value, str) or not value:
            raise self.fail(name, value, "a non-empty string")
        return value

    def choice(self, name: str, choices: Sequence[str], default: object = ...) -> str:
        value = self.get(name, default)
        if value not in choices:
            raise self.fail(name, value, f"one of {', '.join(choices)}",
                            _suggest(str(value), choices))
        return str(value)

    def strings(self, name: str, default: object = ...,
                choices: Sequence[str] | None = None) -> tuple[str, ...]:
        value = self.get(name, default)
        if isinstance(value, str) or not isinstance(value, Sequence) or not value:
            raise self.fail(name, value, "a non-empty list of strings")
        for v in value:
            if not isinstance(v, str):
                raise self.fail(name, value, "a non-empty list of strings")
            if choices is not None and v not in choices:
                raise self.fail(name, v, f"one of {', '.join(choices)}",
                                _suggest(v, choices))
        return tuple(value)

    def bbox(self, name: str) -> tuple[float, float, float, float]:
        value = self.get(name)
        expected = "[lon_min, lat_min, lon_max, lat_max] in degrees with min < max"
        if (isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           for v in value)):
            raise self.fail(name, value, expected)
        x0, y0, x1, y1 = (float(v) for v in value)
        if not (-180 <= x0 < x1 <= 180 and -90 <= y0 < y1 <= 90):
            raise self.fail(name, value, expected)
        return x0, y0, x1, y1

    def child(self, name: str, default: object = ...) -> _Reader:
        return _Reader(self.get(name, default), self.key(name), self.source)


def _scene(data: object, path: str, source: str) -> Scene:
    r = _Reader(data, path, source)
    r.check_keys(("id", "footprint", "rows", "cols", "uri"))
    return Scene(r.text("id"), r.bbox("footprint"), r.integer("rows"), r.integer("cols"),
                 str(r.get("uri", "")))


def survey_scenes(
    n_pairs: int, bbox: tuple[float, float, float, float], scene_km: float, seed: int = 0
) -> tuple[tuple[Scene, ...], tuple[Pair, ...]]:
    """A survey of ``n_pairs`` Pléiades-like stereo pairs tiling ``bbox``.

    Scenes are laid on a grid of ``scene_km`` squares (row-major, wrapping to
    a new pass over the area when the grid is full); the two views of a pair
    share a footprint up to a small seeded along-track shift, as a tri-stereo
    or a same-pass stereo acquisition would.
    """
    rng = random.Random(seed)
    x0, y0, x1, y1 = bbox
    lat_c = 0.5 * (y0 + y1)
    dlat = scene_km * 1000.0 / M_PER_DEG_LAT
    dlon = scene_km * 1000.0 / (M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat_c)))
    n_cols = max(1, int((x1 - x0) // dlon))
    n_rows = max(1, int((y1 - y0) // dlat))
    px = round(scene_km * 1000.0 / PLEIADES_GSD_M)
    scenes: list[Scene] = []
    pairs: list[Pair] = []
    for k in range(n_pairs):
        cell = k % (n_rows * n_cols)
        i, j = divmod(cell, n_cols)
        lon, lat = x0 + j * dlon, y1 - (i + 1) * dlat
        ids = []
        for view in ("a", "b"):
            shift = rng.uniform(-0.02, 0.02) * dlat
            sid = f"p{k:04d}{view}"
            scenes.append(Scene(sid, (lon, lat + shift, lon + dlon, lat + dlat + shift), px, px,
                                f"s3://survey/{sid}.tif"))
            ids.append(sid)
        pairs.append(Pair(ids[0], ids[1]))
    return tuple(scenes), tuple(pairs)


def _stac_scenes(path: Path, key: str, source: str) -> tuple[Scene, ...]:
    """Scenes of a STAC ItemCollection: ``id``, ``bbox`` and ``proj:shape`` per item."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CampaignError(f"{source}: {key} = {str(path)!r} cannot be read as JSON: {exc}")
    r = _Reader(doc, key, str(path))
    features = r.get("features")
    if not isinstance(features, list) or not features:
        raise r.fail("features", features, "a non-empty list of STAC items")
    scenes = []
    for n, item in enumerate(features):
        ir = _Reader(item, f"features[{n}]", str(path))
        props = ir.child("properties", {})
        shape = props.get("proj:shape")
        if (not isinstance(shape, list) or len(shape) != 2
                or not all(isinstance(v, int) and v > 0 for v in shape)):
            raise props.fail("proj:shape", shape, "[rows, cols] positive integers")
        scenes.append(Scene(ir.text("id"), ir.bbox("bbox"), shape[0], shape[1],
                            str(item.get("assets", {}).get("image", {}).get("href", ""))))
    return tuple(scenes)


def _inputs(r: _Reader, base_dir: Path | None) -> tuple[tuple[Scene, ...], tuple[Pair, ...]]:
    r.check_keys(("scenes", "pairs", "survey", "stac"))
    scenes: list[Scene] = []
    pairs: list[Pair] = []
    if "survey" in r.data:
        s = r.child("survey")
        s.check_keys(("pairs", "bbox", "scene_km", "seed"))
        sc, pr = survey_scenes(s.integer("pairs"), s.bbox("bbox"),
                               s.number("scene_km", 20.0), s.integer("seed", 0, minimum=0))
        scenes += sc
        pairs += pr
    if "stac" in r.data:
        rel = Path(r.text("stac"))
        path = rel if rel.is_absolute() or base_dir is None else base_dir / rel
        scenes += _stac_scenes(path, r.key("stac"), r.source)
    raw_scenes = r.get("scenes", [])
    if not isinstance(raw_scenes, list):
        raise r.fail("scenes", raw_scenes, "a list of scenes")
    scenes += [_scene(d, f"{r.key('scenes')}[{n}]", r.source) for n, d in enumerate(raw_scenes)]
    ids = [s.id for s in scenes]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise CampaignError(f"{r.source}: {r.key('scenes')} has duplicate scene ids {dup}")
    raw_pairs = r.get("pairs", [])
    if not isinstance(raw_pairs, list):
        raise r.fail("pairs", raw_pairs, "a list of [left_id, right_id]")
    known = set(ids)
    for n, p in enumerate(raw_pairs):
        key = f"{r.key('pairs')}[{n}]"
        if not (isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)):
            raise CampaignError(f"{r.source}: {key} = {p!r}, expected [left_id, right_id]")
        for sid in p:
            if sid not in known:
                raise CampaignError(
                    f"{r.source}: {key} names scene {sid!r}, expected a scene id of "
                    f"{r.key('scenes')}{_suggest(sid, known)}")
        pairs.append(Pair(p[0], p[1]))
    if not scenes:
        raise CampaignError(f"{r.source}: {r.path} lists no scenes; expected scenes, "
                            "survey or stac")
    return tuple(scenes), tuple(pairs)


def parse_campaign(data: object, source: str = "<dict>", base_dir: Path | None = None) -> Campaign:
    """Validate a campaign mapping (as loaded from YAML) into a :class:`Campaign`."""
    r = _Reader(data, "", source)
    r.check_keys(("name", "inputs", "products", "tiling", "data", "deadline_h", "budget_usd",
                  "objective", "weight_usd_per_h", "compute", "quotas"))
    scenes, pairs = _inputs(r.child("inputs"), base_dir)
    pr = r.child("products")
    pr.check_keys(PRODUCT_KINDS)
    products = []
    for kind in PRODUCT_KINDS:
        if kind in pr.data:
            p = pr.child(kind)
            p.check_keys(("gsd_m",))
            products.append(Product(kind, p.number("gsd_m")))
    if not products:
        raise pr.fail("", dict(pr.data), f"at least one of {', '.join(PRODUCT_KINDS)}")
    if any(p.kind == "dsm" for p in products) and not pairs:
        raise CampaignError(f"{source}: products.dsm needs stereo pairs but inputs lists none")
    t = r.child("tiling", {})
    t.check_keys(("tile_px", "margin_px"))
    tiling = Tiling(t.integer("tile_px", 4096, minimum=16),
                    t.integer("margin_px", 64, minimum=0))
    d = r.child("data")
    d.check_keys(("region", "bucket"))
    objective = r.choice("objective", OBJECTIVES, "cheapest")
    weight = r.number("weight_usd_per_h", 0.0, strict=False)
    if objective == "weighted" and weight == 0.0:
        raise r.fail("weight_usd_per_h", weight, "a number > 0 with objective: weighted")
    budget = r.get("budget_usd", None)
    c = r.child("compute")
    c.check_keys(("regions", "families", "markets", "startup_s", "interruption_scale"))
    compute = Compute(c.strings("regions"), c.strings("families"),
                      c.strings("markets", list(MARKETS), MARKETS),
                      c.number("startup_s", 180.0, strict=False),
                      c.number("interruption_scale", 1.0, strict=False))
    q = r.child("quotas", {})
    q.check_keys(("on_demand_vcpus", "spot_vcpus", "max_instances_per_type"))
    quotas = Quotas(q.integer("on_demand_vcpus", 1024), q.integer("spot_vcpus", 2048),
                    q.integer("max_instances_per_type", 64))
    return Campaign(
        name=r.text("name"),
        scenes=scenes,
        pairs=pairs,
        products=tuple(products),
        tiling=tiling,
        data_region=d.text("region"),
        data_bucket=d.text("bucket"),
        deadline_h=r.number("deadline_h"),
        budget_usd=None if budget is None else r.number("budget_usd"),
        objective=objective,
        weight_usd_per_h=weight,
        compute=compute,
        quotas=quotas,
        source=source,
    )


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise CampaignError(f"campaign file {str(p)!r} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise CampaignError(f"campaign file {str(p)!r} is not valid YAML: {exc}") from exc
    return parse_campaign(data, str(p), p.parent)


class KnownNames(Protocol):
    """What campaign validation needs from a price catalog."""

    @property
    def regions(self) -> tuple[str, ...]: ...

    @property
    def families(self) -> tuple[str, ...]: ...

    @property
    def type_names(self) -> tuple[str, ...]: ...


def validate_against_catalog(campaign: Campaign, catalog: KnownNames) -> None:
    """Check regions and families exist in the catalog, with "did you mean"."""
    src = campaign.source
    for key, values in (("data.region", (campaign.data_region,)),
                        ("compute.regions", campaign.compute.regions)):
        for v in values:
            if v not in catalog.regions:
                raise CampaignError(
                    f"{src}: {key} = {v!r}, expected a region of the price catalog "
                    f"({', '.join(catalog.regions)}){_suggest(v, catalog.regions)}")
    known = (*catalog.families, *catalog.type_names)
    for v in campaign.compute.families:
        if v not in known:
            raise CampaignError(
                f"{src}: compute.families = {v!r}, expected an instance family or type of the "
                f"price catalog ({', '.join(catalog.families)}){_suggest(v, known)}")
