"""The agent's own notification: a plain JSON POST when nobody on the laptop listens.

Only webhook-style targets (gpuctl turned them into a URL, headers and nothing else
before launch); the list travels on the supervisor's secret pipe under WEBHOOKS_ENV and
is never written to a file or a log. Stdlib only: this file ships alone to the machine.
The body has apprise's JSON webhook shape (version, title, message, type), so a receiver
sees the same thing whoever sent it.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

WEBHOOKS_ENV = "GPUCTL_NOTIFY_WEBHOOKS"  # JSON: [{"url": ..., "headers": {...}}, ...]
TIMEOUT = 5.0


def hooks(text: str) -> list[dict[str, Any]]:
    """The webhooks a secret holds (a broken value is none, never an error)."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [h for h in data if isinstance(h, dict) and isinstance(h.get("url"), str)]


def post(webhooks: list[dict[str, Any]], title: str, message: str, timeout: float = TIMEOUT) -> int:
    """POST to each; how many answered 2xx. A receiver down or slow costs at most timeout
    seconds each and is never raised."""
    body = json.dumps(
        {"version": "1.0", "title": title, "message": message, "attachments": [], "type": "info"}
    ).encode()
    sent = 0
    for hook in webhooks:
        headers = {"Content-Type": "application/json", "User-Agent": "gpuctl-agent"}
        headers.update({str(k): str(v) for k, v in (hook.get("headers") or {}).items()})
        req = urllib.request.Request(hook["url"], data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                sent += int(200 <= resp.status < 300)
        except Exception:
            continue  # the laptop sends it when it sees the end (not marked as sent)
    return sent
