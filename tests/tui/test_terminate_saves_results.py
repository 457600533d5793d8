"""`x` on a run whose results were never downloaded: downloaded first, then terminated;
or, by the user's explicit choice, terminated without them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuctl.tui.screens.confirm import ConfirmScreen
from tests.cli import gpuctl
from tests.e2e.test_results_kept import machine, wait_finished
from tests.tui.conftest import SIZE, notifications, wait_for


def _finished_run(home: Path) -> str:
    launched = gpuctl("launch", "validate")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    wait_finished(home, run_id)
    return run_id


async def _terminate_dialog(app: Any, pilot: Any, run_id: str) -> ConfirmScreen:
    await wait_for(lambda: app.main.snapshot.row(f"run:{run_id}") is not None, what="row")
    app.main.table.select_key(f"run:{run_id}")
    await pilot.press("x")
    await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
    return app.screen


@pytest.mark.slow
async def test_x_downloads_a_finished_runs_results_before_terminating(gpuctl_home, make_app):
    run_id = _finished_run(gpuctl_home)
    saved = gpuctl_home / "results" / run_id
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await _terminate_dialog(app, pilot, run_id)
        assert "never downloaded" in dialog.body and str(saved) in dialog.body
        await pilot.press("y")
        await wait_for(lambda: not machine(gpuctl_home, run_id).exists(), 60, "terminated")
        for name in ("best.pt", "last.pt", "history.json", "train.log"):
            assert (Path(saved) / name).is_file(), name
        assert not notifications(app, "error")


@pytest.mark.slow
async def test_x_then_discard_terminates_without_downloading(gpuctl_home, make_app):
    """The user's explicit choice, as `gpuctl down` offers it: the results are not copied."""
    run_id = _finished_run(gpuctl_home)
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await _terminate_dialog(app, pilot, run_id)
        assert "Discard terminates it without them" in dialog.body
        await pilot.click("#alternative")
        await wait_for(lambda: not machine(gpuctl_home, run_id).exists(), 60, "terminated")
        assert not (gpuctl_home / "results" / run_id / "last.pt").exists()
        assert not notifications(app, "error")
