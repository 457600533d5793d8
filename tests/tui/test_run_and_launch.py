"""Run screen, GPU view, launch modal, and a real validate launch on the local provider."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Checkbox, DataTable, Input, Select, Static

from gpuctl.events import GpuSampled, LogLines, Notice
from gpuctl.models import GpuSample
from gpuctl.tui.messages import RunEvent
from gpuctl.tui.screens.confirm import ConfirmScreen
from gpuctl.tui.screens.launch import LaunchScreen, parse_positive
from gpuctl.tui.screens.main import MainScreen
from gpuctl.tui.screens.run import GpuScreen, RunScreen
from gpuctl.tui.widgets.gpu import GpuPanel, spark
from gpuctl.tui.widgets.logview import LogView
from tests.tui import demo
from tests.tui.conftest import SIZE, notifications, wait_for


def feed(app, events) -> None:  # type: ignore[no-untyped-def]
    app.following.add(demo.TRAINING)
    for ev in events:
        app.post_message(RunEvent(ev))


async def test_run_screen_shows_log_gpus_epochs_cost_and_watchdog(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        feed(app, demo.training_events())
        screen = app.screen
        log = screen.query_one(LogView)
        await wait_for(lambda: len(log.lines) >= 30, what="log lines")
        await pilot.pause()
        assert log.follow and log.scroll_y == log.max_scroll_y
        assert "epoch 7/30" in str(screen.query_one("#epoch-line", Static).render())
        gpus = screen.query_one(GpuPanel).render().plain
        assert "GPU0 NVIDIA A10G" in gpus and "util" in gpus and "mem 1" in gpus
        cost = str(screen.query_one("#cost", Static).render())
        assert "$1.22" in cost and "projected" in cost and "budget $20.00" in cost
        watchdog = str(screen.query_one("#watchdog", Static).render())
        assert "max 6h" in watchdog and "idle stop 30m" in watchdog
        # the main table row follows the stream too
        assert app.row_for_run(demo.TRAINING).epoch_text().startswith("7/30")


async def test_log_search_follow_and_na_meters(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        feed(app, demo.training_events())
        log = app.screen.query_one(LogView)
        await wait_for(lambda: len(log.lines) >= 30)
        await pilot.press("slash", *"done:", "enter")
        assert len(log.matches) == 7 and log.match_index >= 0
        assert not log.follow  # jumping to a match leaves follow mode
        first = log.match_index
        await pilot.press("n")
        assert log.match_index == (first + 1) % 7
        await pilot.press("N")
        assert log.match_index == first
        await pilot.press("f")
        assert log.follow
        app.post_message(RunEvent(LogLines(demo.TRAINING, ("one more line",))))
        await wait_for(lambda: log.lines[-1] == "one more line")
        await pilot.pause()
        assert log.scroll_y == log.max_scroll_y
        # a CPU-only machine reports no memory: N/A, never 0
        app.post_message(RunEvent(demo.cpu_sample(demo.TRAINING)))
        await pilot.pause()
        text = app.screen.query_one(GpuPanel).render().plain
        assert "CPU0" in text and "mem N/A" in text
        await pilot.press("g")
        await wait_for(lambda: isinstance(app.screen, GpuScreen))
        unknown = GpuSample(1, "MI300X", util_pct=None, mem_used_mb=None, temp_c=None)
        app.post_message(RunEvent(GpuSampled(demo.TRAINING, (unknown,))))
        await pilot.pause()
        text = app.screen.query_one(GpuPanel).render().plain
        assert "GPU1 MI300X" in text and "util  N/A" in text and "temp N/A" in text
        await pilot.press("escape", "escape")
        await wait_for(lambda: isinstance(app.screen, MainScreen))


async def test_notices_from_a_run_become_notifications(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        feed(app, [Notice(demo.TRAINING, "run has spent 80% of its budget", "warning")])
        await wait_for(lambda: notifications(app, "warning"))
        assert "80% of its budget" in notifications(app, "warning")[0]


def test_spark_uses_a_fixed_scale_and_parse_positive_explains() -> None:
    assert spark([0, 50, 100], 3) == "▁▄█"
    assert spark([30, 30], 4) == "  ▂▂"  # flat 30% looks like 30%, not a full bar
    assert parse_positive("", "budget") == (None, "")
    assert parse_positive("$5", "budget") == (5.0, "")
    assert parse_positive("abc", "budget")[1] == "budget must be a number, got 'abc'"
    assert parse_positive("-1", "max hours")[1] == "max hours must be more than 0"


async def test_launch_modal_validates_inline_and_updates_the_estimate(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        estimate = modal.query_one("#estimate", Static)
        errors = modal.query_one("#errors", Static)
        go = modal.query_one("#go", Button)
        await wait_for(lambda: modal.offers, what="local offers")
        assert "Estimate ~" in str(estimate.render())
        assert "2 epochs" in str(modal.query_one("#preset-info", Static).render())
        assert modal.query_one("#max-hours", Input).value == "1"  # validate's max hours

        budget = modal.query_one("#budget", Input)
        budget.value = "abc"
        await pilot.pause()
        assert go.disabled and "budget must be a number" in str(errors.render())
        assert budget.has_class("-invalid")
        budget.value = "-2"
        await pilot.pause()
        assert "budget must be more than 0" in str(errors.render())
        budget.value = "5"
        modal.query_one("#max-hours", Input).value = "0"
        await pilot.pause()
        assert go.disabled and "max hours must be more than 0" in str(errors.render())
        modal.query_one("#max-hours", Input).value = "2"
        modal.query_one("#overrides", Input).value = "epochs=zero"
        await pilot.pause()
        assert go.disabled and "epochs" in str(errors.render())
        modal.query_one("#overrides", Input).value = "epochs=4"
        await pilot.pause()
        assert not go.disabled and not errors.display
        assert "4 epochs" in str(modal.query_one("#preset-info", Static).render())

        # Another provider: its offers, spot price and saving; the estimate follows the price.
        modal.query_one("#provider", Select).value = "fake"
        await wait_for(lambda: len(modal.offers) == 4, what="fake offers")
        await pilot.pause()
        table = modal.query_one("#offers", DataTable)
        assert "60%" in str(table.get_row_at(0)[4])  # g4dn spot saving
        spot = modal.query_one("#spot", Checkbox)
        assert not spot.disabled and "0.210" in str(spot.label)
        on_demand = str(estimate.render())
        assert "$0.526/h" in on_demand
        spot.value = True
        await pilot.pause()
        assert "$0.210/h" in str(estimate.render())
        table.move_cursor(row=3)
        await pilot.pause()
        assert "$3.670/h" in str(estimate.render())  # p3.8xlarge spot
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        assert app.main.table.row_count == 15  # cancelled: nothing launched


async def test_launch_refused_by_the_budget_says_so_before_anything_is_rented(
    gpuctl_home, make_app
):
    demo.seed(gpuctl_home, monthly=1.0).close()  # this month already spent more than $1
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        await wait_for(lambda: modal.offers, what="offers")
        await pilot.pause()
        assert "budget" in str(modal.query_one("#estimate", Static).render())
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, LaunchScreen)
        assert "monthly budget" in str(modal.query_one("#errors", Static).render())


@pytest.mark.slow
async def test_validate_launched_from_the_modal_reaches_finished(gpuctl_home, make_app):
    """The real thing: local provider, real trainer, agent and store, from the keyboard."""
    app = make_app(live=True, reload_seconds=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        await wait_for(lambda: app.screen.offers, what="offers")
        await pilot.press("ctrl+s")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        table = app.main.table
        (run_id,) = app.following
        key = f"run:{run_id}"
        assert table.current_key == key  # the new row is there at once, selected
        first_state = app.main.snapshot.row(key).state
        assert first_state in ("provisioning", "up", "training") or first_state.startswith("sync")
        seen = set()

        def state() -> str:
            row = app.main.snapshot.row(key)
            seen.add(row.state if row else "-")
            return row.state if row else "-"

        await wait_for(lambda: state() == "finished", timeout=120, what="finished")
        assert "training" in seen
        feed_ = app.feed(run_id)
        assert any("epoch 2/2" in line for line in feed_.lines)
        assert feed_.final == "finished"
        assert any("finished" in n for n in notifications(app))
        assert not notifications(app, "error")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        log = app.screen.query_one(LogView)
        assert any("epoch 2/2" in line for line in log.lines)


@pytest.mark.slow
async def test_stop_then_resume_a_local_run_kept_at_the_end(gpuctl_home, make_app):
    """s stops gracefully (checkpoint), r resumes from it: teardown 'keep' chosen at launch."""
    app = make_app(live=True, reload_seconds=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        await wait_for(lambda: modal.offers, what="offers")
        # Long enough that the stop always lands mid-run, even on a loaded machine.
        modal.query_one("#overrides", Input).value = "epochs=6 train_samples=2048"
        modal.query_one("#teardown", Select).value = "keep"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        (run_id,) = app.following
        key = f"run:{run_id}"

        def state() -> str:
            row = app.main.snapshot.row(key)
            return row.state if row else "-"

        await wait_for(lambda: any("epoch 1/6 step" in ln for ln in app.feed(run_id).lines), 90)
        await pilot.press("s")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "The machine stays up" in app.screen.body
        await pilot.press("y")
        await wait_for(lambda: state().startswith("stopped"), timeout=90, what="stopped")
        await wait_for(lambda: run_id not in app.following, timeout=60, what="wrap-up")
        assert not notifications(app, "error")
        await pilot.press("r")
        await wait_for(lambda: state().startswith("finished"), timeout=120, what="finished")
        assert any(
            "resumed" in line or "trainer resumed" in line for line in app.feed(run_id).lines
        )
        assert not notifications(app, "error")


async def test_a_finished_run_shows_its_saved_log_and_curve(seeded, make_app):
    results = seeded / "results" / demo.FINISHED
    results.mkdir(parents=True)
    (results / "train.log").write_text("".join(f"line {i} [bracketed]\n" for i in range(300)))
    (results / "events.jsonl").write_text(
        '{"event": "epoch_end", "epoch": 1, "epochs": 2, "train_loss": 2.2, "val_loss": 2.1,'
        ' "val_metric": 0.14, "warmup": true}\n'
        '{"event": "epoch_end", "epoch": 2, "epochs": 2, "train_loss": 1.9, "val_loss": 2.0,'
        ' "val_metric": 0.56}\nnot json\n'
    )
    config = demo.config(12).replace('"local", "fake", "aws"', '"local", "fake"')
    app = make_app(config=config, live=True, reload_seconds=3600.0, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.FINISHED}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        log = app.screen.query_one(LogView)
        await wait_for(lambda: len(log.lines) == 300, what="saved log")
        assert log.lines[-1] == "line 299 [bracketed]"
        feed_ = app.feed(demo.FINISHED)
        assert sorted(feed_.epochs) == [1, 2]
        await pilot.pause()
        metric = str(app.screen.query_one("#metric-line", Static).render())
        assert "acc 0.560" in metric and "best 0.560" in metric
        gpus = app.screen.query_one(GpuPanel).render().plain
        assert "N/A" in gpus and "finished" in gpus


async def test_command_palette_runs_the_same_actions(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        commands = {c.title: c for c in app.get_system_commands(app.main)}
        await commands["Launch"].callback()
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        await pilot.press("ctrl+p")
        await wait_for(lambda: type(app.screen).__name__ == "CommandPalette", what="palette")
        await pilot.press(*"cost", "enter")
        await wait_for(lambda: type(app.screen).__name__ == "CostScreen", what="cost screen")
