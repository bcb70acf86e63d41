"""EC2 behind a Protocol: which instance types a region offers.

:class:`InstanceProvider` is what the scheduler asks a cloud's compute API
itself (``eochain cluster-config`` checks the plan's types against the
region); :class:`Ec2InstanceProvider` implements it with boto3 (tests point it
at moto's server over HTTP through ``endpoint_url``). Instances are launched
by Ray's own AWS node provider from the cluster config, spot prices come from
:mod:`scheduler.cloud.aws_catalog`, and the two-minute notice is read by
:mod:`scheduler.cloud.imds`. Every failure is a :class:`CloudApiError` naming
the call, the region and the resources involved; no credential ever appears
in a message: boto3 reads them from its usual chain.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.cloud.errors import CloudApiError, ClusterConfigError


class InstanceProvider(Protocol):
    """A cloud's compute API as the scheduler uses it."""

    def offered_instance_types(self, names: Sequence[str]) -> set[str]: ...


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
