"""Notifications: recorded run events become messages, sent once with apprise.

Every notable thing a run goes through is recorded in the store (engine.record_event,
Store.end_run); the Notifier listens there (Store.listeners), so one hook sees them all.
Each message is claimed in the store (one key per run and event) before it is sent, so
the CLI, the TUI and the agent on the machine never send the same one twice. Sending runs
in a background thread with short timeouts: a receiver that is down or slow never
blocks or fails a run, and its failure goes to gpuctl.log once.

apprise is imported only when something is sent (`gpuctl --help` stays fast).
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import cost
from .errors import GpuctlError
from .format import duration, money
from .models import RunStatus
from .notify_kinds import AGENT_KINDS, KINDS
from .runs.status import Reason
from .tail import last_lines
from .trainer.protocol import TRAIN_LOG_FILE

if TYPE_CHECKING:
    from .ports import EngineOps
    from .settings import Settings

log = logging.getLogger("gpuctl.notify")

SEND_TIMEOUT = 4.0  # seconds per receiver (connect, then read)
EXIT_WAIT = 6.0  # at most this long at exit for messages still on their way
LOG_LINES = 5  # last log lines a "failed" message quotes

ORPHAN_ACTION = "orphan"  # gpuctl.reconcile's Finding.action for a machine with no run

# An ended run's status -> the notification it is (a user's own stop is none).
_ENDED: dict[str, str] = {
    RunStatus.FINISHED.value: "finished",
    RunStatus.FAILED.value: "failed",
    RunStatus.LOST.value: "failed",
    RunStatus.BUDGET.value: "budget_100",
    RunStatus.STALLED.value: "stalled",
    RunStatus.INTERRUPTED.value: "interrupted",
}


@dataclass(frozen=True)
class Message:
    """One notification: `key` is what makes it once-only (run, event, attempt)."""

    key: str
    kind: str
    run_id: str | None
    title: str
    body: str


@dataclass(frozen=True)
class Webhook:
    """A target the agent can POST to itself: a plain URL and its headers."""

    url: str
    headers: Mapping[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "headers": dict(self.headers)}


_WEB = frozenset({"http", "https", "json", "jsons", "form", "forms", "xml", "xmls"})


def label(url: str) -> str:
    """A URL as it may be shown or logged: a web target's scheme and host, else its scheme
    only (Telegram, Slack and the like keep their token where a host would be)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _WEB:
        return f"{scheme}://…"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{scheme}://{parts.hostname or ''}{port}"


def webhook_of(url: str) -> Webhook | None:
    """apprise's json:// and jsons://, or a plain http(s) URL no apprise service claims:
    what the agent's own POST needs. Anything else (Slack, ntfy, email...) is None."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if _apprise_knows(url):  # e.g. a Discord or Slack webhook: apprise's own body
            return None
        return Webhook(url, {})
    if scheme not in ("json", "jsons"):
        return None
    headers: dict[str, str] = {}
    query = parts.query.replace("+", "%2B")  # apprise's "+Header=value", not a space
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if key.startswith("+"):
            headers[key[1:]] = value
        elif key == "method" and value.upper() != "POST":
            return None
    if parts.username:
        pair = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    plain = "https" if scheme == "jsons" else "http"
    return Webhook(urllib.parse.urlunsplit((plain, netloc, parts.path or "/", "", "")), headers)


def _apprise_knows(url: str) -> bool:
    import apprise

    return apprise.Apprise.instantiate(url) is not None


def _apprise_url(url: str) -> str:
    """What apprise is given: a plain webhook URL becomes its JSON webhook target."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() in ("http", "https") and not _apprise_knows(url):
        scheme = "jsons" if parts.scheme.lower() == "https" else "json"
        url = urllib.parse.urlunsplit((scheme, *parts[1:]))
    sep = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{sep}cto={SEND_TIMEOUT:g}&rto={SEND_TIMEOUT:g}"


def send_one(url: str, title: str, body: str) -> str | None:
    """Send to one URL now: None when it worked, else why not (one line, no secrets)."""
    try:
        import apprise
    except ImportError:  # pragma: no cover - a dependency; say so instead of a traceback
        return "apprise is not installed (pip install apprise)"
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as logs:
        # The service itself, not an Apprise chain: a chain sends through a thread pool,
        # which refuses work once the interpreter is exiting (`gpuctl status` that just
        # recorded a run's end and returns at once).
        service = apprise.Apprise.instantiate(_apprise_url(url))
        if service is None:
            return "not a URL apprise knows"
        try:
            ok = service.notify(body=body, title=title)
        except Exception as exc:  # a plugin's own bug must not become ours
            return f"{type(exc).__name__}: {exc}"[:200]
        said = [ln.strip() for ln in logs.getvalue().splitlines() if ln.strip()]
    if ok:
        return None
    return (said[-1] if said else "not delivered")[:200]


# -- run events -> messages ---------------------------------------------------------------


def kind_of(kind: str, data: Mapping[str, Any]) -> str | None:
    """The notification a recorded event is, if any."""
    if kind == "ended":
        status = str(data.get("status") or "")
        if status == RunStatus.STOPPED.value and Reason.of(data.get("reason")) is Reason.IDLE:
            return "idle_shutdown"
        return _ENDED.get(status)
    if kind == "budget":
        return {"warn": "budget_80", "stop": "budget_100"}.get(str(data.get("level")))
    if kind == "vanished":
        return "interrupted"
    if kind == "run_reconciled":
        return "orphan" if data.get("action") == ORPHAN_ACTION else None
    if kind == "failed":  # a launch that failed before its trainer ran
        return "failed"
    if kind in ("recovered", "price_differs", "max_price_exceeded"):
        return kind
    return None


def message_for(
    engine: EngineOps, run_id: str | None, kind: str, data: Mapping[str, Any]
) -> Message | None:
    """The notification for one recorded event (None: not one a user asked for)."""
    name = kind_of(kind, data)
    if name is None or name not in engine.settings.notify.events:
        return None
    run = engine.store.find_run(run_id) if run_id else None
    attempt = run.attempt if run is not None else 0
    key = f"{run_id or '-'}:{name}:{attempt}"
    if name in ("budget_80", "budget_100") and kind == "budget":
        key = f"{run_id or '-'}:{name}:{data.get('scope', 'run')}:{data.get('key', '')}"
    if name == "orphan":
        key = f"{run_id or '-'}:orphan:{data.get('instance_id', '')}"
    if name == "budget_100":  # the alert and the run's end with status budget: one message
        key = f"{run_id or '-'}:budget_100:{attempt}"
    who = f"run {run_id}" if run_id else "gpuctl"
    parts = [_headline(name, who, data)]
    if run is not None:
        parts += _run_facts(engine, run, name, data)
    title = f"gpuctl: {who} {name.replace('_', ' ')}"
    return Message(key, name, run_id, title, "; ".join(p for p in parts if p))


def _headline(name: str, who: str, data: Mapping[str, Any]) -> str:
    if name == "budget_80" and "spent" in data:
        return (
            f"{who}: budget {data.get('scope', '')} {data.get('key', '')} at "
            f"{float(data.get('fraction', 0)) * 100:.0f}% ({money(float(data['spent']))} of "
            f"{money(float(data.get('budget', 0)))})"
        )
    if name == "budget_100":
        spent = data.get("spent")
        budget = data.get("budget")
        numbers = isinstance(spent, int | float) and isinstance(budget, int | float)
        of = f" ({money(float(spent))} of {money(float(budget))})" if numbers else ""  # type: ignore[arg-type]
        return f"{who} stopped: budget reached{of}"
    if name == "recovered":
        return (
            f"{who} recovered on {data.get('instance', '?')} (attempt {data.get('attempt', '?')}, "
            f"{duration(float(data.get('seconds') or 0))} lost)"
        )
    if name == "price_differs":
        quoted = data.get("quoted")
        q = money(float(quoted)) if isinstance(quoted, int | float) else "no quote"
        return (
            f"{who}: {data.get('instance_type', '')} {data.get('market', '')} bills "
            f"{money(float(data.get('billed') or 0))}/h, quoted {q}/h ({data.get('source', '')})"
        )
    if name == "max_price_exceeded":
        return (
            f"{who}: spot price {money(float(data.get('price') or 0))}/h is above the max "
            f"{money(float(data.get('max_price') or 0))}/h; stopping"
        )
    if name == "orphan":
        return str(data.get("message") or f"{who}: an orphaned machine")
    if name == "interrupted" and data.get("instance"):
        return f"{who} interrupted: {data['instance']} is gone"
    return f"{who} {name.replace('_', ' ')}"


def _run_facts(engine: EngineOps, run: Any, name: str, data: Mapping[str, Any]) -> list[str]:
    facts = [f"status {run.status.value}"]
    if run.metric is not None:
        facts.append(f"metric {run.metric:.4g}")
    if run.epochs:
        facts.append(f"epochs {run.epoch}/{run.epochs}")
    if name in ("finished", "failed", "budget_100", "stalled", "interrupted", "idle_shutdown"):
        facts.append(f"duration {duration(max(0.0, time.time() - run.created_at))}")
    try:
        line = cost.run_line(engine.store, engine.settings, run.id)
        facts.append(f"cost {money(line.spent)} to date")
        lost = data.get("seconds")
        if name == "recovered" and isinstance(lost, int | float):
            facts.append(f"the recovery cost about {money(line.burn_per_hour * lost / 3600)}")
    except Exception:  # a message without its cost beats none
        log.debug("no cost for %s", run.id, exc_info=True)
    reason = str(data.get("reason") or data.get("error") or "")
    if reason and name != "finished":
        facts.append(f"reason: {reason[:500]}")
    if name == "failed":
        tail = _last_log(engine, run)
        if tail and tail[-1] not in reason:  # a reason may quote them already
            facts.append("last log: " + " | ".join(tail))
    at = data.get("checkpoint_at")
    if isinstance(at, int | float):
        facts.append(f"checkpoint {duration(max(0.0, time.time() - at))} old")
    return facts


def _last_log(engine: EngineOps, run: Any) -> list[str]:
    if not run.remote_dir:
        return []
    try:
        _instance, host = engine.locate(run)
        lines, _ = last_lines(host, f"{run.remote_dir}/{TRAIN_LOG_FILE}", LOG_LINES)
    except (GpuctlError, OSError):
        return []
    return [ln.strip()[:300] for ln in lines if ln.strip()]


# -- the agent's share --------------------------------------------------------------------


def agent_share(
    settings: Settings, run_id: str, spent_before: float, price: float | None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(agent.json's `notify`, its secret env): the webhooks it may POST to itself.
    Nothing when no webhook-style URL is configured."""
    if not settings.notify.urls:
        return {}, {}
    hooks = [h for h in (webhook_of(u) for u in settings.notify.urls) if h is not None]
    events = [k for k in AGENT_KINDS if k in settings.notify.events]
    if not hooks or not events:
        return {}, {}
    cfg = {"run_id": run_id, "events": events, "spent_before": spent_before, "price": price or 0.0}
    from .agent import webhook  # urllib and http.client: not for every `gpuctl ls`

    return {"notify": cfg}, {webhook.WEBHOOKS_ENV: json.dumps([h.to_dict() for h in hooks])}


# -- the listener -------------------------------------------------------------------------


class Notifier:
    """Listens to one process's store; each message is claimed, then sent off-thread."""

    def __init__(self, engine: EngineOps) -> None:
        self.engine = engine
        self.urls: tuple[str, ...] = tuple(engine.settings.notify.urls)
        self._threads: list[threading.Thread] = []
        self._failed: set[str] = set()  # URLs whose failure is already in gpuctl.log
        self._lock = threading.Lock()
        atexit.register(self.flush, EXIT_WAIT)

    def __call__(self, run_id: str | None, kind: str, data: Mapping[str, Any]) -> None:
        if kind_of(kind, data) is None or not self.urls:
            return
        # Build and send off-thread: a failed run's last log lines are an SSH round trip.
        thread = threading.Thread(
            target=self._deliver, args=(run_id, kind, dict(data)), daemon=True, name="notify"
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _deliver(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None:
        try:
            message = message_for(self.engine, run_id, kind, data)
            if message is None:
                return
            urls = list(self.urls)
            by = "gpuctl"
            if message.kind in (data.get("agent_notified") or ()):
                # The agent on the machine POSTed it to the webhooks itself: the rest only.
                urls = [u for u in urls if webhook_of(u) is None]
                by = "agent"
            store = self.engine.store
            if not store.claim_notification(
                message.key, run_id, message.kind, message.title, message.body, by
            ):
                return  # another gpuctl (or this one) has it
            outcome = self.send(message, urls)
            store.notification_outcome(message.key, outcome)
        except Exception:
            log.exception("notification for %s %s failed", run_id, kind)

    def send(self, message: Message, urls: Sequence[str]) -> str:
        """Send to each URL; what happened, in one line (stored with the claim)."""
        failures = []
        for url in urls:
            error = send_one(url, message.title, message.body)
            if error is None:
                continue
            failures.append(f"{label(url)}: {error}")
            if url not in self._failed:  # once per receiver and process
                self._failed.add(url)
                log.warning("notification to %s not delivered: %s", label(url), error)
        return "; ".join(failures) or "sent"

    def flush(self, timeout: float) -> None:
        """Let messages on their way finish, for at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def describe_kinds() -> list[tuple[str, str]]:
    return list(KINDS.items())
