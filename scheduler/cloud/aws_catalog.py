"""The AWS implementation of :class:`planner.catalog.CatalogSource`, through boto3.

- instance types: ``ec2.describe_instance_types`` (vCPUs, memory, architecture);
- spot prices: ``ec2.describe_spot_price_history`` over the last ``days``
  (Linux/UNIX); the typical price is the median over availability zones of
  each zone's median price in the window;
- on-demand prices: the Price List API (``pricing.get_products``, served from
  us-east-1), Linux, shared tenancy, no pre-installed software, "Used" capacity.

:func:`refresh` merges them into a catalog (``planner.catalog.refresh_catalog``)
and writes the JSON. Interruption bands come from the Spot Instance Advisor,
which has no API: they are kept from the base catalog. Every failure is a
``CatalogError`` naming the AWS call, the region and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from planner.catalog import (
    PriceCatalog,
    TypeInfo,
    catalog_to_dict,
    load_catalog,
    refresh_catalog,
)
from planner.errors import CatalogError

PRICING_REGION = "us-east-1"
ARCH = {"arm64": "arm64", "x86_64": "x86_64", "i386": "x86_64", "x86_64_mac": "x86_64"}


class AwsCatalogSource:
    """Reads the AWS APIs; ``endpoint_url`` points every client at one server (tests: moto)."""

    def __init__(self, session: boto3.session.Session | None = None, *,
                 endpoint_url: str | None = None, days: int = 30,
                 now: dt.datetime | None = None) -> None:
        self.session = session or boto3.session.Session()
        self.endpoint_url = endpoint_url
        self.days = days
        self.now = now or dt.datetime.now(dt.UTC)

    def _client(self, service: str, region: str) -> Any:
        return self.session.client(service, region_name=region, endpoint_url=self.endpoint_url)

    def instance_types(self, region: str, names: Sequence[str]) -> list[TypeInfo]:
        ec2 = self._client("ec2", region)
        out: list[TypeInfo] = []
        for start in range(0, len(names), 100):
            chunk = list(names[start:start + 100])
            try:
                resp = ec2.describe_instance_types(InstanceTypes=chunk)
            except (ClientError, BotoCoreError) as exc:
                raise CatalogError(f"ec2.describe_instance_types in {region} for {len(chunk)} "
                                   f"types failed: {exc}") from exc
            for t in resp.get("InstanceTypes", []):
                archs = t.get("ProcessorInfo", {}).get("SupportedArchitectures", ["x86_64"])
                out.append(TypeInfo(t["InstanceType"], int(t["VCpuInfo"]["DefaultVCpus"]),
                                    float(t["MemoryInfo"]["SizeInMiB"]) / 1024.0,
                                    ARCH.get(archs[0], archs[0])))
        return out

    def spot_prices_usd_per_h(self, region: str, names: Sequence[str]) -> dict[str, float]:
        ec2 = self._client("ec2", region)
        per_zone: dict[str, dict[str, list[float]]] = {}
        try:
            pages = ec2.get_paginator("describe_spot_price_history").paginate(
                InstanceTypes=list(names), ProductDescriptions=["Linux/UNIX (Amazon VPC)"],
                StartTime=self.now - dt.timedelta(days=self.days), EndTime=self.now)
            for page in pages:
                for rec in page.get("SpotPriceHistory", []):
                    zones = per_zone.setdefault(rec["InstanceType"], {})
                    zones.setdefault(rec["AvailabilityZone"], []).append(float(rec["SpotPrice"]))
        except (ClientError, BotoCoreError) as exc:
            raise CatalogError(f"ec2.describe_spot_price_history in {region} failed: {exc}"
                               ) from exc
        return {name: statistics.median(statistics.median(v) for v in zones.values())
                for name, zones in per_zone.items() if zones}

    def on_demand_prices_usd_per_h(self, region: str, names: Sequence[str]
                                   ) -> dict[str, float]:
        pricing = self._client("pricing", PRICING_REGION)
        out: dict[str, float] = {}
        for name in names:
            filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in (
                ("instanceType", name), ("regionCode", region), ("operatingSystem", "Linux"),
                ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used"))]
            try:
                resp = pricing.get_products(ServiceCode="AmazonEC2", Filters=filters,
                                            MaxResults=10)
            except (ClientError, BotoCoreError) as exc:
                raise CatalogError(f"pricing.get_products (AmazonEC2, {name}, {region}) "
                                   f"failed: {exc}") from exc
            price = _on_demand_usd(resp.get("PriceList", []))
            if price is not None:
                out[name] = price
        return out


def _on_demand_usd(price_list: Sequence[str]) -> float | None:
    """The hourly USD price of the first on-demand term of a Price List answer."""
    for raw in price_list:
        doc = json.loads(raw) if isinstance(raw, str) else raw
        for term in doc.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = dim.get("pricePerUnit", {}).get("USD")
                if usd is not None and dim.get("unit", "Hrs") == "Hrs" and float(usd) > 0:
                    return float(usd)
    return None


def refresh(out_path: Path, regions: Sequence[str], *, base: PriceCatalog | None = None,
            source: AwsCatalogSource | None = None) -> PriceCatalog:
    """Refresh ``regions`` of ``base`` (the shipped catalog) from AWS and write ``out_path``."""
    src = source or AwsCatalogSource()
    cat = refresh_catalog(base or load_catalog(), src, regions,
                          src.now.date().isoformat())
    out_path.write_text(json.dumps(catalog_to_dict(cat), indent=1) + "\n")
    return cat
