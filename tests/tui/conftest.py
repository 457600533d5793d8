"""TUI fixtures: the fake provider, seeded homes, and an app factory per test.

Every test already has its own GPUCTL_HOME (tests/conftest.py); these write its
config.toml and state, then build the app with create_app() so nothing is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gpuctl.driver_registry import register
from gpuctl.lifecycle import Engine
from gpuctl.tui.app import GpuctlApp, create_app
from tests.tui import demo
from tests.tui.fake_provider import FakeProvider

register("fake", "tests.tui.fake_provider:FakeProvider")

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def fake_state() -> Iterator[type[FakeProvider]]:
    FakeProvider.reset()
    yield FakeProvider
    FakeProvider.reset()


@pytest.fixture
def seeded(gpuctl_home: Path) -> Path:
    """The demo state: a dozen fake instances, runs in every state, ledger, health."""
    demo.seed(gpuctl_home).close()
    return gpuctl_home


@pytest.fixture
def make_app(gpuctl_home: Path) -> Callable[..., GpuctlApp]:
    """create_app with a fresh engine (config read now) and test-friendly defaults."""

    def make(*, config: str | None = None, **kwargs: Any) -> GpuctlApp:
        if config is not None:
            (gpuctl_home / "config.toml").write_text(config)
        kwargs.setdefault("refresh_seconds", 3600.0)
        return create_app(Engine(), **kwargs)

    return make


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll while the app runs (no fixed sleeps: the machine is shared and slow)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def notifications(app: GpuctlApp, severity: str | None = None) -> list[str]:
    """Every notification shown so far, as 'title: message'."""
    return [f"{t}: {m}" for s, t, m in app.notice_log if severity in (None, s)]


def screen_text(app: GpuctlApp) -> list[str]:
    """The active screen as a user sees it, one string a terminal line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]
