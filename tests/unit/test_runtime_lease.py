"""Product leases on a local store: one holder at a time, expiry, takeover, renewal."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from scheduler.products.lease import Lease, LeaseBook, dead_runs, heartbeat_key, lease_key
from scheduler.products.store import TMP_PREFIX, LocalStore

pytestmark = pytest.mark.unit


def test_one_holder_at_a_time_and_release(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    a, b = LeaseBook(store, "run-a"), LeaseBook(store, "run-b")
    assert a.acquire("k") and a.acquire("k")  # holding it again is a no-op
    assert not b.acquire("k")
    holder = b.holder("k")
    assert holder is not None and holder.owner == "run-a"
    a.release("k")
    assert b.holder("k") is None and b.acquire("k") and not a.acquire("k")


def test_an_expired_lease_is_taken_over_and_its_renewal_fails(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    dead = LeaseBook(store, "run-dead")
    assert dead.acquire("k")
    store.put_bytes(lease_key("k"), Lease("run-dead", time.time() - 1).to_json())  # expired
    dead._held["k"] = "version before expiry"  # what the stalled owner believes it holds
    alive = LeaseBook(store, "run-alive")
    assert alive.acquire("k")
    dead.renew()  # the stalled owner wakes up: its renewal is refused, it drops the lease
    assert not dead.held("k") and alive.held("k")
    lease = alive.holder("k")
    assert lease is not None and lease.owner == "run-alive"


def test_garbage_in_a_lease_object_counts_as_expired(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    store.put_bytes(lease_key("k"), b"{not json")
    assert LeaseBook(store, "run-a").acquire("k")


def test_many_racing_drivers_one_winner(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    books = [LeaseBook(store, f"run-{i}") for i in range(8)]
    wins: list[str] = []
    start = threading.Barrier(len(books))

    def race(book: LeaseBook) -> None:
        start.wait()
        if book.acquire("k"):
            wins.append(book.owner)

    threads = [threading.Thread(target=race, args=(b,)) for b in books]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_the_heartbeat_keeps_a_lease_alive_past_its_ttl(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path))
    with LeaseBook(store, "run-a", ttl_s=0.6) as a:
        assert a.acquire("k")
        first = a.holder("k")
        assert first is not None
        deadline = time.monotonic() + 10
        while True:  # poll until a renewal has pushed the expiry forward
            now = a.holder("k")
            if now is not None and now.expires_at > first.expires_at:
                break
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.05)
        assert not LeaseBook(store, "run-b").acquire("k")
    assert not store.exists(lease_key("k"))  # released on exit


def test_a_dead_runs_temporaries_are_swept_by_the_next_run(tmp_path: Path) -> None:
    """A driver killed mid-copy: its heartbeat expires, the next run sweeps its temporary."""
    store = LocalStore(str(tmp_path), run_id="run-next")
    with LeaseBook(LocalStore(str(tmp_path), run_id="run-live"), "run-live"):
        assert store.exists(heartbeat_key("run-live"))
        live_tmp = tmp_path / f"{TMP_PREFIX}run-live.x-a.tif"
        live_tmp.write_bytes(b"being copied")
        killed_tmp = tmp_path / f"{TMP_PREFIX}run-killed.y-b.tif"
        killed_tmp.write_bytes(b"never finished")
        store.put_bytes(heartbeat_key("run-killed"), Lease("run-killed", time.time() - 1).to_json())
        assert dead_runs(store) == {"run-killed"}
        assert store.sweep_temps(dead_runs=dead_runs(store)) == [killed_tmp.name]
        assert live_tmp.exists()
    assert not store.exists(heartbeat_key("run-live"))  # a run that ended is not dead
