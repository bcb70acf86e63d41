"""The Terraform outputs a cluster config is built from (``terraform output -json``).

``terraform/outputs.tf`` defines them; :func:`load_terraform_outputs` reads
the JSON of ``terraform output -json`` (or a plain name -> value map) and
checks every value the config pastes somewhere: the region and cluster name
against the patterns Terraform validates, the per-architecture maps
(``worker_launch_template_ids``, ``ami_ids``) against :data:`ARCHS`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.cloud.errors import TerraformOutputsError

#: Terraform outputs (``terraform/outputs.tf``) the config is built from.
REQUIRED_OUTPUTS: tuple[str, ...] = (
    "region",
    "cluster_name",
    "private_subnet_ids",
    "security_group_id",
    "head_instance_profile_arn",
    "worker_instance_profile_arn",
    "head_launch_template_id",
    "worker_launch_template_ids",
    "bucket_name",
)
#: Optional outputs: ``ami_ids`` maps an architecture to its AMI.
OPTIONAL_OUTPUTS: tuple[str, ...] = ("ami_ids",)
ARCHS = ("x86_64", "arm64")

#: As terraform/variables.tf validates ``cluster_name``.
CLUSTER_NAME = re.compile(r"[a-z][a-z0-9-]{2,30}[a-z0-9]")


@dataclass(frozen=True, slots=True)
class TerraformOutputs:
    """The values of ``terraform output -json`` that the cluster config uses."""

    region: str
    cluster_name: str
    private_subnet_ids: tuple[str, ...]
    security_group_id: str
    head_instance_profile_arn: str
    worker_instance_profile_arn: str
    head_launch_template_id: str
    worker_launch_template_ids: Mapping[str, str]
    bucket_name: str
    ami_ids: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.private_subnet_ids:
            raise TerraformOutputsError(
                "Terraform output 'private_subnet_ids' is empty, expected at least one subnet id")
        if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-[0-9]", self.region):
            raise TerraformOutputsError(
                f"Terraform output region = {short(self.region)}: expected an AWS region name "
                "such as eu-west-3")
        if not CLUSTER_NAME.fullmatch(self.cluster_name):
            raise TerraformOutputsError(
                f"Terraform output cluster_name = {short(self.cluster_name)}: expected 4-32 "
                "lower-case letters, digits and '-', starting with a letter "
                "(as terraform/variables.tf validates)")
        for key, mapping in (("worker_launch_template_ids", self.worker_launch_template_ids),
                             ("ami_ids", self.ami_ids)):
            unknown = sorted(set(mapping) - set(ARCHS))
            if unknown:
                raise TerraformOutputsError(
                    f"Terraform output {key} has architectures {unknown}, expected keys of "
                    f"{list(ARCHS)}")


def short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_terraform_outputs(path: str | Path) -> TerraformOutputs:
    """Read ``terraform output -json`` (``{"name": {"value": ...}}``) or a plain name->value map."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise TerraformOutputsError(f"Terraform outputs file {str(path)!r} cannot be read: {exc}"
                                    ) from exc
    except ValueError as exc:
        raise TerraformOutputsError(
            f"Terraform outputs file {str(path)!r} is not JSON ({exc}); expected the output of "
            "`terraform output -json`") from exc
    return terraform_outputs_from_dict(doc, str(path))


def terraform_outputs_from_dict(doc: Any, source: str = "<dict>") -> TerraformOutputs:
    if not isinstance(doc, Mapping):
        raise TerraformOutputsError(
            f"Terraform outputs {source!r}: expected a JSON object, got {type(doc).__name__}")
    values = {k: (v["value"] if isinstance(v, Mapping) and "value" in v else v)
              for k, v in doc.items()}
    missing = [k for k in REQUIRED_OUTPUTS if values.get(k) in (None, "", [])]
    if missing:
        raise TerraformOutputsError(
            f"Terraform outputs {source!r} lack {', '.join(missing)}; expected every output of "
            "terraform/outputs.tf (run `terraform output -json > FILE` after `terraform apply`)")
    subnets = values["private_subnet_ids"]
    if isinstance(subnets, str) or not isinstance(subnets, Sequence):
        raise TerraformOutputsError(
            f"Terraform outputs {source!r}: private_subnet_ids = {subnets!r}, expected a list")
    maps: dict[str, dict[str, str]] = {}
    for key in ("worker_launch_template_ids", "ami_ids"):
        value = values.get(key) or {}
        if not (isinstance(value, Mapping)
                and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
            raise TerraformOutputsError(
                f"Terraform outputs {source!r}: {key} = {short(value)}, expected a map from "
                "architecture (x86_64, arm64) to an id")
        maps[key] = dict(value)
    scalars = {k: values[k] for k in REQUIRED_OUTPUTS if k not in ("private_subnet_ids", *maps)}
    for key, value in scalars.items():
        if not isinstance(value, str):
            raise TerraformOutputsError(
                f"Terraform outputs {source!r}: {key} = {short(value)}, expected a string")
    return TerraformOutputs(private_subnet_ids=tuple(str(s) for s in subnets),
                            worker_launch_template_ids=maps["worker_launch_template_ids"],
                            ami_ids=maps["ami_ids"], **scalars)
