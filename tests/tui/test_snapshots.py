"""Snapshots of the main screen, run screen and launch modal at 100x30, 80x24 and 120x40.

Deterministic: the demo state is fixed relative to a frozen clock, live=False turns
every background worker off (no refresh, no follow), and the run screen is fed a
recorded event stream. Update after an intended change with --snapshot-update.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from gpuctl.events import LogLines
from gpuctl.lifecycle import Engine
from gpuctl.tui.app import GpuctlApp, create_app
from gpuctl.tui.messages import RunEvent
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.run import RunScreen
from gpuctl.tui.widgets.logview import LogView
from tests.tui import demo
from tests.tui.conftest import SIZE, wait_for


def frozen_app(home: Path, *, default_provider: str = "local") -> GpuctlApp:
    demo.seed(home).close()
    if default_provider != "local":
        config = (home / "config.toml").read_text()
        config = config.replace(
            'default_provider = "local"', f'default_provider = "{default_provider}"'
        )
        (home / "config.toml").write_text(config)
    return create_app(Engine(), live=False, clock=lambda: demo.NOW)


def test_main_screen(gpuctl_home: Path, snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = frozen_app(gpuctl_home)

    async def before(pilot: Pilot) -> None:
        await wait_for(lambda: app.main.table.select_key(f"run:{demo.TRAINING}"))
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_run_screen(gpuctl_home: Path, snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = frozen_app(gpuctl_home)

    async def before(pilot: Pilot) -> None:
        await wait_for(lambda: app.main.table.select_key(f"run:{demo.TRAINING}"))
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        app.following.add(demo.TRAINING)
        for ev in demo.training_events():
            app.post_message(RunEvent(ev))
        await wait_for(lambda: app.feed(demo.TRAINING).cost is not None)
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_launch_modal(gpuctl_home: Path, snap_compare) -> None:  # type: ignore[no-untyped-def]
    app = frozen_app(gpuctl_home, default_provider="fake")

    async def before(pilot: Pilot) -> None:
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        await wait_for(lambda: len(app.screen.offers) == 4, what="offers")
        await pilot.press("tab", "tab")  # focus the offers table, off the Select
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


SMALL_AND_LARGE = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SMALL_AND_LARGE, ids=["80x24", "120x40"])
def test_main_screen_filtered_and_sorted(gpuctl_home: Path, snap_compare, size) -> None:  # type: ignore[no-untyped-def]
    app = frozen_app(gpuctl_home)

    async def before(pilot: Pilot) -> None:
        await pilot.pause()
        app.main.table.set_sort("price", reverse=True)
        await pilot.press("slash", *"fake")
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SMALL_AND_LARGE, ids=["80x24", "120x40"])
def test_run_screen_long_lines_and_search(gpuctl_home: Path, snap_compare, size) -> None:  # type: ignore[no-untyped-def]
    app = frozen_app(gpuctl_home)
    long_line = "Traceback: RuntimeError: " + "CUDA error: an illegal memory access " * 3

    async def before(pilot: Pilot) -> None:
        await wait_for(lambda: app.main.table.select_key(f"run:{demo.TRAINING}"))
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        app.following.add(demo.TRAINING)
        for ev in demo.training_events():
            app.post_message(RunEvent(ev))
        app.post_message(RunEvent(LogLines(demo.TRAINING, (long_line,))))
        await wait_for(lambda: app.feed(demo.TRAINING).cost is not None)
        log = app.screen.query_one(LogView)
        await wait_for(lambda: log.lines[-1:] == [long_line], what="the long line")
        await pilot.press("slash", *"epoch")
        box = app.screen.query_one("#search", Input)
        await wait_for(lambda: box.value == "epoch", what="the typed search")
        await pilot.pause()
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.parametrize("size", SMALL_AND_LARGE, ids=["80x24", "120x40"])
def test_launch_modal_over_budget(gpuctl_home: Path, snap_compare, size) -> None:  # type: ignore[no-untyped-def]
    demo.seed(gpuctl_home, monthly=1.0).close()
    app = create_app(Engine(), live=False, clock=lambda: demo.NOW)

    async def before(pilot: Pilot) -> None:
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        await wait_for(lambda: app.screen.refusal is not None, what="the budget refusal")
        await pilot.press("ctrl+s")  # refused: the form says why and offers the override
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=before)
