"""A small IMDSv2-compatible instance metadata server, for tests and local demos.

It speaks the subset of the EC2 instance metadata service (IMDSv2) that the
interruption watcher uses, on 127.0.0.1 only:

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds``
  (1..21600) returns a session token; a request carrying
  ``X-Forwarded-For`` is refused (403), as the real service does;
- ``GET /latest/meta-data/...`` needs ``X-aws-ec2-metadata-token`` with a
  live token, else 401; paths: ``instance-id``, ``instance-type``,
  ``placement/availability-zone``, ``spot/instance-action`` (404 until a
  notice is issued, then ``{"action": "terminate", "time": "...Z"}``) and
  ``events/recommendations/rebalance`` (404 until issued).

:meth:`MetadataServer.issue_interruption` schedules the two-minute notice the
way EC2 does; counters let tests see the tokenless requests it refused.

    python -m scheduler.testing.imds_server --port 8111 --notice-after-s 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from scheduler.cloud.errors import MetadataError

LOOPBACK = "127.0.0.1"
MAX_TOKEN_TTL_S = 21600


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetadataServer:
    """The metadata of one simulated instance, served over HTTP on 127.0.0.1."""

    def __init__(self, instance_id: str = "i-0123456789abcdef0",
                 instance_type: str = "c7g.xlarge", availability_zone: str = "eu-west-3a",
                 port: int = 0, host: str = LOOPBACK) -> None:
        if host != LOOPBACK:
            raise MetadataError(f"metadata server host {host!r}: only {LOOPBACK} is allowed")
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.availability_zone = availability_zone
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._action: tuple[str, dt.datetime] | None = None
        self._action_visible_at = 0.0
        self._rebalance: dt.datetime | None = None
        self.refused_without_token = 0
        self.requests = 0
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- control, from the test -------------------------------------------------

    def issue_interruption(self, action: str = "terminate", notice_s: float = 120.0,
                           after_s: float = 0.0) -> dt.datetime:
        """After ``after_s``, announce ``action`` at ``notice_s`` from then; returns that time."""
        if action not in ("terminate", "stop", "hibernate"):
            raise MetadataError(f"interruption action {action!r}, expected terminate, stop "
                                "or hibernate")
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=after_s + notice_s)
        with self._lock:
            self._action = (action, when)
            self._action_visible_at = time.monotonic() + after_s
        return when

    def recommend_rebalance(self) -> None:
        with self._lock:
            self._rebalance = dt.datetime.now(dt.UTC)

    def revoke_tokens(self) -> None:
        """Forget every session token (clients must fetch a new one)."""
        with self._lock:
            self._tokens.clear()

    def clear(self) -> None:
        with self._lock:
            self._action = None
            self._rebalance = None

    # -- serving ------------------------------------------------------------------

    def _new_token(self, ttl_s: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + ttl_s
        return token

    def _token_ok(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._tokens.get(token or "")
        return expiry is not None and expiry > time.monotonic()

    def _value(self, path: str) -> str | None:
        with self._lock:
            if path == "instance-id":
                return self.instance_id
            if path == "instance-type":
                return self.instance_type
            if path == "placement/availability-zone":
                return self.availability_zone
            if path == "spot/instance-action":
                if self._action is None or time.monotonic() < self._action_visible_at:
                    return None
                return json.dumps({"action": self._action[0], "time": _iso(self._action[1])})
            if path == "events/recommendations/rebalance":
                if self._rebalance is None:
                    return None
                return json.dumps({"noticeTime": _iso(self._rebalance)})
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # tests read counters, not logs

            def _reply(self, code: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                server.requests += 1
                if self.path != "/latest/api/token":
                    return self._reply(404)
                if self.headers.get("X-Forwarded-For"):
                    return self._reply(403)
                try:
                    ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
                except ValueError:
                    return self._reply(400)
                if not 1 <= ttl <= MAX_TOKEN_TTL_S:
                    return self._reply(400)
                self._reply(200, server._new_token(ttl))

            def do_GET(self) -> None:
                server.requests += 1
                if not server._token_ok(self.headers.get("X-aws-ec2-metadata-token")):
                    server.refused_without_token += 1
                    return self._reply(401)
                prefix = "/latest/meta-data/"
                if not self.path.startswith(prefix):
                    return self._reply(404)
                value = server._value(self.path[len(prefix):])
                if value is None:
                    return self._reply(404)
                self._reply(200, value)

        return Handler

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="imds-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8111)
    parser.add_argument("--notice-after-s", type=float, default=None,
                        help="issue a spot interruption notice this many seconds after start")
    args = parser.parse_args(argv)
    server = MetadataServer(port=args.port).start()
    if args.notice_after_s is not None:
        server.issue_interruption(after_s=args.notice_after_s)
    print(f"metadata server on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
