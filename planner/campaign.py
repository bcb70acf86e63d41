"""The campaign spec: what to process, where the data is, and under which limits.

A campaign file is YAML (or the same structure as a dict)::

    name: provence-2025
    inputs:
      scenes:                       # explicit scenes ...
        - {id: s1, footprint: [5.0, 44.0, 5.25, 44.18], rows: 40000, cols: 40000}
        - {uri: images/s2.tif}      # ... or by path: the rest is read from the file
      pairs: [[s1, s2]]             # stereo pairs by scene id
      survey:                       # ... or a generated survey of stereo pairs
        pairs: 240
        bbox: [4.6, 43.4, 6.6, 44.6]   # lon_min, lat_min, lon_max, lat_max
        scene_km: 20
      stac: items.json              # ... or a STAC ItemCollection ({href:, asset:})
    products:
      ortho: {gsd_m: 0.5}
      dsm: {gsd_m: 1.0}           # a DSM per pair; with views: [[s1, s2, s3]] also one
                                    # DSM per group of 3+ views, its pairs fused per cell
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

Only ``name``, ``inputs`` and ``products`` are required (a local run needs
nothing else). The cloud keys have stated defaults, listed in
:data:`DEFAULTS` and reported in :attr:`Campaign.defaults_used`:
``deadline_h`` 24, ``data.region`` the first of ``compute.regions`` (else
eu-west-3), ``data.bucket`` none, ``compute.regions`` [data.region],
``compute.families`` :data:`DEFAULT_FAMILIES`.

Everything is validated up front and every problem of a file is reported in
one message: each names the key path, the value (quoted shortened) and what
was expected, with "did you mean" for misspelt keys, regions and instance
families (:func:`validate_against_catalog` checks the latter two against a
price catalog). The file itself is read strictly
(:mod:`planner.config_loader`: UTF-8, no duplicate keys, aliases or deep
nesting). Scenes are read by :mod:`planner.scene_inputs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from planner.config_loader import load_yaml, short
from planner.config_reader import MappingReader, Problems, suggest
from planner.errors import CampaignError, ConfigError
from planner.scene_inputs import (
    M_PER_DEG_LAT,
    M_PER_DEG_LON_EQUATOR,
    PLEIADES_GSD_M,
    Pair,
    Scene,
    SceneFacts,
    SceneReader,
    read_inputs,
    survey_scenes,
)

__all__ = ["DEFAULTS", "M_PER_DEG_LAT", "M_PER_DEG_LON_EQUATOR", "PLEIADES_GSD_M", "Campaign",
           "Compute", "Pair", "Product", "Quotas", "Scene", "SceneFacts", "SceneReader",
           "Tiling", "campaign_name", "check_campaign", "load_campaign", "parse_campaign", "survey_scenes",
           "validate_against_catalog"]

PRODUCT_KINDS = ("ortho", "dsm")
OBJECTIVES = ("cheapest", "fastest", "weighted")
MARKETS = ("spot", "on-demand")
DEFAULT_REGION = "eu-west-3"
DEFAULT_FAMILIES = ("c7g", "m7g", "r7g", "c7i", "m7i", "r7i")
DEFAULT_DEADLINE_H = 24.0
#: The stated defaults of the keys a local run does not need.
DEFAULTS = {
    "deadline_h": f"{DEFAULT_DEADLINE_H:g} h",
    "data": f"region: first of compute.regions (else {DEFAULT_REGION}), no bucket",
    "compute": f"regions: [data.region], families: [{', '.join(DEFAULT_FAMILIES)}], "
               "markets: [spot, on-demand], startup_s: 180",
}
#: Smallest tile side accepted, in pixels (smaller tiles cost more in overhead than work).
MIN_TILE_PX = 64

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
    #: Top-level keys absent from the file, taken from :data:`DEFAULTS`.
    defaults_used: tuple[str, ...] = ()
    #: Groups of three or more scene ids, each one DSM fusing its pairs (``products.dsm.views``)
    view_groups: tuple[tuple[str, ...], ...] = ()

    def product(self, kind: str) -> Product | None:
        return next((p for p in self.products if p.kind == kind), None)

    def scene(self, scene_id: str) -> Scene:
        for s in self.scenes:
            if s.id == scene_id:
                return s
        raise CampaignError(f"{self.source}: no scene with id {scene_id!r}")


def parse_campaign(data: object, source: str = "<dict>", base_dir: Path | None = None, *,
                   reader: SceneReader | None = None, allow_large: bool = False,
                   unread_ok: bool = False) -> Campaign:
    """Validate a campaign mapping (as loaded from YAML) into a :class:`Campaign`.

    ``reader`` reads the facts of scenes given by path (see
    :mod:`planner.scene_inputs`); ``allow_large`` lifts the survey size limit;
    ``unread_ok`` leaves out the scenes that would need a reader (for
    :func:`check_campaign`). Every problem found is raised in one
    :class:`CampaignError`.
    """
    problems = Problems(source, CampaignError)
    r = MappingReader(data, "", problems)
    r.check_keys(("name", "inputs", "products", "tiling", "data", "deadline_h", "budget_usd",
                  "objective", "weight_usd_per_h", "compute", "quotas"))
    name = r.text("name")
    scenes, pairs = read_inputs(r.child("inputs"), base_dir, reader, allow_large, unread_ok)
    pr = r.child("products")
    pr.check_keys(PRODUCT_KINDS)
    products = []
    groups: tuple[tuple[str, ...], ...] = ()
    for kind in PRODUCT_KINDS:
        if pr.has(kind):
            p = pr.child(kind)
            p.check_keys(("gsd_m", "views") if kind == "dsm" else ("gsd_m",))
            products.append(Product(kind, p.number("gsd_m")))
            if kind == "dsm":
                groups = _view_groups(p, {s.id for s in scenes}, bool(scenes))
    if not products and not pr.broken:
        pr.fail("", dict(pr.data), f"at least one of {', '.join(PRODUCT_KINDS)}")
    if any(p.kind == "dsm" for p in products) and not pairs and not groups and (
            scenes or unread_ok):
        problems.add("products.dsm needs stereo pairs (inputs.pairs) or views "
                     "(products.dsm.views) but the file gives none")
    t = r.child("tiling", {})
    t.check_keys(("tile_px", "margin_px"))
    tiling = Tiling(t.integer("tile_px", 4096, minimum=MIN_TILE_PX),
                    t.integer("margin_px", 64, minimum=0))
    defaults = tuple(k for k in ("deadline_h", "data", "compute") if not r.has(k))
    c = r.child("compute", {})
    c.check_keys(("regions", "families", "markets", "startup_s", "interruption_scale"))
    d = r.child("data", {})
    d.check_keys(("region", "bucket"))
    regions = c.strings("regions") if c.has("regions") else None
    data_region = d.text("region") if d.has("region") else (regions or (DEFAULT_REGION,))[0]
    compute = Compute(regions or (data_region,),
                      c.strings("families", list(DEFAULT_FAMILIES)),
                      c.strings("markets", list(MARKETS), MARKETS),
                      c.number("startup_s", 180.0, strict=False),
                      c.number("interruption_scale", 1.0, strict=False))
    objective = r.choice("objective", OBJECTIVES, "cheapest")
    weight = r.number("weight_usd_per_h", 0.0, strict=False)
    if objective == "weighted" and weight == 0.0:
        r.fail("weight_usd_per_h", weight, "a number > 0 with objective: weighted")
    q = r.child("quotas", {})
    q.check_keys(("on_demand_vcpus", "spot_vcpus", "max_instances_per_type"))
    quotas = Quotas(q.integer("on_demand_vcpus", 1024), q.integer("spot_vcpus", 2048),
                    q.integer("max_instances_per_type", 64))
    deadline_h = r.number("deadline_h", DEFAULT_DEADLINE_H)
    budget = r.number("budget_usd") if r.get("budget_usd", None) is not None else None
    problems.raise_if_any()
    return Campaign(
        name=name,
        scenes=scenes,
        pairs=pairs,
        products=tuple(products),
        tiling=tiling,
        data_region=data_region,
        data_bucket=d.text("bucket") if d.has("bucket") else "",
        deadline_h=deadline_h,
        budget_usd=budget,
        objective=objective,
        weight_usd_per_h=weight,
        compute=compute,
        quotas=quotas,
        source=source,
        defaults_used=defaults,
        view_groups=groups,
    )


def _view_groups(r: MappingReader, known: set[str], check_ids: bool
                 ) -> tuple[tuple[str, ...], ...]:
    """``products.dsm.views``: groups of three or more distinct scene ids."""
    raw = r.get("views", [])
    expected = "a list of groups of three or more scene ids, e.g. [[s1, s2, s3]]"
    if not isinstance(raw, list):
        r.fail("views", raw, expected)
        return ()
    groups = []
    for n, g in enumerate(raw):
        key = f"{r.key('views')}[{n}]"
        if not (isinstance(g, list) and len(g) >= 3 and all(isinstance(v, str) for v in g)
                and len(set(g)) == len(g)):
            r.problems.add(f"{key} = {short(g)}, expected {expected} (each id once)")
            continue
        unknown = [v for v in g if v not in known]
        if unknown and check_ids:
            r.problems.add(f"{key} names scenes {unknown}, expected scene ids of inputs.scenes"
                           f"{suggest(unknown[0], known)}")
            continue
        groups.append(tuple(g))
    return tuple(groups)


def load_campaign(path: str | Path, *, reader: SceneReader | None = None,
                  allow_large: bool = False) -> Campaign:
    """Read a campaign YAML file strictly and validate it (see :func:`parse_campaign`)."""
    p = Path(path)
    try:
        data = load_yaml(p, "campaign file")
    except ConfigError as exc:
        raise CampaignError(str(exc)) from exc
    return parse_campaign(data, str(p), p.parent, reader=reader, allow_large=allow_large)


def check_campaign(path: str | Path, *, allow_large: bool = False) -> None:
    """Every check :func:`load_campaign` makes that needs no image read (``eochain submit``).

    Scenes given by ``uri`` only are left to the command that runs the
    campaign, where their files are.
    """
    p = Path(path)
    try:
        data = load_yaml(p, "campaign file")
    except ConfigError as exc:
        raise CampaignError(str(exc)) from exc
    parse_campaign(data, str(p), p.parent, allow_large=allow_large, unread_ok=True)


def campaign_name(path: str | Path) -> str:
    """The ``name`` of a campaign file (read strictly), without reading its scenes."""
    try:
        data = load_yaml(path, "campaign file")
    except ConfigError as exc:
        raise CampaignError(str(exc)) from exc
    problems = Problems(str(path), CampaignError)
    name = MappingReader(data, "", problems).text("name")
    problems.raise_if_any()
    return name


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
                    f"({', '.join(catalog.regions)}){suggest(v, catalog.regions)}")
    known = (*catalog.families, *catalog.type_names)
    for v in campaign.compute.families:
        if v not in known:
            raise CampaignError(
                f"{src}: compute.families = {v!r}, expected an instance family or type of the "
                f"price catalog ({', '.join(catalog.families)}){suggest(v, known)}")
