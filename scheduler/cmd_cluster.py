"""``eochain cluster-config``: a Ray cluster launcher YAML for AWS from plan.json and Terraform.

    terraform -chdir=terraform output -json > tf-outputs.json
    eochain cluster-config plan.json --terraform-outputs tf-outputs.json -o cluster.yaml
    ray up cluster.yaml
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from planner.catalog import load_catalog
from planner.errors import PlannerError
from scheduler.cloud.errors import CloudError
from scheduler.cluster_config import (
    ClusterOptions,
    fleet_from_plan,
    load_terraform_outputs,
    render_cluster_config,
)


@click.command(name="cluster-config")
@click.argument("plan_path", metavar="PLAN_JSON", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--terraform-outputs", "tf_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSON of `terraform output -json` for terraform/.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the YAML here instead of standard output.")
@click.option("--head-instance-type", default="m7i.xlarge", show_default=True)
@click.option("--image-id", default=None, help="AMI for every node (default: Ray's for the region).")
@click.option("--ssh-user", default="ubuntu", show_default=True)
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Address the head's dashboard and job server bind to.")
@click.option("--idle-timeout-minutes", default=5.0, show_default=True, type=float)
@click.option("--project-dir", default=None,
              help="Local eochain checkout to mount on every node and pip-install.")
@click.option("--check-offerings", is_flag=True,
              help="Also ask EC2 (describe-instance-type-offerings) that the region offers every "
              "type; uses the usual AWS credentials, or AWS_ENDPOINT_URL.")
@click.option("--catalog", "catalog_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Price catalog JSON (default: the shipped one).")
def cluster_config(plan_path: Path, tf_path: Path, out_path: Path | None,
                   head_instance_type: str, image_id: str | None, ssh_user: str,
                   dashboard_host: str, idle_timeout_minutes: float, project_dir: str | None,
                   check_offerings: bool, catalog_path: Path | None) -> None:
    """Render a Ray cluster launcher YAML for AWS from PLAN_JSON and the Terraform outputs."""
    try:
        try:
            plan = json.loads(plan_path.read_text())
        except OSError as exc:
            raise click.ClickException(f"plan {str(plan_path)!r} cannot be read: {exc}") from exc
        except ValueError as exc:
            raise click.ClickException(f"plan {str(plan_path)!r} is not JSON: {exc}") from exc
        tf = load_terraform_outputs(tf_path)
        catalog = load_catalog(catalog_path)
        fleet = fleet_from_plan(plan, tf.region, catalog, source=str(plan_path))
        options = ClusterOptions(head_instance_type=head_instance_type, image_id=image_id,
                                 ssh_user=ssh_user, dashboard_host=dashboard_host,
                                 idle_timeout_minutes=idle_timeout_minutes,
                                 project_dir=project_dir)
        doc = render_cluster_config(fleet, tf, options, catalog)
        if check_offerings:
            from scheduler.cloud.ec2 import Ec2InstanceProvider, check_offered

            names = sorted({n.instance_type for n in fleet} | {head_instance_type})
            check_offered(Ec2InstanceProvider(tf.region), names, tf.region)
    except (CloudError, PlannerError) as exc:
        raise click.ClickException(str(exc)) from exc
    text = "# Rendered by `eochain cluster-config`; start with `ray up`.\n" + yaml.safe_dump(
        doc, sort_keys=False)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        out_path.write_text(text)
        click.echo(f"wrote {out_path}: {len(doc['available_node_types']) - 1} worker node types, "
                   f"up to {doc['max_workers']} workers", err=True)
