"""Inside a project (a gpuctl.toml), the launch modal offers its modes first, says what a
command mode runs, refuses what would not apply, and launches a mode as `gpuctl run` would."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from textual.widgets import Button, Checkbox, Input, Select, Static
from textual.widgets._select import SelectOverlay

from gpuctl.lifecycle import Engine
from gpuctl.models import Run, RunStatus
from gpuctl.tui.screens.confirm import ConfirmScreen
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.main import MainScreen
from gpuctl.tui.screens.run import RunScreen
from tests.tui.conftest import SIZE, screen_text, wait_for

PROJECT = """\
[project]
name = "demo"

[modes.fast]
description = "one quick pass over the data"
command = "python train.py --quick"
epochs = 1
max_hours = 2
budget = 5

[modes.bench]
preset = "fast"
train = { epochs = 1 }
idle_minutes = 7
"""


def project_dir(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project of its own (the .git ends gpuctl's search there), the current directory."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    (root / "gpuctl.toml").write_text(text)
    (root / "train.py").write_text("print('training')\n")
    monkeypatch.chdir(root)
    return root


def shown(modal: LaunchScreen, widget_id: str) -> str:
    return str(modal.query_one(f"#{widget_id}", Static).render())


async def open_modal(app, pilot) -> LaunchScreen:  # type: ignore[no-untyped-def]
    await pilot.pause()
    await pilot.press("l")
    await wait_for(lambda: isinstance(app.screen, LaunchScreen), what="the launch modal")
    modal = app.screen
    await wait_for(lambda: modal.offers or modal.offers_error, what="offers")
    await pilot.pause()
    return modal


async def test_modes_come_first_and_a_shadowed_preset_is_listed_once(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    project_dir(tmp_path, PROJECT, monkeypatch)
    app = make_app(live=False)
    async with app.run_test(size=(100, 40)) as pilot:
        modal = await open_modal(app, pilot)
        await pilot.press("enter")  # the preset select has the focus: open its list
        await pilot.pause()
        overlay = modal.query_one("#preset", Select).query_one(SelectOverlay)
        assert overlay.display  # the list is open on screen
        listed = [str(overlay.get_option_at_index(i).prompt) for i in range(overlay.option_count)]
        assert listed == [
            "fast · your command",
            "bench · preset fast",
            "validate",
            "standard",
            "full",
            "custom",
        ]  # the bundled `fast` is the project's mode here: listed once, as the mode
        await pilot.press("escape")  # close the list, keep the modal
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)

        # The command mode is chosen first: what it runs, its epochs and defaults, no trainer
        info = shown(modal, "preset-info")
        assert "one quick pass over the data" in info
        assert "python train.py --quick" in info and "1 epoch ·" in info
        assert "budget $5.00" in info and "max 2 h" in info and "gpuctl.toml:4" in info
        assert "not the bundled preset 'fast'" in info
        assert "px images" not in info and "samples/epoch" not in info
        assert modal.query_one("#max-hours", Input).value == "2"  # the mode's, not fast's
        assert modal.query_one("#budget", Input).value == "5"

        # No pace yet: say so, and what the limit allows; never "$ N/A" with a known price.
        estimate = shown(modal, "estimate")
        assert "no estimate yet (first run of this mode here)" in estimate
        assert "stops at 2 h" in estimate and "at most" in estimate
        assert "N/A" not in estimate and "throughput table" not in estimate

        # Overrides change the bundled trainer: refused for a command, with the reason.
        overrides = modal.query_one("#overrides", Input)
        overrides.value = "epochs=3"
        await pilot.pause()
        errors = shown(modal, "errors")
        assert "mode 'fast' runs your command" in errors and "[modes.fast]" in errors
        assert modal.query_one("#go", Button).disabled
        overrides.value = ""
        await pilot.pause()
        assert not modal.query_one("#go", Button).disabled

        # The preset mode: the bundled trainer's shape with the mode's [train].
        modal.query_one("#preset", Select).value = "bench"
        await pilot.pause()
        info = shown(modal, "preset-info")
        assert "1 epoch ·" in info and "px images" in info and "idle stop 7 min" in info
        assert "bundled trainer, preset fast" in info
        assert modal.query_one("#budget", Input).value == ""  # fast's budget went with it
        assert "throughput table" in shown(modal, "estimate")
        overrides.value = "epochs=3"
        await pilot.pause()
        assert "3 epochs" in shown(modal, "preset-info")
        assert not modal.query_one("#go", Button).disabled


async def test_a_spot_mode_ticks_spot_and_its_type_picks_the_offer(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    from tests.tui import demo

    demo.seed(gpuctl_home).close()  # local, fake and aws profiles
    project_dir(
        tmp_path,
        '[modes.big]\ncommand = "python train.py"\nprovider = "fake"\ntype = "p3.8xlarge"\n'
        'spot = true\nteardown = "stop"\n',
        monkeypatch,
    )
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_modal(app, pilot)
        await wait_for(lambda: len(modal.offers) == 4, what="the fake provider's offers")
        await pilot.pause()
        assert modal.query_one("#provider", Select).value == "fake"
        assert modal.offer is not None and modal.offer.instance_type == "p3.8xlarge"
        spot = modal.query_one("#spot", Checkbox)
        assert spot.value and "(mode)" in str(spot.label)
        assert modal.query_one("#teardown", Select).value == "stop"
        assert "$3.670/h" in shown(modal, "estimate")  # the spot price of that type


async def test_a_broken_project_file_shows_its_line_and_refuses_to_launch(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    project_dir(tmp_path, PROJECT.replace("epochs = 1\nmax", "epoch = 1\nmax"), monkeypatch)
    app = make_app(live=False)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_modal(app, pilot)
        errors = shown(modal, "errors")
        assert "gpuctl.toml:7: unknown key 'epoch' in [modes.fast]" in errors
        assert "did you mean 'epochs'?" in errors
        assert modal.query_one("#go", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen) and app.is_running  # nothing launched
        assert app.engine.store.list_runs() == []


@pytest.mark.slow
async def test_a_command_mode_launched_from_the_modal_records_the_users_command(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    """The real local provider: the run is recorded with the mode's command as its job."""
    root = project_dir(tmp_path, PROJECT, monkeypatch)
    app = make_app(live=True, reload_seconds=1.0)
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_modal(app, pilot)
        select = modal.query_one("#preset", Select)
        select.value = "bench"
        await pilot.pause()
        assert modal.query_one("#budget", Input).value == ""
        select.value = "fast"  # back to the command mode: its defaults fill the form again
        await pilot.pause()
        assert modal.query_one("#budget", Input).value == "5"
        await pilot.press("ctrl+s")
        await wait_for(lambda: isinstance(app.screen, MainScreen), what="the modal closed")
        (run_id,) = app.following
        key = f"run:{run_id}"
        assert run_id.startswith("fast-")
        assert app.main.snapshot.row(key).preset == "fast"  # the mode's name in the table
        store = app.engine.store
        run = store.find_run(run_id)
        assert run is not None and run.preset == "fast"
        job = run.spec["job"]
        assert job["command"] == "python train.py --quick" and job["mode"] == "fast"
        assert job["project"] == "demo" and job["project_file"] == str(root / "gpuctl.toml")
        assert run.spec["budget"] == 5.0 and run.spec["max_hours"] == 2.0
        assert run.spec["workdir"] == str(root)

        def ended() -> bool:
            found = store.find_run(run_id)
            return found is not None and found.status.terminal

        await wait_for(ended, timeout=180, what="the run ended")
        # its wrap-up (download, teardown) is over too: nothing is left going after the test
        await wait_for(lambda: run_id not in app.following, timeout=120, what="the wrap-up")
        kinds = {ev["kind"] for ev in store.events(run_id)}
        assert "launch" in kinds


async def test_a_command_modes_estimate_comes_from_its_own_past_runs(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    root = project_dir(tmp_path, PROJECT, monkeypatch)
    app = make_app(live=False)
    store = app.engine.store
    job = {"kind": "command", "command": "python train.py --quick", "mode": "fast"}
    job.update(project="demo", project_file=str(root / "gpuctl.toml"), epochs=1)
    now = time.time()
    store.add_run(
        Run(
            "fast-past-0001",
            "fast",
            "local",
            RunStatus.FINISHED,
            now - 900.0,
            now - 600.0,
            spec={"run_id": "fast-past-0001", "preset": "fast", "provider": "local", "job": job},
            epoch=1,
            epochs=1,
        )
    )
    for number, seconds, warm in ((1, 400.0, True), (2, 300.0, False)):
        store.add_event(
            "fast-past-0001", "epoch", {"epoch": number, "epoch_seconds": seconds, "warmup": warm}
        )
    async with app.run_test(size=SIZE) as pilot:
        modal = await open_modal(app, pilot)
        estimate = shown(modal, "estimate")
        assert "(1 past run of this mode)" in estimate
        assert "no estimate yet" not in estimate and "N/A" not in estimate


async def test_a_command_run_reads_as_its_mode_without_the_trainers_facts(
    gpuctl_home, tmp_path, monkeypatch, make_app
):
    """Run screen, runs table and the stop prompt: the mode's name, never image sizes,
    samples per epoch or the bundled trainer's last.pt for the user's own script."""
    root = project_dir(tmp_path, PROJECT, monkeypatch)
    run_id = "fast-261203-beef"
    job = {"kind": "command", "command": "python train.py --quick", "mode": "fast"}
    job.update(project="demo", project_file=str(root / "gpuctl.toml"), checkpoint="ckpt/last")
    now = time.time()
    spec = {"run_id": run_id, "preset": "fast", "provider": "local", "max_hours": 2.0}
    Engine().store.add_run(
        Run(
            run_id,
            "fast",
            "local",
            RunStatus.RUNNING,
            now - 60.0,
            now - 30.0,
            spec={**spec, "train": {"epochs": 1}, "job": job, "teardown": "keep"},
            epochs=1,
        )
    )
    app = make_app(live=False)  # its first snapshot has the run
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await wait_for(lambda: app.main.table.select_key(f"run:{run_id}"), what="the run row")
        assert app.row_for_run(run_id).preset == "fast"
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen), what="the run screen")
        await pilot.pause()
        text = "\n".join(screen_text(app))
        assert f"{run_id} · fast on local" in text
        assert "px" not in text and "samples/epoch" not in text
        await pilot.press("s")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen), what="the stop prompt")
        body = app.screen.body
        assert "Your command gets SIGTERM to save ckpt/last" in body
        assert "last.pt" not in body and "trainer" not in body
        await pilot.press("escape")
