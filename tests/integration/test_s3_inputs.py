"""Images, every RPC sidecar form, DEMs and geoids read from S3 (moto's server over HTTP).

Each case uploads real files and asks ``find_rpc`` for the remote image by
``s3://`` URI and by GDAL ``/vsis3/`` path; the model must equal the one
found for the same files on disk, crop origin included:

* Gizeh crop + OSSIM ``.geom`` (origin in the TIFF geotransform);
* Ventoux crop named like a DIMAP image + ``RPC_<core>.XML`` (found by
  listing the prefix);
* an image + DigitalGlobe ``.RPB`` (read by GDAL itself, origin stated);
* a SkySat-sized image + ``_RPC.TXT``;
* a ``.rpc.vrt`` whose RPC metadata sits in the VRT, its pixels in a TIFF
  beside it.

DEM tiles (an SRTM ``.hgt``, a folder of GeoTIFF tiles) and the EGM96 ``.gtx``
read from S3 give the same heights as from disk.

Credentials come from the environment, as GDAL's usual chain reads them.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from ops.errors import DemError, RpcFitError, RpcFormatError
from ops.sensor.rpc_check import rpc_disagreement_px
from ops.sensor.rpc_io import find_rpc, read_rpc, write_rpb
from ops.terrain.dem import Dem
from tests.conftest import aws_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUCKET = "eochain-raw"
DIMAP_CORE = "PHR1B_P_201308051042194_SEN_690908101-001"
SKYSAT_TXT = "20191015_073816_ssc1d3_0011_basic_l1a_panchromatic_dn_RPC.TXT"


@pytest.fixture(scope="module")
def s3(moto_endpoint: str) -> Iterator[object]:
    """A bucket on moto's server; AWS variables (boto3's and GDAL's) point at it."""
    import boto3

    with aws_environment(moto_endpoint):
        client = boto3.client("s3", endpoint_url=moto_endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield client


def _upload(client: object, folder: Path, prefix: str) -> None:
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")  # type: ignore[attr-defined]


def _raster(path: Path, height: int, width: int, transform: Affine | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1,
                           dtype="uint8", compress="deflate",
                           transform=transform or Affine.identity()) as ds:
            ds.write(np.zeros((1, height, width), dtype=np.uint8))
    return path


def _same(remote: object, local: object) -> None:
    from ops.sensor.rpc import RpcModel

    assert isinstance(remote, RpcModel) and isinstance(local, RpcModel)
    assert (remote.row_origin, remote.col_origin) == (local.row_origin, local.col_origin)
    assert rpc_disagreement_px(remote, local) == 0.0


def _case(tmp_path: Path, shared_data: Path, case: str) -> tuple[Path, str, dict[str, object]]:
    """Local folder, image name and find_rpc options of one sidecar form."""
    folder = tmp_path / case
    folder.mkdir()
    if case == "geom":
        for name in ("img1.tif", "img1.geom"):
            shutil.copy(shared_data / "gizeh" / name, folder / name)
        return folder, "img1.tif", {}
    if case == "dimap":
        image = f"IMG_{DIMAP_CORE}_R1C1.tif"
        shutil.copy(shared_data / "ventoux/left_image.tif", folder / image)
        shutil.copy(shared_data / f"ventoux/RPC_{DIMAP_CORE}.XML", folder)
        return folder, image, {}
    if case == "rpb":
        _raster(folder / "scene.tif", 12, 16)
        write_rpb(read_rpc(shared_data / "rpc_fixtures/rpc_WV2.xml"), folder / "scene.RPB")
        return folder, "scene.tif", {"origin": (0, 0)}
    if case == "rpc_txt":
        _raster(folder / "skysat.tif", 1080, 2588)
        shutil.copy(shared_data / "rpc_fixtures" / SKYSAT_TXT, folder / "skysat_RPC.TXT")
        return folder, "skysat.tif", {}
    if case == "vrt":
        for name in ("RGB.byte.rpc.vrt", "RGB.byte.tif"):
            shutil.copy(shared_data / "rpc_fixtures" / name, folder / name)
        return folder, "RGB.byte.rpc.vrt", {}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["geom", "dimap", "rpb", "rpc_txt", "vrt"])
def test_find_rpc_reads_every_sidecar_form_from_s3(case: str, s3: object, tmp_path: Path,
                                                  shared_data: Path) -> None:
    folder, image, options = _case(tmp_path, shared_data, case)
    _upload(s3, folder, case)
    local = find_rpc(folder / image, **options)  # type: ignore[arg-type]
    by_uri = find_rpc(f"s3://{BUCKET}/{case}/{image}", **options)  # type: ignore[arg-type]
    _same(by_uri, local)
    _same(find_rpc(f"/vsis3/{BUCKET}/{case}/{image}", **options), local)  # type: ignore[arg-type]
    assert by_uri.source.startswith(f"/vsis3/{BUCKET}/{case}/")


def test_remote_sidecar_files_and_refusals(s3: object, tmp_path: Path, shared_data: Path) -> None:
    _upload(s3, shared_data / "gizeh", "files")
    _same(read_rpc(f"s3://{BUCKET}/files/img1.geom"), read_rpc(shared_data / "gizeh/img1.geom"))
    # a crop without origin beside the product's .geom is refused remotely too
    bare = tmp_path / "bare"
    bare.mkdir()
    _raster(bare / "crop.tif", 801, 800)
    shutil.copy(shared_data / "gizeh/img1.geom", bare / "crop.geom")
    _raster(bare / "none.tif", 8, 8)
    _upload(s3, bare, "bare")
    with pytest.raises(RpcFitError, match=rf"/vsis3/{BUCKET}/bare/crop\.tif: .* no crop origin"):
        find_rpc(f"s3://{BUCKET}/bare/crop.tif")
    with pytest.raises(RpcFormatError, match=rf"no RPC found; looked for .*/vsis3/{BUCKET}/bare/"
                                             r"none\.geom"):
        find_rpc(f"s3://{BUCKET}/bare/none.tif")
    with pytest.raises(RpcFormatError, match="no such file"):
        read_rpc(f"s3://{BUCKET}/bare/missing.geom")


def test_dem_tiles_and_geoid_from_s3(s3: object, tmp_path: Path, shared_data: Path) -> None:
    _upload(s3, shared_data / "ventoux" / "srtm", "dem/ventoux")
    _upload(s3, shared_data / "ventoux" / "geoid", "dem/geoid")
    _upload(s3, shared_data / "gizeh" / "srtm_dir", "dem/gizeh")
    local_gtx = shared_data / "ventoux" / "geoid" / "egm96_15.gtx"
    gtx = f"s3://{BUCKET}/dem/geoid/egm96_15.gtx"
    box = (5.2, 44.1, 5.3, 44.2)
    remote = Dem.open(f"s3://{BUCKET}/dem/ventoux/N44E005.hgt", geoid=gtx, bounds_lonlat=box)
    local = Dem.open(shared_data / "ventoux/srtm/N44E005.hgt", geoid=local_gtx, bounds_lonlat=box)
    assert remote.transform == local.transform and remote.vertical_datum == "egm96"
    np.testing.assert_array_equal(remote.heights_m, local.heights_m)
    folder = Dem.open(f"s3://{BUCKET}/dem/gizeh", geoid=gtx)
    np.testing.assert_array_equal(
        folder.heights_m, Dem.open(shared_data / "gizeh/srtm_dir", geoid=local_gtx).heights_m)
    assert folder.source == f"/vsis3/{BUCKET}/dem/gizeh"
    with pytest.raises(DemError, match=r"N44E005\.hgt is an SRTM \.hgt tile"):
        Dem.open(f"s3://{BUCKET}/dem/ventoux/N44E005.hgt", bounds_lonlat=box)
    with pytest.raises(DemError, match="is this a DEM"):
        Dem.open(f"s3://{BUCKET}/dem/ventoux/N44E005.hgt", bounds_lonlat=box,
                 geoid=f"s3://{BUCKET}/dem/gizeh/N29E031_KHEOPS.tif")


def test_a_campaign_orthorectifies_a_scene_on_s3_with_its_sidecar(
    s3: object, tmp_path: Path
) -> None:
    """Issue 13: scenes on S3 with sidecar RPCs failed with "no RPC found"."""
    from ops.synthetic.scene import SceneSpec, generate_scene
    from scheduler.products.driver import Driver
    from scheduler.products.flow import SceneInput

    scene = generate_scene(SceneSpec(width=384, height=384, seed=11),
                           tmp_path / "scene")
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("view_0.tif", "view_0.geom"):
        shutil.copy(scene.out_dir / name, raw / name)
    _upload(s3, raw, "campaign-raw")
    dem = str(scene.out_dir / "dem.tif")

    def run(uri: str, dest: Path) -> np.ndarray:
        report = (Driver(address="serial").get_flow([SceneInput("v0", uri)])
                  .ortho(dem=dem, tile_px=256).write(str(dest)).run())
        assert report.ok, report.failures
        with rasterio.open(dest / "ortho" / "v0.tif") as src:
            return np.asarray(src.read())

    remote = run(f"s3://{BUCKET}/campaign-raw/view_0.tif", tmp_path / "from_s3")
    local = run(str(raw / "view_0.tif"), tmp_path / "from_disk")
    np.testing.assert_array_equal(remote, local)


def test_a_black_holed_endpoint_fails_the_read_instead_of_hanging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that accepts connections and never answers (issue 14): a clear error."""
    import socket
    import threading

    from ops.raster import vsi

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel accepts; nobody ever reads or answers
    port = server.getsockname()[1]
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
                       "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GDAL_HTTP_TIMEOUT", raising=False)
    monkeypatch.setattr(vsi, "REMOTE_TIMEOUT_S", 2)
    monkeypatch.setattr(vsi, "REMOTE_CONNECT_TIMEOUT_S", 2)
    outcome: list[Exception] = []

    def call() -> None:
        try:
            find_rpc("s3://silent/scene/img.tif")
        except Exception as exc:  # noqa: BLE001 - the outcome is asserted below
            outcome.append(exc)

    worker = threading.Thread(target=call, daemon=True)
    try:
        worker.start()
        worker.join(timeout=120)  # a liveness bound (GDAL's timeout is 2 s a request)
        assert not worker.is_alive(), "find_rpc hung on a silent S3 endpoint"
    finally:
        server.close()
    assert len(outcome) == 1 and isinstance(outcome[0], RpcFormatError), outcome
    assert "/vsis3/silent/scene/img.tif" in str(outcome[0])
