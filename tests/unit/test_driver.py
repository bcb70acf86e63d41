"""The local Ray that ``eochain run`` starts: its object store's size, and the option that
sets it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scheduler.cli.main import cli
from scheduler.products.driver import Driver
from scheduler.runtime.options import DispatchOptions

pytestmark = pytest.mark.unit


def test_local_store_is_the_option_or_room_for_the_bytes_in_flight() -> None:
    assert Driver(object_store_bytes=100 << 20).local_object_store_bytes() == 100 << 20
    small, large = (Driver(options=DispatchOptions(max_bytes_in_flight=n << 20))
                    .local_object_store_bytes() for n in (64, 1024))
    assert small <= large  # more in flight, a larger store (within this machine's cap)


def test_object_store_option_refuses_a_cluster_address(tmp_path: Path) -> None:
    dem = tmp_path / "dem.tif"
    dem.write_bytes(b"")
    campaign = tmp_path / "c.yaml"
    campaign.write_text("name: c\n")
    result = CliRunner().invoke(cli, ["run", str(campaign), "--dem", str(dem),
                                      "--address", "127.0.0.1:1", "--object-store-mib", "512"])
    assert result.exit_code == 2, result.output
    assert "--object-store-mib sizes the local Ray" in result.output
