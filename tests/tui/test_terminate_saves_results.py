"""`x` on a run whose results were never downloaded: downloaded first, then terminated."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.tui.screens.confirm import ConfirmScreen
from tests.cli import gpuctl
from tests.e2e.test_results_kept import machine, wait_finished
from tests.tui.conftest import SIZE, notifications, wait_for


@pytest.mark.slow
async def test_x_downloads_a_finished_runs_results_before_terminating(gpuctl_home, make_app):
    launched = gpuctl("launch", "validate")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    wait_finished(gpuctl_home, run_id)
    saved = gpuctl_home / "results" / run_id
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: app.main.snapshot.row(f"run:{run_id}") is not None, what="row")
        app.main.table.select_key(f"run:{run_id}")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "never downloaded" in app.screen.body and str(saved) in app.screen.body
        await pilot.press("y")
        await wait_for(lambda: not machine(gpuctl_home, run_id).exists(), 60, "terminated")
        for name in ("best.pt", "last.pt", "history.json", "train.log"):
            assert (Path(saved) / name).is_file(), name
        assert not notifications(app, "error")


@pytest.mark.slow
async def test_x_then_discard_terminates_without_downloading(gpuctl_home, make_app):
    """The user's explicit choice, as `gpuctl down` offers it: the results are not copied."""
    launched = gpuctl("launch", "validate")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    wait_finished(gpuctl_home, run_id)
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: app.main.snapshot.row(f"run:{run_id}") is not None, what="row")
        app.main.table.select_key(f"run:{run_id}")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "Discard terminates it without them" in app.screen.body
        await pilot.click("#alternative")
        await wait_for(lambda: not machine(gpuctl_home, run_id).exists(), 60, "terminated")
        assert not (gpuctl_home / "results" / run_id / "last.pt").exists()
        assert not notifications(app, "error")
