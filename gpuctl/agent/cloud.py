"""What the agent says to clouds over HTTP, standard library only (it ships with agent.py).

- SpotWatch: the AWS spot interruption notice and rebalance recommendation, read from
  the instance metadata service with IMDSv2 (PUT a session token, then GET with it).
- put_file: push last.pt to a presigned S3 URL gpuctl made at launch, so a checkpoint
  taken at the notice survives the machine even when gpuctl is not connected.
- destroy_droplet: DigitalOcean's opt-in self-destroy (a powered-off droplet still bills).

Secrets (the presigned URL, the API token) come from the agent's environment only and
never appear in a log line or a status file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DEFAULT_METADATA_URL = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
TOKEN_TTL = 21600
CHECKPOINT_URL_ENV = "GPUCTL_CHECKPOINT_PUT_URL"  # presigned PUT for last.pt, env only


class SpotWatch:
    """Polls the interruption notice every `poll_seconds`; remembers what it saw."""

    def __init__(self, base_url: str, poll_seconds: float = 5.0, timeout: float = 2.0) -> None:
        self.base = base_url.rstrip("/")
        self.poll_seconds = max(0.05, float(poll_seconds))
        self.timeout = timeout
        self.next_poll = 0.0
        self.notice: dict[str, Any] | None = None
        self.rebalance: dict[str, Any] | None = None
        self.error: str | None = None  # last failure (metadata service unreachable...)
        self._token: str | None = None
        self._token_expires = 0.0

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SpotWatch | None:
        """Only where gpuctl asked for it (AWS spot, or a test's emulator)."""
        url = cfg.get("metadata_url")
        if not url:
            return None
        return cls(str(url), float(cfg.get("spot_poll_seconds") or 5.0))

    def due(self, now: float) -> bool:
        return self.notice is None and now >= self.next_poll

    def poll(self, now: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(new interruption notice, new rebalance recommendation); each reported once."""
        self.next_poll = now + self.poll_seconds
        notice = rebalance = None
        try:
            if self.rebalance is None:
                found = self._get(REBALANCE_PATH)
                if found is not None:
                    self.rebalance = rebalance = found
            found = self._get(ACTION_PATH)
            if found is not None:
                self.notice = notice = found
            self.error = None
        except Exception as exc:  # refused, timeouts, garbage: say so, keep polling
            self.error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        return notice, rebalance

    def _session_token(self) -> str:
        if self._token and time.monotonic() < self._token_expires:
            return self._token
        req = urllib.request.Request(
            self.base + TOKEN_PATH,
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            self._token = resp.read().decode().strip()
        self._token_expires = time.monotonic() + TOKEN_TTL - 60
        return self._token

    def _get(self, path: str, retry: bool = True) -> dict[str, Any] | None:
        """The JSON document at path; None for 404 (no notice)."""
        req = urllib.request.Request(
            self.base + path, headers={"X-aws-ec2-metadata-token": self._session_token()}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read().decode()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401 and retry:  # token expired or the service restarted
                self._token = None
                return self._get(path, retry=False)
            raise
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {"raw": body[:200]}
        return doc if isinstance(doc, dict) else {"raw": str(doc)[:200]}


def put_file(url: str, path: Path, timeout: float = 600.0) -> int:
    """PUT a file to a presigned URL, streamed; returns bytes sent (raises OSError)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        req = urllib.request.Request(
            url,
            data=fh,
            method="PUT",
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    return size


# Hosts that serve DigitalOcean's v2 API (as providers/do_client.py's KNOWN_API_HOSTS).
KNOWN_API_HOSTS = frozenset(
    {"api.digitalocean.com", "api-amd.digitalocean.com", "api.devcloud.amd.com"}
)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def token_allowed(url: str, home: str) -> bool:
    """The laptop client's rule: the token goes to the endpoint's own host or a known API
    host only, and over https, except to a loopback endpoint (an emulator in tests)."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    home_host = (urllib.parse.urlsplit(home).hostname or "").lower()
    if host not in KNOWN_API_HOSTS | {home_host}:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and host in LOOPBACK_HOSTS


def destroy_droplet(
    api: str,
    droplet_id: str,
    token: str,
    timeout: float = 30.0,
    redirects: int = 2,
    home: str | None = None,
) -> str:
    """DELETE /v2/droplets/{id}; '' when done (or already gone), else why it failed."""
    home = home or api
    url = f"{api.rstrip('/')}/v2/droplets/{urllib.parse.quote(str(droplet_id), safe='')}"
    if not token_allowed(url, home):
        where = urllib.parse.urlsplit(url)
        return f"refused to send the API token to {where.scheme}://{where.netloc}"
    req = urllib.request.Request(
        url,
        method="DELETE",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    # No proxy for plain http (loopback only): nobody in between sees the header.
    handlers = [urllib.request.ProxyHandler({})] if url.startswith("http:") else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(req, timeout=timeout) as resp:
            resp.read()
        return ""
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return ""
        location = exc.headers.get("Location") if exc.headers else None
        if exc.code in (301, 302, 307, 308) and location and redirects > 0:
            # api-amd.digitalocean.com moved; urllib follows no DELETE redirect itself
            base = urllib.parse.urljoin(req.full_url, location).split("/v2/")[0]
            return destroy_droplet(base, droplet_id, token, timeout, redirects - 1, home)
        return f"HTTP {exc.code} from the API"
    except Exception as exc:  # refused, timeout, a broken answer: fall back to poweroff
        return f"{type(exc).__name__}: {getattr(exc, 'reason', '')}"


NOTIFY_WEBHOOKS_ENV = "GPUCTL_NOTIFY_WEBHOOKS"  # agent/webhook.py WEBHOOKS_ENV


def secret_env_names(cfg: dict[str, Any]) -> set[str]:
    """Environment variables holding secrets: they travel on the supervisor's pipe, and
    the trainer never inherits them (a job's command gets its own `secret_env` only)."""
    names = {CHECKPOINT_URL_ENV, NOTIFY_WEBHOOKS_ENV}
    token_env = (cfg.get("shutdown") or {}).get("token_env")
    if token_env:
        names.add(str(token_env))
    job = cfg.get("job")
    if isinstance(job, dict):  # a user's command: its own secrets, its data's URLs
        names.update(str(n) for n in job.get("secret_env") or () if n)
        for data in job.get("data") or ():
            if isinstance(data, dict) and data.get("urls_env"):
                names.add(str(data["urls_env"]))
    return names


_SECRETS: dict[str, str] = {}  # handed to the supervisor on its stdin (see agent.cmd_start)


def load_secrets(text: str) -> None:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return
    if isinstance(data, dict):
        _SECRETS.update({str(k): str(v) for k, v in data.items() if v})


def env_value(name: str) -> str:
    """A secret: from the pipe when the supervisor got one, else this process's env."""
    if not name:
        return ""
    return (_SECRETS.get(name) or os.environ.get(name, "")).strip()
