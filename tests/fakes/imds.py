"""An emulated EC2 instance metadata service (IMDSv2 only) on 127.0.0.1.

Just what gpuctl's agent asks for: `PUT /latest/api/token` (with the TTL header) gives a
session token; `GET /latest/meta-data/spot/instance-action` and
`GET /latest/meta-data/events/recommendations/rebalance` answer 404 until a test switches
them on, then JSON shaped like the real service. A GET without a valid token is 401, as
on an instance launched with `HttpTokens=required`.

    with FakeImds() as imds:          # imds.url -> "http://127.0.0.1:PORT"
        imds.rebalance()              # early warning
        imds.notice()                 # "terminate" two minutes from now
        imds.clear()                  # the next "instance" has no notice
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_PATH = "/latest/api/token"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"


def _stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeImds:
    """The metadata server; `requests` records (method, path, status) for assertions."""

    action: dict[str, str] | None = None
    rebalance_at: dict[str, str] | None = None
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    _tokens: set[str] = field(default_factory=set)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- switches -----------------------------------------------------------------------

    def notice(self, action: str = "terminate", seconds: float = 120.0) -> dict[str, str]:
        """From now on the instance-action document says `action` at now + seconds."""
        when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
        with self._lock:
            self.action = {"action": action, "time": _stamp(when)}
            return dict(self.action)

    def rebalance(self) -> None:
        with self._lock:
            self.rebalance_at = {"noticeTime": _stamp(dt.datetime.now(dt.UTC))}

    def clear(self) -> None:
        with self._lock:
            self.action = None
            self.rebalance_at = None

    def count(self, path: str, method: str = "GET") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.requests if m == method and p == path)

    # -- server -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeImds:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                fake._answer(self, "PUT")

            def do_GET(self) -> None:
                fake._answer(self, "GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeImds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _answer(self, req: BaseHTTPRequestHandler, method: str) -> None:
        status, body = self._route(req, method)
        with self._lock:
            self.requests.append((method, req.path, status))
        data = body.encode()
        req.send_response(status)
        req.send_header("Content-Type", "text/plain" if status != 200 else "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(self, req: BaseHTTPRequestHandler, method: str) -> tuple[int, str]:
        if method == "PUT":
            if req.path != TOKEN_PATH:
                return 404, "Not Found"
            ttl = req.headers.get(TTL_HEADER, "")
            if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return 400, "Bad Request"
            token = secrets.token_urlsafe(24)
            with self._lock:
                self._tokens.add(token)
            return 200, token
        with self._lock:
            if req.headers.get(TOKEN_HEADER) not in self._tokens:
                return 401, "Unauthorized"
            if req.path == ACTION_PATH and self.action is not None:
                return 200, json.dumps(self.action)
            if req.path == REBALANCE_PATH and self.rebalance_at is not None:
                return 200, json.dumps(self.rebalance_at)
        return 404, "Not Found"
