"""Where products go: an :class:`ObjectStore` Protocol with a local and an S3 implementation.

A product is visible only when complete. Both stores publish in two steps:

* local: the bytes go to a hidden temporary file beside the destination
  (``.eochain-tmp-<uuid>-<name>``), are flushed and fsynced, then
  ``os.replace`` renames it onto the key (atomic on POSIX);
* S3: the bytes are uploaded under ``<prefix>/_eochain_tmp/<uuid>/<key>``, then
  copied server-side onto the key (the object appears whole or not at all)
  and the temporary object is deleted.

A writer killed between the two steps leaves a temporary file/object and no
partial product; :meth:`ObjectStore.sweep_temps` removes such leftovers and
the runtime calls it when a campaign ends. Keys are ``/``-separated relative
paths. Stores are small frozen values so they travel to Ray actors; the S3
client is created lazily in each process (credentials come from the usual
boto3 chain, never from the store's fields).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from scheduler.runtime.errors import StoreError

TMP_PREFIX = ".eochain-tmp-"
S3_TMP_DIR = "_eochain_tmp"


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key -> bytes store with atomic publication."""

    def exists(self, key: str) -> bool: ...

    def get_bytes(self, key: str) -> bytes: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str: ...

    def gdal_path(self, key: str) -> str: ...

    def sweep_temps(self) -> list[str]: ...


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

    def _path(self, key: str) -> Path:
        return Path(self.root) / _check_key(key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise StoreError(f"{self.uri(key)}: cannot read ({exc.strerror})") from exc

    def _publish(self, key: str, write: Any) -> None:
        dest = self._path(key)
        tmp = dest.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{dest.name}")
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
        def copy(f: Any) -> None:
            with open(path, "rb") as src:
                for block in iter(lambda: src.read(1 << 20), b""):
                    f.write(block)

        self._publish(key, copy)

    def list_keys(self, prefix: str = "") -> list[str]:
        base = Path(self.root)
        if not base.is_dir():
            return []
        keys = (
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(TMP_PREFIX)
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str) -> str:
        return str(Path(self.root) / key)

    def gdal_path(self, key: str) -> str:
        return self.uri(key)

    def sweep_temps(self) -> list[str]:
        base = Path(self.root)
        if not base.is_dir():
            return []
        swept = []
        for p in sorted(base.rglob(f"{TMP_PREFIX}*")):
            p.unlink(missing_ok=True)
            swept.append(p.relative_to(base).as_posix())
        return swept


_CLIENTS: dict[tuple[str | None, str | None], Any] = {}


@dataclass(frozen=True, slots=True)
class S3Store:
    """Products under ``s3://bucket/prefix`` (any S3 API: AWS, or a test server)."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None

    @property
    def client(self) -> Any:
        key = (self.endpoint_url, self.region)
        if key not in _CLIENTS:
            import boto3

            _CLIENTS[key] = boto3.client(
                "s3", endpoint_url=self.endpoint_url, region_name=self.region
            )
        return _CLIENTS[key]

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def _fail(self, key: str, what: str, exc: Exception) -> StoreError:
        return StoreError(f"{self.uri(key)}: cannot {what} ({exc})")

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(key, "check", exc) from exc
        return True

    def get_bytes(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return bytes(body.read())
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(key, "read", exc) from exc

    def _commit(self, key: str, upload: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        tmp = self._key(f"{S3_TMP_DIR}/{uuid.uuid4().hex}/{key}")
        try:
            upload(tmp)
            self.client.copy(
                {"Bucket": self.bucket, "Key": tmp}, self.bucket, self._key(key)
            )
        except (ClientError, BotoCoreError, OSError) as exc:
            raise self._fail(key, "write", exc) from exc
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=tmp)
            except (ClientError, BotoCoreError):
                pass  # a leftover temporary object is swept at the end of the run

    def put_bytes(self, key: str, data: bytes) -> None:
        self._commit(
            key, lambda tmp: self.client.put_object(Bucket=self.bucket, Key=tmp, Body=data)
        )

    def put_file(self, key: str, path: Path) -> None:
        self._commit(key, lambda tmp: self.client.upload_file(str(path), self.bucket, tmp))

    def _list_raw(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"s3://{self.bucket}/{prefix}: cannot list ({exc})") from exc
        return keys

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self.prefix.strip("/")
        full = f"{base}/{prefix}" if base else prefix
        cut = len(base) + 1 if base else 0
        return sorted(
            k[cut:] for k in self._list_raw(full) if not k[cut:].startswith(S3_TMP_DIR + "/")
        )

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def gdal_path(self, key: str) -> str:
        return f"/vsis3/{self.bucket}/{self._key(key)}"

    def sweep_temps(self) -> list[str]:
        base = self.prefix.strip("/")
        tmp_root = f"{base}/{S3_TMP_DIR}/" if base else f"{S3_TMP_DIR}/"
        swept = self._list_raw(tmp_root)
        for k in swept:
            self.client.delete_object(Bucket=self.bucket, Key=k)
        return swept


def open_store(url: str) -> LocalStore | S3Store:
    """``s3://bucket/prefix`` or a local folder; S3's endpoint from ``AWS_ENDPOINT_URL``."""
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        if not bucket:
            raise StoreError(f"{url!r} names no bucket; expected s3://BUCKET/PREFIX")
        return S3Store(
            bucket,
            prefix.strip("/"),
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION"),
        )
    if "://" in url:
        raise StoreError(f"{url!r}: unsupported scheme; expected a local path or s3://BUCKET/PREFIX")
    return LocalStore(str(Path(url).resolve()))
