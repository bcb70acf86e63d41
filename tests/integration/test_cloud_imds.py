"""IMDSv2 client, interruption watcher and drain plan against the project's metadata server."""

from __future__ import annotations

import datetime as dt
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from scheduler.cloud.errors import MetadataError
from scheduler.cloud.imds import (
    ImdsClient,
    InFlightTask,
    InterruptionNotice,
    InterruptionWatcher,
    parse_instance_action,
    plan_drain,
    queued_on_one_worker,
)
from scheduler.testing.imds_server import MetadataServer

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[MetadataServer]:
    with MetadataServer(instance_id="i-0feedface0000001") as s:
        yield s


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.01)


def _status(req: urllib.request.Request) -> int:
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_server_speaks_imdsv2(server: MetadataServer) -> None:
    url = server.url
    assert url.startswith("http://127.0.0.1:")
    assert _status(urllib.request.Request(f"{url}/latest/meta-data/instance-id")) == 401
    assert server.refused_without_token == 1
    put = urllib.request.Request(f"{url}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "60",
                                          "X-Forwarded-For": "10.0.0.1"})
    assert _status(put) == 403
    put = urllib.request.Request(f"{url}/latest/api/token", method="PUT",
                                 headers={"X-aws-ec2-metadata-token-ttl-seconds": "0"})
    assert _status(put) == 400
    client = ImdsClient(url)
    assert client.instance_id() == "i-0feedface0000001"
    assert client.get("no/such/path") is None


def test_notice_appears_when_issued(server: MetadataServer) -> None:
    client = ImdsClient(server.url)
    assert client.spot_interruption() is None
    when = server.issue_interruption(notice_s=120)
    notice = client.spot_interruption()
    assert notice is not None and notice.action == "terminate"
    assert abs((notice.time - when).total_seconds()) <= 1
    assert 115 <= notice.seconds_left() <= 121


def test_token_is_renewed_after_revocation_and_expiry(server: MetadataServer) -> None:
    client = ImdsClient(server.url, token_ttl_s=1)
    client.instance_id()
    server.revoke_tokens()
    assert client.instance_id() == "i-0feedface0000001"  # 401, new token, retried
    assert client.tokens_fetched == 2
    expiry_passed = time.monotonic() + 1.0
    _wait_for(lambda: time.monotonic() > expiry_passed)
    client.instance_id()
    assert client.tokens_fetched == 3


def test_unreachable_service_is_a_metadata_error() -> None:
    with MetadataServer() as s:
        url = s.url
    with pytest.raises(MetadataError, match="token request to http://127.0.0.1"):
        ImdsClient(url, timeout_s=0.5).spot_interruption()


def test_watcher_calls_back_once_per_notice(server: MetadataServer) -> None:
    seen: list[InterruptionNotice] = []
    got = threading.Event()

    def on_notice(n: InterruptionNotice) -> None:
        seen.append(n)
        got.set()

    with InterruptionWatcher(ImdsClient(server.url), on_notice, poll_s=0.05) as watcher:
        server.issue_interruption(after_s=0.3)
        assert got.wait(10)
        polls = watcher.polls
        _wait_for(lambda: watcher.polls >= polls + 5)
    assert len(seen) == 1 and seen[0].action == "terminate"
    assert watcher.errors == 0 and server.refused_without_token == 0


def test_watcher_survives_metadata_errors() -> None:
    server = MetadataServer().start()
    client = ImdsClient(server.url, timeout_s=0.2)
    watcher = InterruptionWatcher(client, lambda n: None, poll_s=0.02)
    server.stop()
    with watcher:
        _wait_for(lambda: watcher.errors >= 3)
    assert isinstance(watcher.last_error, MetadataError)
    assert watcher.notice is None


def test_plan_drain_keeps_what_finishes_in_time() -> None:
    tasks = [InFlightTask("a", started_s=100.0, expected_runtime_s=60.0),   # 10 s left
             InFlightTask("b", started_s=140.0, expected_runtime_s=300.0),  # 250 s left
             InFlightTask("c", started_s=149.0, expected_runtime_s=110.0)]  # 109 s left
    decision = plan_drain(tasks, seconds_left=120.0, now_s=150.0, margin_s=10.0)
    assert decision.keep == ("a", "c") and decision.hand_back == ("b",)
    tight = plan_drain(tasks, seconds_left=120.0, now_s=150.0, margin_s=15.0)
    assert tight.keep == ("a",) and set(tight.hand_back) == {"b", "c"}
    assert plan_drain([], 120.0, 0.0).keep == ()


def test_plan_drain_does_not_bet_on_a_task_past_its_estimate() -> None:
    # running 5 s where 1 s was expected: it ends no sooner than now, not "4 s ago"
    late = [InFlightTask("late", started_s=95.0, expected_runtime_s=1.0)]
    assert plan_drain(late, seconds_left=119.5, now_s=100.0, margin_s=120.0).hand_back == ("late",)
    assert plan_drain(late, seconds_left=120.0, now_s=100.0, margin_s=120.0).keep == ("late",)


def test_calls_queued_on_one_worker_start_when_the_one_before_ends() -> None:
    # three calls of 10 s sent at once at t=100; at t=105 the first has run 5 s, the others 0
    tasks = queued_on_one_worker([("a", 100.0, 10.0), ("b", 100.0, 10.0), ("c", 100.0, 10.0)],
                                 now_s=105.0)
    assert [(t.key, t.started_s) for t in tasks] == [("a", 100.0), ("b", 110.0), ("c", 120.0)]
    decision = plan_drain(tasks, seconds_left=30.0, now_s=105.0, margin_s=10.0)
    assert decision.keep == ("a", "b") and decision.hand_back == ("c",)  # ends 5, 15, 25 s on
    # a first call past its estimate holds the next one back from now on, not from its estimate
    late = queued_on_one_worker([("a", 100.0, 2.0), ("b", 100.0, 2.0)], now_s=105.0)
    assert [t.started_s for t in late] == [100.0, 105.0]


def test_instance_action_parsing() -> None:
    n = parse_instance_action('{"action": "stop", "time": "2026-11-25T10:00:00Z"}')
    assert n == InterruptionNotice("stop", dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC))
    with pytest.raises(MetadataError, match="expected JSON with 'action' and 'time'"):
        parse_instance_action('{"action": "stop"}')
