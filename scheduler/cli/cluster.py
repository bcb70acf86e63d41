"""``eochain cluster-config``: a Ray cluster launcher YAML for AWS from plan.json and Terraform.

    terraform -chdir=terraform output -json > tf-outputs.json
    eochain cluster-config plan.json --terraform-outputs tf-outputs.json -o cluster.yaml
    ray up cluster.yaml

Beside the YAML it writes the bundle folder (``eochain-dist/``: the wheel of
this checkout and ``constraints.txt``) that the cluster launcher copies to
every node.
"""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from planner.catalog import load_catalog
from planner.errors import PlannerError
from planner.plan_document import PlanDocument, read_plan
from scheduler.cloud.bundle import build_bundle, bundle_from_wheel
from scheduler.cloud.errors import CloudError, ClusterConfigError
from scheduler.fleet.cluster_config import (
    ClusterOptions,
    fleet_from_plan,
    load_terraform_outputs,
    plan_regions,
    render_cluster_config,
    replan_nodes,
)

REPO = Path(__file__).resolve().parents[2]


def _image_ids(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        arch, sep, ami = value.partition("=")
        if not sep:
            raise ClusterConfigError(
                f"--image-id {value!r}: expected ARCH=AMI, e.g. arm64=ami-0123456789abcdef0 "
                "(each architecture needs its own AMI)")
        out[arch] = ami
    return out


def _region(plan: PlanDocument, tf_region: str, region: str | None) -> None:
    """Refuse a multi-region plan without ``--region``, and a ``--region`` Terraform lacks."""
    regions = plan_regions(plan)
    if region is None and len(regions) > 1:
        listed = ", ".join(f"{r} ({n} instances)" for r, n in sorted(regions.items()))
        raise ClusterConfigError(
            f"{plan.origin}: the fleet spans {len(regions)} regions: {listed}. One Ray cluster runs "
            "in one region: apply terraform/ in each and render each with `--region R "
            "--terraform-outputs tf-R.json`; a campaign runs on one cluster, so to run this "
            "plan re-plan with `compute.regions: [R]`")
    if region is not None and region != tf_region:
        raise ClusterConfigError(
            f"--region {region!r} differs from the Terraform outputs' region {tf_region!r}: "
            "pass the outputs of the terraform/ applied in that region")


@click.command(name="cluster-config")
@click.argument("plan_path", metavar="PLAN_JSON", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--terraform-outputs", "tf_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="JSON of `terraform output -json` for terraform/.")
@click.option("-o", "--output", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the YAML here instead of standard output.")
@click.option("--head-instance-type", default="m7i.xlarge", show_default=True)
@click.option("--image-id", "image_ids", multiple=True, metavar="ARCH=AMI",
              help="AMI for the nodes of one architecture (x86_64 or arm64), repeatable; default: "
              "Terraform's ami_ids, else Ubuntu 24.04 from the public SSM parameter.")
@click.option("--region", default=None,
              help="Render the share of a multi-region plan in this region (one cluster each).")
@click.option("--ssh-user", default="ubuntu", show_default=True)
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Address the head's dashboard and job server bind to.")
@click.option("--idle-timeout-minutes", default=None, type=float,
              help="Minutes an idle worker is kept (default: the catalog's "
              "overheads.idle_timeout_s, 1 minute, which plans are costed with; the run "
              "shrinks its request as stages finish, so only nodes it lets go sit idle).")
@click.option("--project-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="eochain checkout whose wheel the nodes install (default: this one).")
@click.option("--wheel", "wheel_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="An eochain wheel already built, instead of building one from --project-dir.")
@click.option("--bundle-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the wheel and constraints.txt synced to the nodes "
              "(default: eochain-dist/ beside the output).")
@click.option("--python", "python", default="python3.12", show_default=True,
              help="Python >= 3.11 on the AMI that the nodes' venv is made from.")
@click.option("--no-ssm-ssh", is_flag=True,
              help="Reach nodes by plain SSH instead of SSH through SSM Session Manager.")
@click.option("--check-offerings", is_flag=True,
              help="Also ask EC2 (describe-instance-type-offerings) that the region offers every "
              "type; uses the usual AWS credentials, or AWS_ENDPOINT_URL.")
@click.option("--catalog", "catalog_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Price catalog JSON (default: the shipped one).")
def cluster_config(plan_path: Path, tf_path: Path, out_path: Path | None,
                   head_instance_type: str, image_ids: tuple[str, ...], region: str | None,
                   ssh_user: str, dashboard_host: str, idle_timeout_minutes: float | None,
                   project_dir: Path | None, wheel_path: Path | None, bundle_dir: Path | None,
                   python: str, no_ssm_ssh: bool, check_offerings: bool,
                   catalog_path: Path | None) -> None:
    """Render a Ray cluster launcher YAML for AWS from PLAN_JSON and the Terraform outputs."""
    if out_path is not None and not out_path.parent.is_dir():
        raise click.ClickException(
            f"-o {str(out_path)!r}: folder {str(out_path.parent)!r} does not exist; create it "
            "first")
    try:
        plan = read_plan(plan_path)
        tf = load_terraform_outputs(tf_path)
        catalog = load_catalog(catalog_path)
        _region(plan, tf.region, region)
        fleet = fleet_from_plan(plan, tf.region, catalog,
                                other_regions="skip" if region else "refuse")
        folder = bundle_dir or (out_path.parent if out_path else Path.cwd()) / "eochain-dist"
        if wheel_path is not None:
            bundle = bundle_from_wheel(wheel_path, (project_dir or REPO) / "constraints.txt",
                                       folder)
        else:
            bundle = build_bundle(project_dir or REPO, folder)
        options = ClusterOptions(bundle=bundle, head_instance_type=head_instance_type,
                                 image_ids=_image_ids(image_ids), ssh_user=ssh_user,
                                 dashboard_host=dashboard_host,
                                 idle_timeout_minutes=(
                                     catalog.overheads.idle_timeout_s / 60
                                     if idle_timeout_minutes is None else idle_timeout_minutes),
                                 python=python,
                                 ssh_through_ssm=not no_ssm_ssh)
        replan, replan_max = replan_nodes(plan, tf.region, catalog)
        doc = render_cluster_config(fleet, tf, options, catalog, zones=plan.zones,
                                    replan=replan, replan_max_instances=replan_max)
        if check_offerings:
            from scheduler.cloud.ec2 import Ec2InstanceProvider, check_offered

            names = sorted({n.instance_type for n in (*fleet, *replan)} | {head_instance_type})
            check_offered(Ec2InstanceProvider(tf.region), names, tf.region)
    except (CloudError, PlannerError) as exc:
        raise click.ClickException(str(exc)) from exc
    text = "# Rendered by `eochain cluster-config`; start with `ray up`.\n" + yaml.safe_dump(
        doc, sort_keys=False)
    if out_path is None:
        click.echo(text, nl=False)
    else:
        try:
            out_path.write_text(text)
        except OSError as exc:
            raise click.ClickException(f"-o {str(out_path)!r} cannot be written: {exc}") from exc
        planned = {n.node_type for n in fleet}
        spares = sum(1 for name in doc["available_node_types"]
                     if name != "ray.head.default" and name.rpartition("-z")[0] not in planned
                     and name not in planned)
        click.echo(f"wrote {out_path} and {bundle.folder}/: "
                   f"{len(doc['available_node_types']) - 1} worker node types ({spares} for spot "
                   f"fallbacks and live re-plans, launched only if the run asks for them), "
                   f"up to {doc['max_workers']} workers", err=True)
