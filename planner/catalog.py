"""The price catalog: instance types, their prices per region and market, transfer prices.

Prices are data, not code (SkyPilot's catalog split): ``planner/data/aws_catalog.json``
is shipped with the package and states its date and sources; an adapter
(``scheduler.cloud.aws_catalog``, boto3) fetches fresh figures and
:func:`refresh_catalog` merges them here, so this module never calls a cloud.

Spot risk comes from the Spot Instance Advisor's frequency-of-interruption
band, taken at its middle; :mod:`planner.spot` derives the per-instance hazard
and the pool model from it (``spot_model`` in the JSON), and
:mod:`planner.overheads` prices the cluster around the workers (``overheads``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from planner.config_loader import parse_json, read_text, short
from planner.errors import CatalogError, ConfigError
from planner.overheads import Overheads, overheads_from_dict
from planner.spot import SpotModel, spot_model_from_dict

MARKETS = ("spot", "on-demand")


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    family: str
    vcpus: int
    mem_gib: float
    arch: str
    category: str

    def __post_init__(self) -> None:
        if self.vcpus <= 0 or not self.mem_gib > 0:
            raise CatalogError(
                f"instance type {self.name!r}: vcpus={self.vcpus}, mem_gib={self.mem_gib}, "
                "expected both > 0")


@dataclass(frozen=True, slots=True)
class RegionPrice:
    on_demand_usd_per_h: float
    spot_usd_per_h: float | None
    interruption_band: str | None


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to buy compute: an instance type in a region on a market."""

    instance: InstanceType
    region: str
    market: str
    price_usd_per_h: float
    interruptions_per_h: float
    interruption_band: str

    @property
    def key(self) -> str:
        return f"{self.instance.name}/{self.region}/{self.market}"


@dataclass(frozen=True, slots=True)
class PriceCatalog:
    date: str
    sources: tuple[str, ...]
    instance_types: Mapping[str, InstanceType]
    prices: Mapping[str, Mapping[str, RegionPrice]]
    band_fraction: Mapping[str, float]
    internet_egress_usd_per_gb: Mapping[str, float]
    inter_region_usd_per_gb: Mapping[str, float]
    status: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    spot_model: SpotModel = field(default_factory=SpotModel)
    overheads: Overheads = field(default_factory=Overheads)

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(sorted(self.prices))

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(sorted({t.family for t in self.instance_types.values()}))

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.instance_types))

    def _region(self, region: str) -> Mapping[str, RegionPrice]:
        if region not in self.prices:
            close = difflib.get_close_matches(region, self.regions, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CatalogError(
                f"region {region!r} is not in the price catalog (dated {self.date}), expected "
                f"one of {', '.join(self.regions)}{hint}")
        return self.prices[region]

    def interruptions_per_h(self, band: str) -> float:
        if band not in self.band_fraction:
            raise CatalogError(
                f"interruption band {band!r} unknown, expected one of {sorted(self.band_fraction)}")
        return self.spot_model.hazard_per_h(self.band_fraction[band])

    def head_usd_per_h(self, region: str) -> float:
        """The head node's on-demand price in ``region`` (see :mod:`planner.overheads`)."""
        name = self.overheads.head_node_type
        table = self._region(region)
        if name not in table:
            raise CatalogError(f"overheads.head_node_type {name!r} has no price in {region!r}; "
                               f"expected one of {', '.join(sorted(table))}")
        return table[name].on_demand_usd_per_h

    def offers(
        self,
        regions: Iterable[str],
        families: Iterable[str],
        markets: Iterable[str] = MARKETS,
    ) -> list[Offer]:
        """Every (type, region, market) priced in the catalog; ``families`` may name types."""
        wanted = set(families)
        out: list[Offer] = []
        for region in regions:
            table = self._region(region)
            for name in sorted(table):
                itype = self.instance_types[name]
                if itype.family not in wanted and itype.name not in wanted:
                    continue
                price = table[name]
                for market in markets:
                    if market == "on-demand":
                        out.append(Offer(itype, region, market, price.on_demand_usd_per_h,
                                         0.0, "none"))
                    elif price.spot_usd_per_h is not None and price.interruption_band:
                        out.append(Offer(itype, region, market, price.spot_usd_per_h,
                                         self.interruptions_per_h(price.interruption_band),
                                         price.interruption_band))
        return out

    def transfer_usd_per_gb(self, src_region: str, dst_region: str) -> float:
        """Moving data out of ``src_region`` into ``dst_region`` (free within a region)."""
        if src_region == dst_region:
            return 0.0
        self._region(src_region)
        return float(self.inter_region_usd_per_gb.get(src_region, 0.02))


def _f(d: Mapping[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise CatalogError(f"{where}.{key} = {v!r}, expected a non-negative number")
    return float(v)


def catalog_from_dict(doc: Mapping[str, Any], source: str = "<dict>") -> PriceCatalog:
    """Validate the JSON structure of ``aws_catalog.json``."""
    for key in ("date", "sources", "instance_types", "prices", "interruption_bands", "transfer"):
        if key not in doc:
            raise CatalogError(f"{source}: missing key {key!r}")
    types: dict[str, InstanceType] = {}
    for name, t in doc["instance_types"].items():
        where = f"{source}: instance_types.{name}"
        types[name] = InstanceType(name, str(t["family"]), int(_f(t, "vcpus", where)),
                                   _f(t, "mem_gib", where), str(t.get("arch", "x86_64")),
                                   str(t.get("category", "general")))
    bands = {str(k): float(v) for k, v in doc["interruption_bands"].items()}
    prices: dict[str, dict[str, RegionPrice]] = {}
    for region, table in doc["prices"].items():
        prices[region] = {}
        for name, p in table.items():
            where = f"{source}: prices.{region}.{name}"
            if name not in types:
                raise CatalogError(f"{where}: type not listed in instance_types")
            band = p.get("interruption_band")
            if band is not None and band not in bands:
                raise CatalogError(f"{where}.interruption_band = {band!r}, expected one of "
                                   f"{sorted(bands)}")
            spot = p.get("spot_usd_per_h")
            prices[region][name] = RegionPrice(
                _f(p, "on_demand_usd_per_h", where),
                None if spot is None else _f(p, "spot_usd_per_h", where), band)
    transfer = doc["transfer"]
    return PriceCatalog(
        date=str(doc["date"]),
        sources=tuple(str(s) for s in doc["sources"]),
        instance_types=types,
        prices=prices,
        band_fraction=bands,
        internet_egress_usd_per_gb=dict(transfer["internet_egress_usd_per_gb"]),
        inter_region_usd_per_gb=dict(transfer["inter_region_usd_per_gb"]),
        status=str(doc.get("status", "")),
        spot_model=spot_model_from_dict(doc.get("spot_model"), source),
        overheads=overheads_from_dict(doc.get("overheads"), source),
    )


def catalog_to_dict(catalog: PriceCatalog) -> dict[str, Any]:
    """The JSON structure of a catalog (inverse of :func:`catalog_from_dict`)."""
    return {
        "date": catalog.date,
        "status": catalog.status,
        "sources": list(catalog.sources),
        "interruption_bands": dict(catalog.band_fraction),
        "instance_types": {
            n: {"family": t.family, "vcpus": t.vcpus, "mem_gib": t.mem_gib, "arch": t.arch,
                "category": t.category} for n, t in sorted(catalog.instance_types.items())},
        "prices": {
            r: {n: {"on_demand_usd_per_h": p.on_demand_usd_per_h,
                    "spot_usd_per_h": p.spot_usd_per_h,
                    "interruption_band": p.interruption_band} for n, p in sorted(t.items())}
            for r, t in sorted(catalog.prices.items())},
        "transfer": {"internet_egress_usd_per_gb": dict(catalog.internet_egress_usd_per_gb),
                     "inter_region_usd_per_gb": dict(catalog.inter_region_usd_per_gb),
                     "same_region_usd_per_gb": 0.0},
        "spot_model": {k: getattr(catalog.spot_model, k)
                       for k in SpotModel.__dataclass_fields__},
        "overheads": {k: getattr(catalog.overheads, k) for k in Overheads.__dataclass_fields__},
    }


def read_data_file(shipped: str, path: str | Path | None, what: str) -> tuple[str, str]:
    """(text, source) of the file shipped as ``planner/data/<shipped>``, or of ``path``."""
    if path is None:
        return (resources.files("planner").joinpath(f"data/{shipped}").read_text(),
                f"planner/data/{shipped}")
    try:
        return read_text(path, what), str(path)
    except ConfigError as exc:  # unreadable, not UTF-8, too large
        raise CatalogError(str(exc)) from exc


def load_catalog(path: str | Path | None = None) -> PriceCatalog:
    """The shipped catalog, or the JSON file at ``path``."""
    text, source = read_data_file("aws_catalog.json", path, "price catalog")
    try:
        doc = parse_json(text, f"price catalog {source!r}")
    except ConfigError as exc:
        raise CatalogError(str(exc)) from exc
    if not isinstance(doc, Mapping):
        raise CatalogError(f"price catalog {source!r} holds {short(doc)}, expected a JSON object")
    try:
        return catalog_from_dict(doc, source)
    except CatalogError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CatalogError(f"price catalog {source!r} is malformed ({short(exc)}); expected the "
                           "structure of planner/data/aws_catalog.json") from exc


@dataclass(frozen=True, slots=True)
class TypeInfo:
    """What a cloud API says about an instance type."""

    name: str
    vcpus: int
    mem_gib: float
    arch: str


class CatalogSource(Protocol):
    """A cloud's pricing APIs (the boto3 implementation lives in ``scheduler.cloud.aws_catalog``)."""

    def instance_types(self, region: str, names: Sequence[str]) -> list[TypeInfo]: ...

    def spot_prices_usd_per_h(self, region: str, names: Sequence[str]) -> dict[str, float]: ...

    def on_demand_prices_usd_per_h(
        self, region: str, names: Sequence[str]) -> dict[str, float]: ...


def refresh_catalog(
    base: PriceCatalog, source: CatalogSource, regions: Sequence[str], date: str
) -> PriceCatalog:
    """``base`` with the figures ``source`` reports for ``regions`` replacing its own.

    Types the source does not describe keep the base figures; bands (which no
    API exposes) are kept from the base.
    """
    types = dict(base.instance_types)
    prices = {r: dict(t) for r, t in base.prices.items()}
    for region in regions:
        names = sorted(base._region(region))
        for info in source.instance_types(region, names):
            if info.name in types:
                types[info.name] = replace(types[info.name], vcpus=info.vcpus,
                                           mem_gib=info.mem_gib, arch=info.arch)
        spot = source.spot_prices_usd_per_h(region, names)
        od = source.on_demand_prices_usd_per_h(region, names)
        for name in names:
            old = prices[region][name]
            prices[region][name] = RegionPrice(
                od.get(name, old.on_demand_usd_per_h),
                spot.get(name, old.spot_usd_per_h),
                old.interruption_band)
    note = f"refreshed {date} for {', '.join(regions)}"
    return replace(base, date=date, instance_types=types, prices=prices,
                   sources=(*base.sources, f"AWS APIs via boto3 ({note})"),
                   status=note)
