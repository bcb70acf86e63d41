"""Object storage behind a Protocol, and a preflight check of the product bucket's security.

:class:`ObjectStore` has two real implementations: :class:`S3ObjectStore`
(boto3; tests use moto's server over HTTP) and :class:`LocalObjectStore` (a
directory). Writes are atomic for readers: S3 makes an object visible only
when its upload completes; the local store writes a temporary file and
renames it.

:func:`bucket_security` reads back what ``terraform/s3.tf`` promises
(versioning, default encryption, public access block, a TLS-only policy) so
``eochain submit`` can refuse a bucket that lost them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from scheduler.cloud.errors import CloudApiError


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str, start: int | None = None, stop: int | None = None) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list_keys(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True, slots=True)
class BucketSecurity:
    bucket: str
    versioned: bool
    encryption: str | None
    public_access_blocked: bool
    tls_only: bool

    @property
    def problems(self) -> list[str]:
        out = []
        if not self.versioned:
            out.append("versioning is not enabled")
        if self.encryption is None:
            out.append("no default encryption")
        if not self.public_access_blocked:
            out.append("public access is not fully blocked")
        if not self.tls_only:
            out.append("no bucket policy denies aws:SecureTransport = false")
        return out


def _range_header(start: int | None, stop: int | None) -> str | None:
    if start is None and stop is None:
        return None
    first = start or 0
    return f"bytes={first}-" if stop is None else f"bytes={first}-{stop - 1}"


class S3ObjectStore:
    """:class:`ObjectStore` on one S3 bucket, keys under an optional prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, region: str | None = None,
                 session: boto3.session.Session | None = None,
                 endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._s3: Any = (session or boto3.session.Session()).client(
            "s3", region_name=region, endpoint_url=endpoint_url)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._s3, op)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise CloudApiError(f"s3.{op} on s3://{self.bucket}/{key} failed: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call("put_object", self._key(key), Key=self._key(key), Body=data)

    def get_bytes(self, key: str, start: int | None = None, stop: int | None = None) -> bytes:
        kwargs: dict[str, Any] = {"Key": self._key(key)}
        rng = _range_header(start, stop)
        if rng:
            kwargs["Range"] = rng
        body: bytes = self._call("get_object", self._key(key), **kwargs)["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise CloudApiError(
                f"s3.head_object on s3://{self.bucket}/{self._key(key)} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise CloudApiError(
                f"s3.head_object on s3://{self.bucket}/{self._key(key)} failed: {exc}") from exc
        return True

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix)
        try:
            for page in self._s3.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    yield str(obj["Key"])[len(self.prefix):]
        except (ClientError, BotoCoreError) as exc:
            raise CloudApiError(f"s3.list_objects_v2 on s3://{self.bucket}/{full} failed: {exc}"
                                ) from exc

    def delete(self, key: str) -> None:
        self._call("delete_object", self._key(key), Key=self._key(key))

    def bucket_security(self) -> BucketSecurity:
        return bucket_security(self._s3, self.bucket)


def _absent(exc: ClientError, *codes: str) -> bool:
    return exc.response.get("Error", {}).get("Code") in codes


def bucket_security(s3: Any, bucket: str) -> BucketSecurity:
    """What the bucket's configuration says about the properties of ``terraform/s3.tf``."""
    where = f"s3://{bucket}"
    try:
        versioned = s3.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
        try:
            rules = s3.get_bucket_encryption(Bucket=bucket)[
                "ServerSideEncryptionConfiguration"]["Rules"]
            encryption: str | None = rules[0]["ApplyServerSideEncryptionByDefault"][
                "SSEAlgorithm"]
        except ClientError as exc:
            if not _absent(exc, "ServerSideEncryptionConfigurationNotFoundError"):
                raise
            encryption = None
        try:
            pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
            blocked = all(pab.get(k) for k in ("BlockPublicAcls", "IgnorePublicAcls",
                                               "BlockPublicPolicy", "RestrictPublicBuckets"))
        except ClientError as exc:
            if not _absent(exc, "NoSuchPublicAccessBlockConfiguration"):
                raise
            blocked = False
        try:
            policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError as exc:
            if not _absent(exc, "NoSuchBucketPolicy"):
                raise
            policy = {}
    except (ClientError, BotoCoreError) as exc:
        raise CloudApiError(f"reading the configuration of {where} failed: {exc}") from exc
    return BucketSecurity(bucket, versioned, encryption, blocked, _denies_plain_http(policy))


def _denies_plain_http(policy: dict[str, Any]) -> bool:
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for s in statements:
        cond = s.get("Condition", {}).get("Bool", {})
        if (s.get("Effect") == "Deny"
                and str(cond.get("aws:SecureTransport", "")).lower() == "false"):
            return True
    return False


class LocalObjectStore:
    """:class:`ObjectStore` on a local directory (keys are relative paths)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise CloudApiError(f"key {key!r} escapes the store root {str(self.root)!r}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    def get_bytes(self, key: str, start: int | None = None, stop: int | None = None) -> bytes:
        try:
            data = self._path(key).read_bytes()
        except OSError as exc:
            raise CloudApiError(f"reading {key!r} from {str(self.root)!r} failed: {exc}") from exc
        return data[start:stop]

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not path.name.startswith(".tmp-") and rel.startswith(prefix):
                yield rel

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
