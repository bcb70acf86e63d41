"""Where products go: an :class:`ObjectStore` Protocol with a local and an S3 implementation.

A product is visible only when complete:

* local: the bytes go to a hidden temporary file beside the destination
  (``.eochain-tmp-<run id>.<uuid>-<name>``), are flushed and fsynced, then
  ``os.replace`` renames it onto the key (atomic on POSIX). A finished file
  (the COG a worker assembled in its scratch folder) is published by
  :meth:`~LocalStore.move_file`: fsynced and renamed onto the key when it is
  on the store's filesystem, not copied;
* S3: the bytes are uploaded straight to the key, in one PUT or, beyond
  :data:`S3_PART_BYTES`, in a multipart upload, which S3 makes visible only
  at its CompleteMultipartUpload, atomically: the object appears whole or not
  at all, and a re-upload (a task redone after a lost node) replaces it
  whole. No temporary key and server-side copy: that would double the PUTs.

Each store value carries the id of the run that made it (:func:`new_run_id`,
pickled with the store to every worker), and every local temporary name
carries that id. A writer killed midway (a lost node, a killed driver)
leaves no partial product: a local temporary file, or an S3 incomplete
multipart upload (invisible; its parts are billed until aborted; boto3
aborts the uploads that fail in its hands). :meth:`ObjectStore.sweep_temps`,
which the runtime calls when a campaign ends, removes local temporaries of
its own run, of runs known dead (their heartbeat expired,
:func:`scheduler.products.lease.dead_runs`) and those of other runs older
than :data:`STALE_TEMP_S` (one hour: a temporary lives for the seconds of
one upload), never a temporary another live run is publishing. An S3
upload names no run, so only uploads older than :data:`STALE_TEMP_S` are
aborted (and, in the Terraform bucket, any a day old: its lifecycle rule).

Two more primitives serve coordination between drivers
(:mod:`scheduler.products.lease`): :meth:`read_versioned` and
:meth:`put_if`, a compare-and-swap on one small object. S3 does it with
conditional writes (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to
replace); the local store under an ``flock`` of a lock file in the folder
(one host; NFS locks are not relied upon).

Keys are ``/``-separated relative paths. Stores are small frozen values so
they travel to Ray actors; the S3 client is created lazily in each process,
with bounded connect/read timeouts and retries (credentials come from the
usual boto3 chain, never from the store's fields).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from scheduler.products.errors import StoreError

log = logging.getLogger(__name__)

TMP_PREFIX = ".eochain-tmp-"
S3_TMP_DIR = "_eochain_tmp"
#: Local files of eochain's own (temporaries, locks): never listed as keys.
HIDDEN_PREFIX = ".eochain-"
LOCK_NAME = ".eochain-lock"
#: Age (s) past which another run's temporary is a dead writer's leftover.
STALE_TEMP_S = 3600.0
#: S3 client bounds: a black-holed endpoint fails a call within about
#: (connect + read) x attempts instead of hanging.
S3_CONNECT_TIMEOUT_S = 10.0
S3_READ_TIMEOUT_S = 60.0
S3_MAX_ATTEMPTS = 3
#: Part size (and multipart threshold) of uploads. boto3's default, 8 MiB, makes a
#: 3.5 GB DSM 420 parts: at $0.005 per 1,000 PUTs the requests cost more than the
#: compute that made the product. 64 MiB parts cut them 8x; 4 parts in flight
#: bound the upload's buffers to 256 MiB. The planner prices requests with the same size
#: (``multipart_part_bytes`` in ``planner/data/aws_catalog.json``).
S3_PART_BYTES = 64 * 2**20
S3_PARTS_IN_FLIGHT = 4


def new_run_id() -> str:
    """A run's id: UTC start time and a random part (``20261205T010203-1a2b3c4d``)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return f"{now}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """Size and version of a stored object (local: mtime in ns; S3: the ETag)."""

    nbytes: int
    version: str


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store with atomic publication."""

    @property
    def run_id(self) -> str: ...

    def exists(self, key: str) -> bool: ...

    def stat(self, key: str) -> ObjectStat | None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def sha256(self, key: str) -> str: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def move_file(self, key: str, path: Path) -> None: ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...

    def put_if(self, key: str, data: bytes, version: str | None) -> str | None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str: ...

    def gdal_path(self, key: str) -> str: ...

    def check_writable(self) -> None: ...

    def sweep_temps(self, max_age_s: float = STALE_TEMP_S,
                    dead_runs: frozenset[str] = frozenset()) -> list[str]: ...


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"store key {key!r} is not a relative path like 'ortho/s1.tif'")
    return key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class LocalStore:
    """Products under a local folder."""

    root: str
    run_id: str = field(default_factory=new_run_id)

    def _path(self, key: str) -> Path:
        return Path(self.root) / _check_key(key)

    def _tmp(self, dest: Path) -> Path:
        return dest.with_name(f"{TMP_PREFIX}{self.run_id}.{uuid.uuid4().hex[:12]}-{dest.name}")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def stat(self, key: str) -> ObjectStat | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot stat ({exc.strerror})") from exc
        return ObjectStat(st.st_size, str(st.st_mtime_ns))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot read ({exc.strerror})") from exc

    def sha256(self, key: str) -> str:
        try:
            return sha256_file(self._path(key))
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot read ({exc.strerror})") from exc

    def _publish(self, key: str, write: Callable[[BinaryIO], object]) -> None:
        dest = self._path(key)
        tmp = self._tmp(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{self.uri(key)}: cannot write ({exc})") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._publish(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path) -> None:
        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                f.writelines(iter(lambda: src.read(1 << 20), b""))

        self._publish(key, copy)

    def move_file(self, key: str, path: Path) -> None:
        """Publish the finished file ``path`` under ``key``, consuming it: renamed onto the
        key (after an fsync) when it is on the store's filesystem, else copied."""
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
            os.replace(path, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise StoreError(f"{self.uri(key)}: cannot move {path} there ({exc})") from exc
            self.put_file(key, path)  # another filesystem: copied (atomically), then removed
            path.unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes of ``key`` and their version (their SHA-256), or None when absent."""
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot read ({exc.strerror})") from exc
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        """Write ``key`` if it is still at ``version`` (None: if absent): the new version,
        or None when the condition failed."""
        dest = self._path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest.parent / LOCK_NAME, "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                current = self.read_versioned(key)
                if (current[1] if current else None) != version:
                    return None
                self._publish(key, lambda f: f.write(data))
                return hashlib.sha256(data).hexdigest()
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot write ({exc})") from exc

    def list_keys(self, prefix: str = "") -> list[str]:
        base = Path(self.root)
        if not base.is_dir():
            return []
        keys = (
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(HIDDEN_PREFIX)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(Path(self.root) / key)

    def gdal_path(self, key: str) -> str:
        return self.uri(key)

    def check_writable(self) -> None:
        """Create the folder if needed and write (then remove) a temporary file in it."""
        root = Path(self.root)
        if root.exists() and not root.is_dir():
            raise StoreError(f"{root}: output is an existing file; expected a folder")
        probe = self._tmp(root / "probe")
        try:
            root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"{root}: output folder is not writable ({exc.strerror})") from exc

    def sweep_temps(self, max_age_s: float = STALE_TEMP_S,
                    dead_runs: frozenset[str] = frozenset()) -> list[str]:
        """Remove the temporaries of this run and of ``dead_runs``, and others' older than
        ``max_age_s``."""
        base = Path(self.root)
        if not base.is_dir():
            return []
        gone = dead_runs | {self.run_id}
        cutoff = time.time() - max_age_s
        swept = []
        for p in sorted(base.rglob(f"{TMP_PREFIX}*")):
            run = p.name[len(TMP_PREFIX):].split(".", 1)[0]
            try:
                if run not in gone and p.stat().st_mtime > cutoff:
                    continue  # another run may be publishing it right now
                p.unlink()
            except FileNotFoundError:
                continue
            swept.append(p.relative_to(base).as_posix())
        return swept


_CLIENTS: dict[tuple[str | None, str | None, bool], Any] = {}


def s3_client(endpoint_url: str | None, region: str | None) -> Any:
    """A boto3 S3 client of this process, with bounded timeouts and retries."""
    unsigned = os.environ.get("AWS_NO_SIGN_REQUEST", "").upper() in ("YES", "TRUE", "1")
    key = (endpoint_url, region, unsigned)
    if key not in _CLIENTS:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                        retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                        signature_version=UNSIGNED if unsigned else None)
        _CLIENTS[key] = boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                                     config=config)
    return _CLIENTS[key]


def _transfer_config() -> Any:
    """boto3's managed-transfer settings for products: :data:`S3_PART_BYTES` parts."""
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=S3_PART_BYTES, multipart_chunksize=S3_PART_BYTES,
                          max_concurrency=S3_PARTS_IN_FLIGHT)


def _s3_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    # boto3's managed transfers wrap a failed request as S3UploadFailedError, a Boto3Error
    return (ClientError, BotoCoreError, Boto3Error)


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


@dataclass(frozen=True, slots=True)
class S3Store:
    """Products under ``s3://bucket/prefix`` (any S3 API: AWS, or a test server)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    run_id: str = field(default_factory=new_run_id)

    @property
    def client(self) -> Any:
        return s3_client(self.endpoint_url, self.region)

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def _fail(self, key: str, what: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.uri(key)}: cannot {what} ({exc})")

    def stat(self, key: str) -> ObjectStat | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except _s3_errors() as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(key, "check", exc) from exc
        return ObjectStat(int(head["ContentLength"]), str(head["ETag"]))

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def get_bytes(self, key: str) -> bytes:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except _s3_errors() as exc:
            raise self._fail(key, "read", exc) from exc

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            for block in iter(lambda: body.read(1 << 20), b""):
                digest.update(block)
        except _s3_errors() as exc:
            raise self._fail(key, "read", exc) from exc
        return digest.hexdigest()

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except _s3_errors() as exc:
            raise self._fail(key, "write", exc) from exc

    def put_file(self, key: str, path: Path) -> None:
        """Upload ``path`` to the key: one PUT, or a multipart upload visible only once
        complete (module docstring)."""
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key),
                                    Config=_transfer_config())
        except (*_s3_errors(), OSError) as exc:  # type: ignore[misc]
            raise self._fail(key, "write", exc) from exc

    def move_file(self, key: str, path: Path) -> None:
        """:meth:`put_file`, then remove ``path``."""
        self.put_file(key, path)
        path.unlink(missing_ok=True)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The bytes of ``key`` and their ETag, or None when absent."""
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return bytes(obj["Body"].read()), str(obj["ETag"])
        except _s3_errors() as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(key, "read", exc) from exc

    def put_if(self, key: str, data: bytes, version: str | None) -> str | None:
        """A conditional PUT (``If-None-Match: *`` when version is None, else
        ``If-Match: version``): the new ETag, or None when the condition failed."""
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                           **condition)
        except _s3_errors() as exc:
            if _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict",
                                    "409", "NoSuchKey", "404"):
                return None
            raise self._fail(key, "write", exc) from exc
        return str(reply["ETag"])

    def _list_raw(self, prefix: str) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                objects.extend(page.get("Contents", []))
        except _s3_errors() as exc:
            raise StoreError(f"s3://{self.bucket}/{prefix}: cannot list ({exc})") from exc
        return objects

    def _abort_uploads(self, prefix: str, cutoff: dt.datetime) -> list[str]:
        """Abort the multipart uploads under ``prefix`` initiated before ``cutoff``: their
        keys."""
        aborted = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for upload in stale_uploads(page.get("Uploads", []), cutoff):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"],
                                                       UploadId=upload["UploadId"])
                    aborted.append(str(upload["Key"]))
        except _s3_errors() as exc:
            if _error_code(exc) in ("AccessDenied", "403", "NotImplemented", "501"):
                # a role from before the sweep listed uploads, or a server without the call:
                # the products are whole; the bucket's lifecycle rule aborts what is left
                log.warning("s3://%s/%s: incomplete uploads not listed (%s); left to the "
                            "bucket's lifecycle rule", self.bucket, prefix, _error_code(exc))
                return aborted
            raise StoreError(f"s3://{self.bucket}/{prefix}: cannot abort incomplete uploads "
                             f"({exc})") from exc
        return aborted

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.prefix.strip("/")
        full = f"{base}/{prefix}" if base else prefix
        cut = len(base) + 1 if base else 0
        keys = (str(o["Key"])[cut:] for o in self._list_raw(full))
        return sorted(k for k in keys if not k.startswith(S3_TMP_DIR + "/"))

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _s3_errors() as exc:
            raise self._fail(key, "delete", exc) from exc

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._key(key)}"

    def check_writable(self) -> None:
        """Write (then delete) a temporary object of this run under the prefix."""
        probe = f"{S3_TMP_DIR}/{self.run_id}/probe"
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(probe), Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=self._key(probe))
        except _s3_errors() as exc:
            raise StoreError(f"s3://{self.bucket}/{self.prefix}: output is not writable "
                             f"({exc})") from exc

    def sweep_temps(self, max_age_s: float = STALE_TEMP_S,
                    dead_runs: frozenset[str] = frozenset()) -> list[str]:
        """Abort the incomplete uploads under the prefix older than ``max_age_s`` (a killed
        writer's; an upload names no run), and delete the temporary objects
        (:meth:`check_writable`'s probe) of this run and of ``dead_runs``, and others' older
        than ``max_age_s``."""
        base = self.prefix.strip("/")
        tmp_root = f"{base}/{S3_TMP_DIR}/" if base else f"{S3_TMP_DIR}/"
        gone = dead_runs | {self.run_id}
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=max_age_s)
        swept = self._abort_uploads(f"{base}/" if base else "", cutoff)
        for obj in self._list_raw(tmp_root):
            k = str(obj["Key"])
            if k[len(tmp_root):].split("/", 1)[0] not in gone and obj["LastModified"] > cutoff:
                continue  # another run may be publishing it right now
            try:
                self.client.delete_object(Bucket=self.bucket, Key=k)
            except _s3_errors() as exc:
                raise StoreError(f"s3://{self.bucket}/{k}: cannot delete ({exc})") from exc
            swept.append(k)
        return swept


def stale_uploads(uploads: Iterable[Mapping[str, Any]], cutoff: dt.datetime
                  ) -> list[Mapping[str, Any]]:
    """The uploads (``ListMultipartUploads`` entries) initiated before ``cutoff``: a killed
    writer's; a younger one may be a live writer's."""
    return [u for u in uploads if u["Initiated"] <= cutoff]


def s3_endpoint_from_env() -> str | None:
    """The S3 endpoint URL boto3 and GDAL share: ``AWS_ENDPOINT_URL(_S3)``, else GDAL's
    ``AWS_S3_ENDPOINT`` (host:port) with ``AWS_HTTPS``."""
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        return url
    host = os.environ.get("AWS_S3_ENDPOINT")
    if host:
        scheme = "http" if os.environ.get("AWS_HTTPS", "YES").upper() in ("NO", "FALSE") else "https"
        return host if "://" in host else f"{scheme}://{host}"
    return None


def open_store(url: str) -> LocalStore | S3Store:
    """``s3://bucket/prefix`` or a local folder; S3's endpoint from ``AWS_ENDPOINT_URL``."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise StoreError(f"{url!r} names no bucket; expected s3://BUCKET/PREFIX")
        return S3Store(
            bucket,
            prefix.strip("/"),
            endpoint_url=s3_endpoint_from_env(),
            region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
        )
    if "://" in url:
        raise StoreError(f"{url!r}: unsupported scheme; expected a local path or s3://BUCKET/PREFIX")
    return LocalStore(str(Path(url).resolve()))
