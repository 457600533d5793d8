"""What a user reads on screen at 80x24 and 120x40: typed text, sort arrows, whole states,
whole log lines, ticks that do not depend on colour, and a budget override in the modal."""

from __future__ import annotations

import pytest
from textual.widgets import Checkbox, Static

from gpuctl.events import LogLines
from gpuctl.models import InstanceState, RunStatus
from gpuctl.runs.status import transition
from gpuctl.tui.messages import RunEvent
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.run import RunScreen
from gpuctl.tui.widgets.instances import COLUMNS, fit_columns
from gpuctl.tui.widgets.logview import LogView
from gpuctl.tui.widgets.tickbox import TickBox
from tests.tui import demo
from tests.tui.conftest import screen_text, wait_for
from tests.tui.fake_provider import make_instance

SIZES = [(80, 24), (120, 40)]


@pytest.mark.parametrize("size", SIZES)
async def test_typed_filter_and_log_search_are_drawn(seeded, make_app, size):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await pilot.press("slash", *"a10g")
        await pilot.pause()
        assert any("a10g" in line for line in screen_text(app))
        await pilot.press("escape")
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        await pilot.press("slash", *"epoch")
        await pilot.pause()
        assert any("epoch" in line and "search" not in line for line in screen_text(app))


@pytest.mark.parametrize("size", SIZES)
async def test_the_sort_arrow_is_on_the_sorted_column_and_fits(seeded, make_app, size):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        table = app.main.table
        for col in fit_columns(table.size.width):
            for reverse in (False, True):
                table.set_sort(col.key, reverse=reverse)
                await pilot.pause()
                labels = table.header_labels()
                arrowed = [k for k, text in labels.items() if text.endswith(("▲", "▼"))]
                assert arrowed == [col.key]
                assert labels[col.key].endswith("▼" if reverse else "▲")
                header = screen_text(app)[table.region.y]
                assert col.label + (" ▼" if reverse else " ▲") in header


def test_every_column_has_room_for_its_label_and_the_arrow() -> None:
    for col in COLUMNS:
        assert col.width >= len(col.label) + 2, col.key


@pytest.mark.parametrize("size", SIZES)
async def test_the_state_column_shows_a_whole_ended_state(gpuctl_home, make_app, size):
    store = demo.seed(gpuctl_home)
    box = make_instance("fake", 5).evolve(state=InstanceState.STOPPING, run_id=demo.FAILED)
    store.put_instance(box)
    transition(store, demo.FAILED, RunStatus.INTERRUPTED, instance_id=box.id)
    store.close()
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        key = f"run:{demo.FAILED}"
        assert app.main.snapshot.row(key).state == "interrupted, stopping"
        assert app.main.table.select_key(key)
        await pilot.pause()
        assert any("interrupted, stopping" in line for line in screen_text(app))


@pytest.mark.parametrize("size", SIZES)
async def test_long_log_lines_wrap_and_w_scrolls_sideways_instead(seeded, make_app, size):
    app = make_app(live=False, clock=lambda: demo.NOW)
    tail = "the end of a long traceback line"
    long_line = "RuntimeError: " + "x" * 130 + " " + tail
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen))
        app.following.add(demo.TRAINING)
        app.post_message(RunEvent(LogLines(demo.TRAINING, (long_line, "next line"))))
        log = app.screen.query_one(LogView)
        await wait_for(lambda: "next line" in log.lines)
        await pilot.pause()
        shown = log.render_lines_plain()
        assert len(shown) > 2 and shown[-1] == "next line"
        assert "".join(shown[:-1]) == long_line  # every character, over several rows
        assert all(len(row) <= log.scrollable_content_region.width for row in shown)
        drawn = "".join(screen_text(app))
        assert "RuntimeError" in drawn and "the end of a long" in drawn
        log.focus()
        await pilot.press("w")
        await pilot.pause()
        assert not log.wrap
        assert log.render_lines_plain()[-2] == long_line  # one row again, scrolls sideways
        assert log.virtual_size.width >= len(long_line)


async def test_a_spot_box_without_spot_price_does_not_look_ticked(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("l")
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        await wait_for(lambda: modal.offers, what="local offers")
        await pilot.pause()
        spot = modal.query_one("#spot", Checkbox)
        assert isinstance(spot, TickBox) and spot.disabled and not spot.value
        line = next(text for text in screen_text(app) if "Spot (n/a)" in text)
        assert "X" not in line.split("Spot")[0][-4:]
        spot.disabled = False
        spot.value = True
        await pilot.pause()
        line = next(text for text in screen_text(app) if "Spot" in text)
        assert "X" in line.split("Spot")[0][-4:]


async def test_a_budget_refusal_offers_the_override_in_the_modal(gpuctl_home, make_app):
    demo.seed(gpuctl_home, monthly=1.0).close()  # this month already spent more than $1
    app = make_app(live=False, clock=lambda: demo.NOW)
    chosen: list[object] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.push_screen(LaunchScreen(), chosen.append)
        await wait_for(lambda: isinstance(app.screen, LaunchScreen))
        modal = app.screen
        await wait_for(lambda: modal.offers, what="offers")
        await wait_for(lambda: modal.refusal is not None, what="the budget refusal")
        force = modal.query_one("#force", Checkbox)
        assert force.display and not force.value
        await pilot.press("ctrl+s")
        await pilot.pause()
        errors = str(modal.query_one("#errors", Static).render())
        assert "monthly budget" in errors and "--force" not in errors
        assert "Launch anyway" in errors
        assert not chosen  # refused: nothing launched
        force.value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(lambda: bool(chosen), what="the launch")
        (spec,) = chosen
        assert spec is not None and spec.options.get("force") is True
