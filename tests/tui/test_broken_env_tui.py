"""The control center survives a broken user preset: the launch modal says what is wrong
instead of the app crashing."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from gpuctl.tui.screens.launch import LaunchScreen
from tests.tui.conftest import SIZE, wait_for


async def test_preset_base_cycle_is_shown_in_the_launch_modal(gpuctl_home: Path, make_app):
    presets = gpuctl_home / "presets"
    presets.mkdir()
    (presets / "alpha.toml").write_text('base = "beta"\ndescription = "a"\n')
    (presets / "beta.toml").write_text('base = "alpha"\ndescription = "b"\n')
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen), what="the launch modal")
        await pilot.pause()
        errors = str(app.screen.query_one("#errors", Static).render())
        assert "in a circle: alpha -> beta -> alpha" in errors
        assert app.is_running
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, LaunchScreen), what="modal closed")
        assert app.is_running
