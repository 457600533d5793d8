"""Which recorded events are notifications, and what the agent may POST itself."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from gpuctl.agent.agent import end_kind
from gpuctl.notify import kind_of, label, webhook_of
from gpuctl.notify_kinds import AGENT_KINDS, KINDS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("ended", {"status": "finished"}, "finished"),
        ("ended", {"status": "failed", "reason": "exit code 3"}, "failed"),
        ("ended", {"status": "lost"}, "failed"),
        ("ended", {"status": "budget"}, "budget_100"),
        ("ended", {"status": "stalled"}, "stalled"),
        ("ended", {"status": "interrupted"}, "interrupted"),
        ("ended", {"status": "stopped", "reason": "user"}, None),  # the user's own stop
        ("ended", {"status": "stopped", "reason": "idle for 30 min"}, "idle_shutdown"),
        ("budget", {"level": "warn"}, "budget_80"),
        ("budget", {"level": "stop"}, "budget_100"),
        ("vanished", {"instance": "i-1"}, "interrupted"),
        ("recovered", {"attempt": 2}, "recovered"),
        ("run_reconciled", {"action": "orphan"}, "orphan"),
        ("run_reconciled", {"action": "adopted"}, None),
        ("price_differs", {"billed": 1.0}, "price_differs"),
        ("max_price_exceeded", {"price": 2.0}, "max_price_exceeded"),
        ("epoch", {"epoch": 1}, None),
        ("started", {}, None),
    ],
)
def test_recorded_events_map_to_notifications(kind: str, data: dict, expected: str | None) -> None:
    assert kind_of(kind, data) == expected
    assert expected is None or expected in KINDS


def test_webhook_urls_become_a_plain_post_and_others_are_left_to_apprise() -> None:
    hook = webhook_of("json://127.0.0.1:8080/a/b?+X-Token=abc")
    assert hook is not None and hook.url == "http://127.0.0.1:8080/a/b"
    assert hook.headers == {"X-Token": "abc"}
    secure = webhook_of("jsons://me:pw@hooks.example/x")
    assert secure is not None and secure.url == "https://hooks.example/x"
    assert secure.headers["Authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
    plain = webhook_of("https://hooks.example/incoming/42")
    assert plain is not None and plain.url == "https://hooks.example/incoming/42"
    assert webhook_of("json://h/x?method=GET") is None
    assert webhook_of("ntfy://my-topic") is None
    assert webhook_of("https://discord.com/api/webhooks/123/abcdef") is None  # apprise's own


def test_a_url_is_shown_without_its_secret_parts() -> None:
    assert label("jsons://me:pw@hooks.example:8443/secret/path?+X-Token=t") == (
        "jsons://hooks.example:8443"
    )
    assert label("tgram://123456:bot-token/chat") == "tgram://…"  # its host is the token


@pytest.mark.parametrize(
    ("phase", "code", "reason", "external", "expected"),
    [
        ("finished", 0, "", False, "finished"),
        ("failed", 1, "", False, "failed"),
        ("running", 137, "", False, "failed"),
        ("interrupted", 0, "budget reached (time limit)", False, "budget_100"),
        ("interrupted", 0, "stalled: no training progress for 20.0 min", False, "stalled"),
        ("interrupted", 0, "spot interruption", False, "interrupted"),
        ("interrupted", 0, "max hours (2.00 h)", False, None),
        ("interrupted", 0, "budget", True, None),  # a gpuctl on the laptop asked: it tells
        ("finished", 0, "", True, None),
    ],
)
def test_the_agent_sends_only_the_ends_nobody_on_the_laptop_asked_for(
    phase: str, code: int, reason: str, external: bool, expected: str | None
) -> None:
    assert end_kind(phase, code, reason, external) == expected
    assert expected is None or expected in AGENT_KINDS


def test_the_readme_lists_every_event() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("### Notifications", 1)[1].split("\n### ", 1)[0]
    listed = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", section, flags=re.M))
    assert listed == KINDS


MINIMAL = [
    ("ended", {"status": "finished"}),
    ("ended", {"status": "failed"}),
    ("ended", {"status": "budget", "reason": "budget reached (time limit = 60 s)"}),
    ("ended", {"status": "stalled"}),
    ("ended", {"status": "interrupted", "checkpoint_at": 1.0}),
    ("budget", {"level": "warn"}),
    ("budget", {"level": "stop"}),
    ("vanished", {}),
    ("recovered", {}),
    ("run_reconciled", {"action": "orphan"}),
    ("price_differs", {"billed": 1.2}),
    ("max_price_exceeded", {}),
    ("failed", {"error": "no capacity"}),
]


@pytest.mark.parametrize(("kind", "data"), MINIMAL)
def test_every_notification_is_written_even_from_an_event_with_few_fields(
    gpuctl_home: Path, kind: str, data: dict
) -> None:
    import time

    from gpuctl.lifecycle import Engine
    from gpuctl.models import Run, RunStatus
    from gpuctl.notify import message_for

    (gpuctl_home / "config.toml").write_text('[notify]\nurls = ["json://127.0.0.1:9/x"]\n')
    engine = Engine()
    now = time.time()
    engine.store.add_run(Run("r-min", "validate", "local", RunStatus.RUNNING, now, now))
    message = message_for(engine, "r-min", kind, data)
    assert message is not None
    assert "r-min" in message.title and "r-min" in message.body
    assert "cost $" in message.body and "status running" in message.body
