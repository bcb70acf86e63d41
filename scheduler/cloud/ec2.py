"""EC2 behind a Protocol: instance type offerings, spot prices, spot requests, interruptions.

:class:`InstanceProvider` is what the scheduler needs from a cloud's compute
API; :class:`Ec2InstanceProvider` implements it with boto3 (tests point it at
moto's server over HTTP through ``endpoint_url``). Everything returned is a
plain frozen value; every failure is a :class:`CloudApiError` naming the call,
the region and the resources involved. No credential ever appears in a value
or a message: boto3 reads them from its usual chain.

Spot interruption status comes from the spot request's status code (the
``describe_spot_instance_requests`` view that survives the instance); the
two-minute notice on the instance itself is read by :mod:`scheduler.cloud.imds`.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.cloud.errors import CloudApiError, ClusterConfigError

CLUSTER_TAG = "ray-cluster-name"

#: Spot request status codes that mean AWS took (or is taking) the capacity back.
INTERRUPTION_CODES = frozenset({
    "marked-for-stop",
    "marked-for-termination",
    "instance-stopped-by-price",
    "instance-stopped-no-capacity",
    "instance-terminated-by-price",
    "instance-terminated-no-capacity",
    "instance-terminated-capacity-oversubscribed",
    "instance-terminated-launch-group-constraint",
})


@dataclass(frozen=True, slots=True)
class SpotPrice:
    instance_type: str
    availability_zone: str
    price_usd_per_h: float
    timestamp: dt.datetime


@dataclass(frozen=True, slots=True)
class SpotRequest:
    request_id: str
    instance_type: str
    state: str
    status_code: str
    instance_id: str | None

    @property
    def interrupted(self) -> bool:
        return self.status_code in INTERRUPTION_CODES


@dataclass(frozen=True, slots=True)
class Instance:
    instance_id: str
    instance_type: str
    state: str
    market: str
    tags: Mapping[str, str] = field(default_factory=dict)


class InstanceProvider(Protocol):
    """A cloud's compute API as the scheduler uses it."""

    def offered_instance_types(self, names: Sequence[str]) -> set[str]: ...

    def spot_price_history(self, names: Sequence[str], since: dt.datetime) -> list[SpotPrice]: ...

    def request_spot_instances(self, instance_type: str, count: int, *, image_id: str,
                               subnet_id: str | None = None,
                               tags: Mapping[str, str] | None = None) -> list[str]: ...

    def spot_requests(self, request_ids: Sequence[str]) -> list[SpotRequest]: ...

    def cluster_instances(self, cluster_name: str) -> list[Instance]: ...

    def terminate(self, instance_ids: Sequence[str]) -> None: ...


def check_offered(provider: InstanceProvider, names: Sequence[str], region: str) -> None:
    """Raise :class:`ClusterConfigError` naming each type the region does not offer."""
    offered = provider.offered_instance_types(names)
    missing = [n for n in names if n not in offered]
    if missing:
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, sorted(offered), n=2, cutoff=0.6)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, close))}?)"
                                        if close else ""))
        raise ClusterConfigError(
            f"instance types not offered in {region}: {', '.join(hints)}; expected types that "
            "`aws ec2 describe-instance-type-offerings` lists for the region")


class Ec2InstanceProvider:
    """:class:`InstanceProvider` over boto3's EC2 client for one region."""

    def __init__(self, region: str, *, session: boto3.session.Session | None = None,
                 endpoint_url: str | None = None) -> None:
        self.region = region
        self._ec2: Any = (session or boto3.session.Session()).client(
            "ec2", region_name=region, endpoint_url=endpoint_url)

    def _call(self, op: str, what: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._ec2, op)(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise CloudApiError(f"ec2.{op} in {self.region} for {what} failed: {exc}") from exc

    def _pages(self, op: str, what: str, key: str, **kwargs: Any) -> list[Any]:
        out: list[Any] = []
        try:
            for page in self._ec2.get_paginator(op).paginate(**kwargs):
                out.extend(page.get(key, []))
        except (ClientError, BotoCoreError) as exc:
            raise CloudApiError(f"ec2.{op} in {self.region} for {what} failed: {exc}") from exc
        return out

    def offered_instance_types(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` offered in the region (any zone)."""
        if not names:
            return set()
        rows = self._pages("describe_instance_type_offerings", f"{len(names)} types",
                           "InstanceTypeOfferings", LocationType="region",
                           Filters=[{"Name": "instance-type", "Values": list(names)}])
        return {r["InstanceType"] for r in rows}

    def spot_price_history(self, names: Sequence[str], since: dt.datetime) -> list[SpotPrice]:
        rows = self._pages("describe_spot_price_history", f"types {list(names)}",
                           "SpotPriceHistory", InstanceTypes=list(names), StartTime=since,
                           ProductDescriptions=["Linux/UNIX (Amazon VPC)", "Linux/UNIX"])
        return [SpotPrice(r["InstanceType"], r.get("AvailabilityZone", ""), float(r["SpotPrice"]),
                          r["Timestamp"]) for r in rows]

    def request_spot_instances(self, instance_type: str, count: int, *, image_id: str,
                               subnet_id: str | None = None,
                               tags: Mapping[str, str] | None = None) -> list[str]:
        if count < 1:
            raise ClusterConfigError(f"spot request for {instance_type}: count {count}, "
                                     "expected >= 1")
        # The legacy spot API takes no MetadataOptions: IMDSv2 comes from the region
        # default that terraform/compute.tf sets (aws_ec2_instance_metadata_defaults).
        spec: dict[str, Any] = {"ImageId": image_id, "InstanceType": instance_type}
        if subnet_id:
            spec["SubnetId"] = subnet_id
        kwargs: dict[str, Any] = {"InstanceCount": count, "Type": "one-time",
                                  "LaunchSpecification": spec}
        if tags:
            kwargs["TagSpecifications"] = [{
                "ResourceType": "spot-instances-request",
                "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}]
        resp = self._call("request_spot_instances", f"{count} x {instance_type}", **kwargs)
        return [r["SpotInstanceRequestId"] for r in resp["SpotInstanceRequests"]]

    def spot_requests(self, request_ids: Sequence[str]) -> list[SpotRequest]:
        if not request_ids:
            return []
        resp = self._call("describe_spot_instance_requests", f"requests {list(request_ids)}",
                          SpotInstanceRequestIds=list(request_ids))
        return [SpotRequest(r["SpotInstanceRequestId"],
                            r.get("LaunchSpecification", {}).get("InstanceType", ""),
                            r["State"], r.get("Status", {}).get("Code", ""),
                            r.get("InstanceId"))
                for r in resp["SpotInstanceRequests"]]

    def run_instances(self, instance_type: str, count: int, *, image_id: str,
                      cluster_name: str, spot: bool = False,
                      subnet_id: str | None = None) -> list[str]:
        """Launch ``count`` instances tagged with the cluster (as the head's IAM policy requires)."""
        kwargs: dict[str, Any] = {
            "ImageId": image_id, "InstanceType": instance_type, "MinCount": count,
            "MaxCount": count,
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
            "TagSpecifications": [{"ResourceType": t, "Tags": [
                {"Key": CLUSTER_TAG, "Value": cluster_name}]} for t in ("instance", "volume")],
        }
        if spot:
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot"}
        if subnet_id:
            kwargs["SubnetId"] = subnet_id
        resp = self._call("run_instances", f"{count} x {instance_type}", **kwargs)
        return [i["InstanceId"] for i in resp["Instances"]]

    def cluster_instances(self, cluster_name: str) -> list[Instance]:
        reservations = self._pages(
            "describe_instances", f"cluster {cluster_name!r}", "Reservations",
            Filters=[{"Name": f"tag:{CLUSTER_TAG}", "Values": [cluster_name]}])
        out = []
        for res in reservations:
            for i in res["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                out.append(Instance(i["InstanceId"], i["InstanceType"], i["State"]["Name"],
                                    i.get("InstanceLifecycle", "on-demand"), tags))
        return out

    def terminate(self, instance_ids: Sequence[str]) -> None:
        if instance_ids:
            self._call("terminate_instances", f"instances {list(instance_ids)}",
                       InstanceIds=list(instance_ids))
