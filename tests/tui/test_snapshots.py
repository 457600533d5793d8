"""Snapshots of the main screen, run screen and launch modal at 100x30.

Deterministic: the demo state is fixed relative to a frozen clock, live=False turns
every background worker off (no refresh, no follow), and the run screen is fed a
recorded event stream. Update after an intended change with --snapshot-update.
"""

from __future__ import annotations

from pathlib import Path

from textual.pilot import Pilot

from gpuctl.lifecycle import Engine
from gpuctl.tui.app import GpuctlApp, create_app
from gpuctl.tui.messages import RunEvent
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.run import RunScreen
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
