"""Spot interruptions during a campaign: notices from the project's metadata servers, drain, fallback.

Each simulated node is a thread with its own IMDSv2 metadata server on
127.0.0.1 and an :class:`InterruptionWatcher` polling it. The test issues
two-second notices to nodes of one spot type while a campaign of short and
long tasks runs. A node that gets a notice takes no new task, keeps what
:func:`plan_drain` says finishes in time and hands the rest back; at the
deadline it vanishes, and what it was still running is lost and re-queued.
After ``max_interruptions`` notices the type is flapping and replacements
come from :func:`choose_fallback`. The ledger must show every task committed
exactly once: nothing lost, nothing done twice.

This exercises the node side of the drain hook (watcher -> callback ->
hand-back) that the Ray runtime plugs into; see the module docs of
``scheduler.cloud.imds``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator

import pytest

from planner.catalog import load_catalog
from scheduler.cloud.imds import (
    ImdsClient,
    InFlightTask,
    InterruptionNotice,
    InterruptionWatcher,
    plan_drain,
)
from scheduler.fleet.fallback import (
    FallbackDecision,
    FallbackPolicy,
    InterruptionTracker,
    choose_fallback,
)
from scheduler.testing.imds_server import MetadataServer

pytestmark = pytest.mark.integration

SHORT_S, LONG_S = 0.02, 4.0


class Campaign:
    """The dispatcher's ledger: queue, assignments, commits (one per task)."""

    def __init__(self, n_tasks: int) -> None:
        self.lock = threading.Lock()
        self.queue: deque[str] = deque(f"t{i:03d}" for i in range(n_tasks))
        self.runtime_s = {k: (LONG_S if i % 15 == 7 else SHORT_S)
                          for i, k in enumerate(self.queue)}
        self.owner: dict[str, str] = {}
        self.commits: Counter[str] = Counter()
        self.handed_back: list[str] = []
        self.lost: list[str] = []
        self.n_tasks = n_tasks

    def take(self, node: str) -> str | None:
        with self.lock:
            if not self.queue:
                return None
            key = self.queue.popleft()
            self.owner[key] = node
            return key

    def commit(self, node: str, key: str) -> None:
        with self.lock:
            if self.owner.get(key) == node:  # a stale owner never commits
                self.commits[key] += 1
                del self.owner[key]

    def requeue(self, node: str, keys: list[str], lost: bool) -> None:
        with self.lock:
            for key in keys:
                if self.owner.get(key) == node:
                    del self.owner[key]
                    self.queue.appendleft(key)
                    (self.lost if lost else self.handed_back).append(key)

    def finished(self) -> bool:
        with self.lock:
            return len(self.commits) == self.n_tasks


class Node(threading.Thread):
    """A worker: runs tasks, watches its metadata server, drains on a notice."""

    def __init__(self, name: str, pool: str, campaign: Campaign,
                 on_gone: Callable[[Node], None]) -> None:
        super().__init__(name=name, daemon=True)
        self.pool = pool
        self.campaign = campaign
        self.on_gone = on_gone
        self.imds = MetadataServer(instance_id=f"i-{name}").start()
        self.notice: InterruptionNotice | None = None
        self.deadline_mono: float | None = None
        self.current: tuple[str, float] | None = None
        self.cancel = threading.Event()
        self.done = 0
        self.watcher = InterruptionWatcher(ImdsClient(self.imds.url), self._on_notice,
                                           poll_s=0.05)

    def _on_notice(self, notice: InterruptionNotice) -> None:
        self.notice = notice
        self.deadline_mono = time.monotonic() + notice.seconds_left()
        cur = self.current
        if cur is not None:
            decision = plan_drain([InFlightTask(cur[0], cur[1], self.campaign.runtime_s[cur[0]])],
                                  notice.seconds_left(), time.monotonic(), margin_s=0.5)
            if decision.hand_back:
                self.cancel.set()
                self.campaign.requeue(self.name, list(decision.hand_back), lost=False)

    def run(self) -> None:
        self.watcher.start()
        try:
            while not self.campaign.finished():
                if self.deadline_mono is not None:
                    if time.monotonic() >= self.deadline_mono:
                        break
                    time.sleep(0.01)  # draining: no new task
                    continue
                key = self.campaign.take(self.name)
                if key is None:
                    time.sleep(0.01)
                    continue
                self.current = (key, time.monotonic())
                self.cancel.clear()
                end = time.monotonic() + self.campaign.runtime_s[key]
                while time.monotonic() < end and not self.cancel.is_set():
                    if self.deadline_mono is not None and time.monotonic() >= self.deadline_mono:
                        break
                    time.sleep(0.005)
                if time.monotonic() >= end and not self.cancel.is_set():
                    self.campaign.commit(self.name, key)
                    self.done += 1
                elif not self.cancel.is_set():  # the node vanished mid-task
                    self.campaign.requeue(self.name, [key], lost=True)
                self.current = None
        finally:
            self.watcher.stop()
            self.imds.stop()
            self.on_gone(self)


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.join(timeout=30)


def test_notices_drain_nodes_and_fallback_replaces_a_flapping_type(nodes: list[Node]) -> None:
    campaign = Campaign(90)
    catalog = load_catalog()
    policy = FallbackPolicy(max_interruptions=2, window_s=600)
    tracker = InterruptionTracker(policy)
    decisions: list[FallbackDecision] = []
    lock = threading.Lock()

    def start(pool: str) -> Node:
        node = Node(f"n{len(nodes)}", pool, campaign, replace)
        nodes.append(node)
        node.start()
        return node

    def replace(gone: Node) -> None:
        if campaign.finished() or gone.notice is None:
            return
        with lock:
            itype, market = gone.pool.split(":")
            tracker.record(itype, market, time.monotonic())
            pool = gone.pool
            if tracker.flapping(itype, market, time.monotonic()):
                d = choose_fallback(itype, market, "eu-west-3", catalog, remaining_vcpu_h=2.0,
                                    budget_left_usd=10.0, families=("c7g", "m7g"),
                                    policy=policy)
                decisions.append(d)
                if d.found:
                    pool = f"{d.to_type}:{d.to_market}"
            start(pool)

    first = [start("c7g.xlarge:spot") for _ in range(3)]
    deadline = time.monotonic() + 60
    def running_long() -> Node | None:
        for node in first:
            cur = node.current
            if cur is not None and campaign.runtime_s[cur[0]] == LONG_S:
                return node
        return None

    while (busy := running_long()) is None:  # notify a node in the middle of a long task
        assert time.monotonic() < deadline, "no long task started"
        time.sleep(0.005)
    notified = [busy, next(n for n in first if n is not busy)]
    for node in notified:  # two notices on the same spot type: it is flapping
        node.imds.issue_interruption(notice_s=2.0)
    while not campaign.finished():
        assert time.monotonic() < deadline, f"campaign stuck: {len(campaign.commits)} done"
        time.sleep(0.02)
    for node in list(nodes):
        node.join(timeout=30)

    assert sorted(campaign.commits) == sorted(campaign.runtime_s)  # nothing lost
    assert set(campaign.commits.values()) == {1}                   # nothing done twice
    assert not campaign.owner and not campaign.queue
    assert all(n.notice is not None for n in notified)
    assert all(n.watcher.errors == 0 for n in nodes)
    # the flapping type was replaced by another pool, and the decision says so
    assert decisions and decisions[-1].found
    assert "keeps being interrupted" in decisions[-1].reason
    replacements = [n for n in nodes if n.pool != "c7g.xlarge:spot"]
    assert replacements and replacements[0].pool == f"{decisions[-1].to_type}:" \
                                                     f"{decisions[-1].to_market}"
    # the long task caught by a notice was handed back at once, then redone elsewhere
    assert campaign.handed_back


def test_fallback_within_budget_or_says_why() -> None:
    catalog = load_catalog()
    ok = choose_fallback("c7g.4xlarge", "spot", "eu-west-3", catalog, 100.0, 50.0,
                         families=("c7g", "m7g"))
    assert ok.found and (ok.to_type, ok.to_market) != ("c7g.4xlarge", "spot")
    assert ok.estimated_cost_usd is not None and 0 < ok.estimated_cost_usd <= 50.0
    poor = choose_fallback("c7g.4xlarge", "spot", "eu-west-3", catalog, 100.0, 0.01,
                           families=("c7g", "m7g"))
    assert not poor.found and "no fallback fits the $0.01 left" in poor.reason
    every_spot = {(n, "spot") for n in catalog.prices["eu-west-3"]}
    od = choose_fallback("c7g.4xlarge", "spot", "eu-west-3", catalog, 100.0, 50.0,
                         families=("c7g",), exclude=every_spot)
    assert od.found and od.to_market == "on-demand"
    arm = catalog.instance_types["c7g.4xlarge"].arch
    assert catalog.instance_types[str(od.to_type)].arch == arm


def test_tracker_window() -> None:
    tracker = InterruptionTracker(FallbackPolicy(max_interruptions=2, window_s=100))
    tracker.record("c7g.xlarge", "spot", 0.0)
    tracker.record("c7g.xlarge", "spot", 50.0)
    assert tracker.flapping("c7g.xlarge", "spot", 60.0)
    assert not tracker.flapping("c7g.xlarge", "spot", 120.0)  # the first fell out
    tracker.record("m7g.xlarge", "spot", 130.0)
    tracker.record("m7g.xlarge", "spot", 140.0)
    assert tracker.flapping_pools(150.0) == {("m7g.xlarge", "spot")}
