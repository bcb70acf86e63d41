"""The manifest of finished products: what makes a run idempotent, resumable and verified.

A product's key is the SHA-256 of a canonical JSON of everything that
determines its bytes (:func:`product_key`): the operation, its parameters,
eochain's kernel version (:data:`KERNEL_VERSION`, raised whenever a kernel
changes its output) and each input's identity (:func:`input_identity`):

* a local file: path, size and modification time; a folder (DEM tiles): the
  same for every file in it;
* an S3 object (``s3://`` or ``/vsis3/``): its URI, size and ETag;
* the RPC model actually used, whatever held it (the image's metadata, a
  ``.geom``/``.RPB``/XML sidecar): the hash of its coefficients
  (:func:`rpc_identity`), so an edited sidecar makes a new product.

One small JSON record per finished product is published under
``_manifest/<key>.json`` *after* the product and its STAC item, by the same
write task: a record therefore always names a complete product. It holds
the product's size, SHA-256 and the store's version of the object at
publication (local mtime, S3 ETag). On resume, :meth:`Manifest.verify`
checks what a run would skip: the object is there with the recorded size
(always), and its SHA-256 is recomputed when its version changed since
publication (a rewrite, a touch, a copy); a product that fails is rebuilt.
The STAC item is checked too (present, naming the recorded checksum), and
rewritten on its own when it is not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from scheduler.products.errors import ManifestError, StoreError
from scheduler.products.store import ObjectStore, S3Store, s3_endpoint_from_env

MANIFEST_DIR = "_manifest"
#: Version of the kernels' output bytes: raise it when any kernel (ortho, stereo, COG
#: writing) changes what it writes for the same inputs, so resumed campaigns rebuild.
KERNEL_VERSION = 2


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}|{st.st_mtime_ns}"


def _s3_identity(bucket: str, key: str) -> str:
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    stat = S3Store(bucket, "", s3_endpoint_from_env(), region, run_id="identity").stat(key)
    if stat is None:
        raise ManifestError(f"s3://{bucket}/{key}: input not found")
    return f"{stat.nbytes}|{stat.version}"


def input_identity(uri: str) -> str:
    """A string that changes when the input does (see the module docstring).

    Raises :class:`ManifestError` for an input that cannot be identified (missing,
    unreadable, an S3 object that cannot be reached).
    """
    for scheme in ("s3://", "/vsis3/"):
        if uri.startswith(scheme):
            bucket, _, key = uri[len(scheme):].partition("/")
            try:
                return f"{uri}|{_s3_identity(bucket, key)}"
            except StoreError as exc:
                raise ManifestError(f"{uri}: cannot identify the input ({exc})") from exc
    if "://" in uri or uri.startswith("/vsi"):
        return uri  # another remote scheme: identified by its name only
    path = Path(uri)
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            parts = [f"{p.relative_to(path).as_posix()}|{_file_identity(p)}" for p in files]
            digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
            return f"{uri}|dir|{digest}"
        return f"{uri}|{_file_identity(path)}"
    except OSError as exc:
        raise ManifestError(f"{uri}: cannot identify the input ({exc.strerror})") from exc


def rpc_identity(rpc: object) -> str:
    """Hash of an RPC model's coefficients and crop origin (not of where it was read)."""
    if not dataclasses.is_dataclass(rpc) or isinstance(rpc, type):
        raise ManifestError(f"{rpc!r}: expected an RPC model (a dataclass)")
    fields = {k: v for k, v in asdict(rpc).items() if k != "source"}
    text = json.dumps(fields, sort_keys=True, default=repr)
    return "rpc|" + hashlib.sha256(text.encode()).hexdigest()


def product_key(op: str, params: Mapping[str, object], inputs: Sequence[str],
                extra_identities: Sequence[str] = ()) -> str:
    """Hash of operation, parameters, kernel version and input identities (hex SHA-256).

    ``extra_identities`` are identities computed by the caller (the RPC models used).
    """
    doc = {"op": op, "params": dict(params), "kernel_version": KERNEL_VERSION,
           "inputs": [input_identity(u) for u in inputs], "extra": list(extra_identities)}
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"parameters of {op} are not JSON values: {params!r} ({exc})") from exc
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """A finished product: its key, where it is, what it came from, its size and checksum.

    ``version`` is the store's version of the object when it was published (local
    mtime in ns, S3 ETag): while it is unchanged, the checksum need not be recomputed.
    """

    key: str
    object_key: str
    uri: str
    op: str
    label: str
    sha256: str
    nbytes: int
    stac_key: str = ""
    version: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ProductRecord:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{where}: not a product record ({exc})") from exc


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Manifest.verify` found: the product is good (with or without a
    good STAC item), or must be rebuilt, and why."""

    record: ProductRecord | None
    product_ok: bool
    item_ok: bool
    reason: str = ""


class Manifest:
    """The records of finished products in a store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def record_key(key: str) -> str:
        return f"{MANIFEST_DIR}/{key}.json"

    def record(self, rec: ProductRecord) -> None:
        """Publish the record (atomically); the product must already be in place."""
        self.store.put_bytes(self.record_key(rec.key), rec.to_json())

    def get(self, key: str) -> ProductRecord | None:
        rk = self.record_key(key)
        if not self.store.exists(rk):
            return None
        return ProductRecord.from_json(self.store.get_bytes(rk), self.store.uri(rk))

    def verify(self, key: str) -> Verdict:
        """Check the recorded product ``key`` as a resumed run would skip it."""
        try:
            rec = self.get(key)
        except ManifestError as exc:
            return Verdict(None, False, False, str(exc))
        if rec is None:
            return Verdict(None, False, False, "not recorded")
        uri = self.store.uri(rec.object_key)
        stat = self.store.stat(rec.object_key)
        if stat is None:
            return Verdict(rec, False, False, f"{uri}: recorded but missing")
        if stat.nbytes != rec.nbytes:
            return Verdict(rec, False, False, f"{uri}: {stat.nbytes} bytes, recorded "
                                              f"{rec.nbytes}")
        if stat.version != rec.version and self.store.sha256(rec.object_key) != rec.sha256:
            return Verdict(rec, False, False, f"{uri}: SHA-256 differs from the record")
        if stat.version != rec.version:
            # same bytes, rewritten or touched: remember the new version, skip the hash next time
            rec = dataclasses.replace(rec, version=stat.version)
            self.record(rec)
        return Verdict(rec, True, *self._check_item(rec))

    def _check_item(self, rec: ProductRecord) -> tuple[bool, str]:
        if not rec.stac_key:
            return True, ""
        where = self.store.uri(rec.stac_key)
        try:
            item = json.loads(self.store.get_bytes(rec.stac_key))
        except StoreError:
            return False, f"{where}: STAC item missing"
        except ValueError:
            return False, f"{where}: STAC item is not JSON"
        props = item.get("properties") if isinstance(item, dict) else None
        if not isinstance(props, dict) or props.get("eochain:sha256") != rec.sha256:
            return False, f"{where}: STAC item does not name the product's checksum"
        return True, ""
