"""Leases: two drivers on one output compute each product once.

A lease is a small JSON object ``_leases/<product key>.json`` in the product
store, naming its owner (a run id) and an expiry time (UTC seconds). A
driver computes a product only while it holds its lease:

* acquire: create the object only if absent (S3 ``If-None-Match: *``; local:
  under the folder's ``flock``), or replace it only if it is the expired
  lease just read (S3 ``If-Match: <ETag>``; local: same lock, same bytes):
  of two drivers racing, exactly one wins;
* renew: a heartbeat thread rewrites every held lease, conditional on its
  last version, every ``ttl_s / 3``; a lease lost to a takeover (the owner
  was stalled past the expiry) is dropped from the held set;
* release: delete it once the product and its manifest record are published.

A driver that finds a product leased by another live run waits for that
run's manifest record instead of computing it; when the other driver dies,
its leases expire after ``ttl_s`` and the waiting driver takes them over.
While it holds its book open, a driver also keeps a heartbeat,
``_runs/<run id>.json`` (same expiry, renewed with the leases, deleted on
exit). A heartbeat left expired names a dead run: :func:`dead_runs` lists
them, and the end-of-run sweep (:meth:`~scheduler.products.store.ObjectStore.sweep_temps`)
removes those runs' temporaries at once instead of waiting for them to age.
Products go straight to their key, so a writer killed midway (a lost node,
a killed driver) leaves no partial product, only: in a folder, the hidden
temporary file of a write (a record, an item, a COG copied from another
filesystem; ``LocalStore.move_file`` renames a COG on the same filesystem
onto its key); on S3, an invisible incomplete multipart upload, which names
no run and is aborted once older than
:data:`~scheduler.products.store.STALE_TEMP_S`. A run
stalled longer than the TTL counts as dead too; its interrupted write then
fails and is reported, never published half-done.

Leases are for efficiency, not correctness: products are deterministic and
published atomically, so the rare double computation (clocks of two hosts
skewed by more than the TTL; an S3-compatible server that ignores
conditional headers, where both writers "win"; AWS S3 and moto honour
them) only costs time. Expiry compares wall clocks
of the hosts involved; keep them NTP-synchronised.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from scheduler.products.errors import StoreError
from scheduler.products.store import LocalStore, S3Store

LEASE_DIR = "_leases"
RUN_DIR = "_runs"
#: Seconds a lease lasts without renewal (a dead driver's products wait this long).
LEASE_TTL_S = 60.0


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds a product and until when (UTC epoch seconds)."""

    owner: str
    expires_at: float

    def to_json(self) -> bytes:
        return json.dumps({"owner": self.owner, "expires_at": self.expires_at}).encode()

    @classmethod
    def parse(cls, data: bytes) -> Lease | None:
        """The lease in ``data``, or None for bytes that are not one (treated as expired)."""
        try:
            doc = json.loads(data)
            return cls(str(doc["owner"]), float(doc["expires_at"]))
        except (ValueError, TypeError, KeyError):
            return None


def lease_key(product_key: str) -> str:
    return f"{LEASE_DIR}/{product_key}.json"


def heartbeat_key(run_id: str) -> str:
    return f"{RUN_DIR}/{run_id}.json"


def dead_runs(store: LocalStore | S3Store) -> frozenset[str]:
    """Ids of runs whose heartbeat expired (their drivers died before their end)."""
    now = time.time()
    dead = set()
    for key in store.list_keys(RUN_DIR + "/"):
        try:
            beat = Lease.parse(store.get_bytes(key))
        except StoreError:
            continue  # deleted meanwhile: that run ended
        if beat is not None and beat.expires_at < now:
            dead.add(beat.owner)
    return frozenset(dead)


class LeaseBook:
    """The leases one driver holds in a store; a context manager that renews them."""

    def __init__(self, store: LocalStore | S3Store, owner: str,
                 ttl_s: float = LEASE_TTL_S) -> None:
        self.store = store
        self.owner = owner
        self.ttl_s = ttl_s
        self._held: dict[str, str] = {}  # product key -> version of our lease object
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _fresh(self) -> bytes:
        return Lease(self.owner, time.time() + self.ttl_s).to_json()

    def acquire(self, product_key: str) -> bool:
        """Take the product's lease if nobody holds a live one; True when held."""
        key = lease_key(product_key)
        with self._lock:
            if product_key in self._held:
                return True
            current = self.store.read_versioned(key)
            if current is not None:
                lease = Lease.parse(current[0])
                if lease is not None and lease.owner != self.owner and \
                        lease.expires_at > time.time():
                    return False
            version = self.store.put_if(key, self._fresh(),
                                        None if current is None else current[1])
            if version is None:
                return False
            self._held[product_key] = version
            return True

    def holder(self, product_key: str) -> Lease | None:
        """The live lease of a product, or None when free or expired."""
        current = self.store.read_versioned(lease_key(product_key))
        lease = None if current is None else Lease.parse(current[0])
        return lease if lease is not None and lease.expires_at > time.time() else None

    def held(self, product_key: str) -> bool:
        with self._lock:
            return product_key in self._held

    def renew(self) -> None:
        """Extend every held lease; one taken over meanwhile is dropped."""
        with self._lock:
            for product_key, version in list(self._held.items()):
                key = lease_key(product_key)
                try:
                    new = self.store.put_if(key, self._fresh(), version)
                except StoreError:
                    continue  # a passing store error: retried at the next beat
                if new is None:
                    del self._held[product_key]
                else:
                    self._held[product_key] = new

    def release(self, product_key: str) -> None:
        with self._lock:
            if self._held.pop(product_key, None) is not None:
                try:
                    self.store.delete(lease_key(product_key))
                except StoreError:
                    pass  # it expires on its own

    def release_all(self) -> None:
        for product_key in list(self._held):
            self.release(product_key)

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew()
            self._heartbeat()

    def _heartbeat(self) -> None:
        try:
            self.store.put_bytes(heartbeat_key(self.owner), self._fresh())
        except StoreError:
            pass  # a passing store error: retried at the next beat

    def __enter__(self) -> Self:
        self._heartbeat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="eochain-leases", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.release_all()
        try:
            self.store.delete(heartbeat_key(self.owner))
        except StoreError:
            pass  # it expires; a later sweep then treats this run as dead, which it is
