"""The manifest of finished products: what makes a run idempotent and resumable.

A product's key is the SHA-256 of a canonical JSON of what determines its
bytes: the operation, its parameters, and each input's identity (its URI
plus size and modification time for local files, so a changed input makes a
new product). One small JSON record per finished product is published under
``_manifest/<key>.json`` in the product store, *after* the product and its
STAC item: a record therefore always names a complete product, and a run
killed at any point leaves either a record or nothing. Rerunning the same
campaign skips every product whose record exists and whose object is still
there, and recomputes the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scheduler.runtime.errors import ManifestError
from scheduler.runtime.store import ObjectStore

MANIFEST_DIR = "_manifest"


def input_identity(uri: str) -> str:
    """A string that changes when the input does: URI, and size + mtime for local files."""
    try:
        st = os.stat(uri)
    except OSError:
        return uri
    return f"{uri}|{st.st_size}|{st.st_mtime_ns}"


def product_key(op: str, params: Mapping[str, object], inputs: Sequence[str]) -> str:
    """Hash of operation, parameters and input identities (hex SHA-256, 64 chars)."""
    doc = {"op": op, "params": dict(params), "inputs": [input_identity(u) for u in inputs]}
    try:
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ManifestError(f"parameters of {op} are not JSON values: {params!r} ({exc})") from exc
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """A finished product: its key, where it is, what it came from and its checksum."""

    key: str
    object_key: str
    uri: str
    op: str
    label: str
    sha256: str
    nbytes: int
    stac_key: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> ProductRecord:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{where}: not a product record ({exc})") from exc


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

    def done_keys(self) -> set[str]:
        """Keys of products recorded whose object still exists."""
        done: set[str] = set()
        objects = set(self.store.list_keys())
        for rk in self.store.list_keys(MANIFEST_DIR + "/"):
            rec = ProductRecord.from_json(self.store.get_bytes(rk), self.store.uri(rk))
            if rec.object_key in objects:
                done.add(rec.key)
        return done
