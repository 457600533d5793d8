"""The run and GPU screens say what the run is doing now, not what it did a moment ago."""

from __future__ import annotations

import time

import pytest
from textual.widgets import Input, Select, Static

from gpuctl.events import Finished, GpuSampled, TornDown
from gpuctl.lifecycle import Engine
from gpuctl.models import GpuSample, RunStatus
from gpuctl.runs.status import transition
from gpuctl.state import Store
from gpuctl.tui.app import history
from gpuctl.tui.messages import RunEvent
from gpuctl.tui.screens.confirm import ConfirmScreen
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.main import MainScreen
from gpuctl.tui.screens.run import GpuScreen, RunScreen
from gpuctl.tui.widgets.gpu import GpuPanel
from tests.cli import gpuctl
from tests.cost.conftest import inst
from tests.tui import demo
from tests.tui.conftest import SIZE, notifications, wait_for
from tests.unit.test_state import make_run


def title(app) -> str:  # type: ignore[no-untyped-def]
    return str(app.screen.query_one("#run-title", Static).render())


def busy_gpu() -> GpuSampled:
    return GpuSampled(demo.TRAINING, (GpuSample(0, "NVIDIA A10G", 100.0, 20000.0, 24000.0),))


async def test_the_end_shows_at_once_and_a_finished_run_has_no_live_gpu(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        app.following.add(demo.TRAINING)
        app.post_message(RunEvent(busy_gpu()))
        await wait_for(lambda: "util  100%" in app.screen.query_one(GpuPanel).render().plain)
        assert "training" in title(app)
        # The stream says it finished; the store snapshot still says training.
        app.post_message(RunEvent(Finished(demo.TRAINING, "finished")))
        await wait_for(lambda: "finished" in title(app), what="finished in the header")
        assert "training" not in title(app)
        gpus = app.screen.query_one(GpuPanel).render().plain
        assert "100%" not in gpus and "N/A: the run is finished" in gpus
        await pilot.press("g")
        await wait_for(lambda: isinstance(app.screen, GpuScreen))
        await pilot.pause()
        gpus = app.screen.query_one(GpuPanel).render().plain
        assert "100%" not in gpus and "N/A: the run is finished" in gpus


async def test_an_open_run_screen_follows_the_store(seeded, make_app):
    """Another gpuctl stopped the run and terminated its machine: the header says so."""
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        assert "training" in title(app)
        with Store(seeded / "state.db") as store:
            run = store.get_run(demo.TRAINING)
            transition(store, run.id, RunStatus.STOPPED, "stopped by user")
            store.mark_instance_gone(run.provider, run.instance_id)
        app.post_message(RunEvent(TornDown(demo.TRAINING, run.instance_id, "terminated")))
        await wait_for(lambda: "stopped" in title(app), what="stopped in the header")
        assert "training" not in title(app) and "running" not in title(app)


@pytest.mark.slow
async def test_terminating_a_training_run_records_it_stopped_by_the_user(gpuctl_home, make_app):
    """x on a run that trains (launched here, followed here): stopped, not failed."""
    app = make_app(live=True, reload_seconds=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        await wait_for(lambda: modal.offers, what="offers")
        modal.query_one("#overrides", Input).value = "epochs=6 train_samples=2048"
        modal.query_one("#teardown", Select).value = "keep"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        (run_id,) = app.following
        key = f"run:{run_id}"
        await wait_for(lambda: any("epoch 1/6 step" in ln for ln in app.feed(run_id).lines), 90)
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")

        def state() -> str:
            row = app.main.snapshot.row(key)
            return row.state if row else "-"

        await wait_for(lambda: run_id not in app.following, timeout=120, what="the end")
        await wait_for(lambda: state() == "stopped", timeout=30, what="stopped")
        with Store(gpuctl_home / "state.db") as store:
            run = store.get_run(run_id)
            ended = store.events(run_id, kinds=["ended"])
        assert (run.status, run.reason) == (RunStatus.STOPPED, "stopped by user: instance removed")
        assert [e["status"] for e in ended] == ["stopped"]
        assert not [n for n in notifications(app, "error") if "exit code" in n]


@pytest.mark.parametrize("ran_again", [False, True], ids=["downloaded", "ran-after-download"])
def test_gpuctl_logs_and_the_run_screen_read_a_log_in_one_order(gpuctl_home, ran_again):
    """A finished run whose results came home after it last ran: `gpuctl logs` and the
    run screen's history both show the saved copy (complete; no machine needed). Its
    machine ran again since (a resume whose download failed): both show the machine's
    newer log, never the stale copy."""
    run_id = "validate-261123-0109"
    machine = gpuctl_home / "local" / "runs" / run_id
    machine.mkdir(parents=True)
    (machine / ".launched").write_text(str(time.time()))
    machine_log = [f"epoch {n} on the machine" for n in (1, 2, 3)]
    (machine / "train.log").write_text("\n".join(machine_log) + "\n")
    saved = gpuctl_home / "results" / run_id
    saved.mkdir(parents=True)
    saved_log = ["epoch 1 as saved", "epoch 2 as saved"]
    (saved / "train.log").write_text("\n".join(saved_log) + "\n")
    with Store(gpuctl_home / "state.db") as store:
        store.add_run(
            make_run(
                run_id,
                status=RunStatus.FINISHED,
                instance_id=f"local-{run_id}",
                remote_dir=str(machine),
                results_dir=str(saved),
            )
        )
        store.put_instance(inst("local", f"local-{run_id}", price=None, run_id=run_id))
        for kind in ("started", "ended", "downloaded", *(["started", "ended"] * ran_again)):
            store.add_event(run_id, kind, {})

    shown = gpuctl("logs", run_id)
    assert shown.returncode == 0, shown.stderr
    lines, _epochs = history(Engine(), run_id)
    expected = machine_log if ran_again else saved_log
    assert shown.stdout.splitlines() == expected
    assert lines == expected
