"""Spot interruption notices from the instance metadata service (IMDSv2), and draining.

EC2 announces a spot interruption two minutes ahead at
``/latest/meta-data/spot/instance-action`` (404 until then). IMDSv2 needs a
session token: ``PUT /latest/api/token`` with a TTL, then every ``GET``
carries ``X-aws-ec2-metadata-token``. :class:`ImdsClient` keeps one token and
renews it before it expires (or when the service answers 401).

:class:`InterruptionWatcher` polls every few seconds on a daemon thread and
calls ``on_notice`` once per notice. What a node does then is
:func:`plan_drain`: take no new task, keep the tasks expected to finish
before the deadline (less a safety margin), and hand the others back to the
dispatcher at once so they restart elsewhere instead of dying with the node.

Only the standard library is used: this runs on every worker, before Ray.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from scheduler.cloud.errors import MetadataError

DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_TTL_S = 21600


@dataclass(frozen=True, slots=True)
class InterruptionNotice:
    """``action`` (terminate, stop, hibernate) happens at ``time`` (UTC)."""

    action: str
    time: dt.datetime

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        return (self.time - (now or dt.datetime.now(dt.UTC))).total_seconds()


@dataclass(frozen=True, slots=True)
class InFlightTask:
    key: str
    started_s: float          # monotonic clock, like ``now_s`` in :func:`plan_drain`
    expected_runtime_s: float


@dataclass(frozen=True, slots=True)
class DrainDecision:
    keep: tuple[str, ...]       # expected to finish before the node goes
    hand_back: tuple[str, ...]  # re-queue now, elsewhere
    seconds_left: float


def plan_drain(tasks: Sequence[InFlightTask], seconds_left: float, now_s: float,
               margin_s: float = 15.0) -> DrainDecision:
    """Which in-flight tasks can finish in ``seconds_left - margin_s``; the rest go back.

    A task's remaining time is its expected runtime less the time it has run, and never
    below zero: one that has overrun its estimate ends no sooner than now, so with no time
    left beyond the margin it goes back rather than being bet on.
    """
    budget = seconds_left - margin_s
    keep: list[str] = []
    back: list[str] = []
    for t in tasks:
        remaining = max(0.0, t.expected_runtime_s - (now_s - t.started_s))
        (keep if remaining <= budget else back).append(t.key)
    return DrainDecision(tuple(keep), tuple(back), seconds_left)


def queued_on_one_worker(calls: Sequence[tuple[str, float, float]],
                         now_s: float) -> list[InFlightTask]:
    """The calls sent to one worker that runs them one at a time, as :class:`InFlightTask`.

    ``calls``: (key, sent at, expected runtime), in the order sent. A call starts when the
    one before it ends (expected: its start plus its runtime, and not before ``now_s``), not
    when it was sent: the time a call waits in the worker's queue is not time it has run.
    """
    tasks: list[InFlightTask] = []
    free_at = -math.inf
    for key, sent_s, expected_s in calls:
        start = max(sent_s, free_at)
        tasks.append(InFlightTask(key, start, expected_s))
        free_at = max(now_s, start + expected_s)
    return tasks


def parse_instance_action(body: str) -> InterruptionNotice:
    """Parse the ``spot/instance-action`` document."""
    try:
        doc = json.loads(body)
        when = dt.datetime.strptime(doc["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        return InterruptionNotice(str(doc["action"]), when)
    except (ValueError, KeyError, TypeError) as exc:
        raise MetadataError(
            f"spot/instance-action = {body[:200]!r}: expected JSON with 'action' and "
            f"'time' (YYYY-MM-DDTHH:MM:SSZ): {exc}") from exc


class ImdsClient:
    """An IMDSv2 client: one session token, renewed before it expires."""

    def __init__(self, endpoint: str = DEFAULT_ENDPOINT, timeout_s: float = 1.0,
                 token_ttl_s: int = TOKEN_TTL_S) -> None:
        if not 1 <= token_ttl_s <= TOKEN_TTL_S:
            raise MetadataError(f"token_ttl_s {token_ttl_s}, expected 1..{TOKEN_TTL_S}")
        self.endpoint = endpoint.rstrip("/")
        self.timeout_s = timeout_s
        self.token_ttl_s = token_ttl_s
        self._token: str | None = None
        self._token_expiry = 0.0
        self.tokens_fetched = 0

    def _fetch_token(self) -> str:
        req = urllib.request.Request(
            f"{self.endpoint}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl_s)})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                token = str(resp.read().decode())
        except (urllib.error.URLError, OSError) as exc:
            raise MetadataError(f"IMDSv2 token request to {self.endpoint} failed: {exc}") from exc
        self._token = token
        # renew at 90% of the TTL so a poll never carries an expired token
        self._token_expiry = time.monotonic() + 0.9 * self.token_ttl_s
        self.tokens_fetched += 1
        return token

    def _token_now(self) -> str:
        if self._token is None or time.monotonic() >= self._token_expiry:
            return self._fetch_token()
        return self._token

    def get(self, path: str) -> str | None:
        """The metadata value at ``path`` (under ``latest/meta-data/``), or None on 404."""
        for attempt in (0, 1):
            token = self._token_now() if attempt == 0 else self._fetch_token()
            req = urllib.request.Request(f"{self.endpoint}/latest/meta-data/{path}",
                                         headers={"X-aws-ec2-metadata-token": token})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return str(resp.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401 and attempt == 0:
                    continue  # token expired or revoked: fetch a new one once
                raise MetadataError(
                    f"IMDS GET {path} at {self.endpoint}: HTTP {exc.code}") from exc
            except (urllib.error.URLError, OSError) as exc:
                raise MetadataError(f"IMDS GET {path} at {self.endpoint} failed: {exc}") from exc
        raise MetadataError(f"IMDS GET {path} at {self.endpoint}: 401 with a fresh token")

    def spot_interruption(self) -> InterruptionNotice | None:
        body = self.get("spot/instance-action")
        return None if body is None else parse_instance_action(body)

    def instance_id(self) -> str:
        value = self.get("instance-id")
        if value is None:
            raise MetadataError(f"IMDS at {self.endpoint} has no instance-id")
        return value


class InterruptionWatcher:
    """Polls for the interruption notice on a daemon thread; calls ``on_notice`` once per notice.

    Metadata errors do not stop the watcher (the service can blip); they are
    counted in ``errors`` and the last one kept in ``last_error``.
    """

    def __init__(self, client: ImdsClient, on_notice: Callable[[InterruptionNotice], None],
                 poll_s: float = 5.0) -> None:
        if not poll_s > 0:
            raise MetadataError(f"poll_s {poll_s!r}, expected > 0")
        self.client = client
        self.on_notice = on_notice
        self.poll_s = poll_s
        self.errors = 0
        self.polls = 0
        self.last_error: MetadataError | None = None
        self.notice: InterruptionNotice | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> InterruptionNotice | None:
        """One poll; calls ``on_notice`` when a new notice appears."""
        self.polls += 1
        try:
            notice = self.client.spot_interruption()
        except MetadataError as exc:
            self.errors += 1
            self.last_error = exc
            return None
        if notice is not None and notice != self.notice:
            self.notice = notice
            self.on_notice(notice)
        return notice

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(self.poll_s)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="interruption-watcher",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + self.client.timeout_s + 1)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
