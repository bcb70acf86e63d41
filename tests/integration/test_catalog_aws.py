"""The boto3 catalog refresher against moto's server over real HTTP (moto's spot prices are dummy).

The fixture starts ``moto_server`` from the virtualenv on a free 127.0.0.1
port, waits (with a deadline) until it answers, and stops it afterwards.
boto3 is never patched: the adapter talks HTTP to the server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest

from planner.catalog import load_catalog
from planner.errors import CatalogError
from scheduler.cloud.aws_catalog import AwsCatalogSource, refresh
from scheduler.testing.catalog import SpotAndTypesOnly

pytestmark = pytest.mark.integration

MOTO = Path(sys.executable).with_name("moto_server")


@pytest.fixture
def session() -> boto3.session.Session:
    # Dummy credentials for the local server only.
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                 region_name="eu-west-3")


def test_instance_types_come_from_the_api(moto_endpoint: str,
                                          session: boto3.session.Session) -> None:
    src = AwsCatalogSource(session, endpoint_url=moto_endpoint)
    infos = {t.name: t for t in src.instance_types("eu-west-3", ["c7g.4xlarge", "m7i.2xlarge"])}
    assert infos["c7g.4xlarge"].vcpus == 16 and infos["c7g.4xlarge"].mem_gib == 32.0
    assert infos["c7g.4xlarge"].arch == "arm64" and infos["m7i.2xlarge"].arch == "x86_64"


def test_refresh_replaces_spot_prices_and_keeps_bands(moto_endpoint: str,
                                                     session: boto3.session.Session,
                                                     tmp_path: Path) -> None:
    base = load_catalog()
    out = tmp_path / "catalog.json"
    cat = refresh(out, ["eu-west-3"], base=base,
                  source=SpotAndTypesOnly(session, endpoint_url=moto_endpoint))
    new, old = cat.prices["eu-west-3"]["c7g.4xlarge"], base.prices["eu-west-3"]["c7g.4xlarge"]
    assert new.spot_usd_per_h == pytest.approx(0.00001)  # moto's dummy spot price
    assert new.on_demand_usd_per_h == old.on_demand_usd_per_h
    assert new.interruption_band == old.interruption_band
    assert cat.prices["us-east-1"] == base.prices["us-east-1"]
    doc = json.loads(out.read_text())
    assert doc["prices"]["eu-west-3"]["c7g.4xlarge"]["spot_usd_per_h"] == pytest.approx(1e-5)
    assert "boto3" in doc["sources"][-1]


def test_missing_pricing_api_is_a_named_error(moto_endpoint: str,
                                              session: boto3.session.Session) -> None:
    src = AwsCatalogSource(session, endpoint_url=moto_endpoint)
    with pytest.raises(CatalogError, match=r"pricing.get_products \(AmazonEC2, c7g.xlarge"):
        src.on_demand_prices_usd_per_h("eu-west-3", ["c7g.xlarge"])


def test_unknown_type_is_a_named_error(moto_endpoint: str,
                                       session: boto3.session.Session) -> None:
    src = AwsCatalogSource(session, endpoint_url=moto_endpoint)
    with pytest.raises(CatalogError, match="describe_instance_types in eu-west-3"):
        src.instance_types("eu-west-3", ["c99z.mega"])
