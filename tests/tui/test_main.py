"""Main screen: first paint from the cache, keys, refresh, filter, sort, failures."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Footer, Input

from gpuctl.models import InstanceState
from gpuctl.state import Store
from gpuctl.tui.screens.confirm import ConfirmScreen
from gpuctl.tui.screens.cost import CostScreen
from gpuctl.tui.screens.help import HelpScreen
from gpuctl.tui.screens.launch import LaunchScreen
from gpuctl.tui.screens.main import MainScreen
from gpuctl.tui.screens.run import GpuScreen, RunScreen
from gpuctl.tui.widgets.meter import CostMeter, ProviderChips
from tests.tui import demo
from tests.tui.conftest import SIZE, notifications, wait_for
from tests.tui.fake_provider import make_instance


def seed_many(home: Path, count: int = 1000) -> None:
    (home / "config.toml").write_text(demo.config(count))
    with Store(home / "state.db") as store:
        store.put_instances("fake", [make_instance("fake", i) for i in range(count)])
        store.set_provider_status("fake", True, "")


async def test_first_paint_comes_from_the_cache_without_the_network(gpuctl_home, make_app):
    seed_many(gpuctl_home)
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.main.table
        assert table.row_count == 1000
        assert app.listed_at is None  # nothing was asked of any provider
        meter = app.main.query_one(CostMeter).render().plain
        assert "/h now" in meter and "of $200" in meter and "%" in meter
        chips = app.main.query_one(ProviderChips).render().plain
        assert "fake: ok" in chips and "aws: not checked yet" in chips


async def test_rows_show_runs_and_instances_with_states_in_words(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=(150, 30)) as pilot:
        await pilot.pause()
        rows = {r.key: r for r in app.main.snapshot.rows}
        training = rows[f"run:{demo.TRAINING}"]
        cells = training.cells(demo.NOW)
        assert cells["state"] == "training" and cells["epoch"] == "7/30 1h12m"
        assert cells["gpus"] == "1x A10G" and cells["price"] == "1.006"
        assert rows[f"run:{demo.FINISHED}"].state == "finished"
        assert rows[f"run:{demo.PROVISIONING}"].state == "provisioning"
        assert rows["inst:fake/i-00000"].state == "running ext"  # not created by gpuctl
        # Wide terminal: every column is there.
        assert len(app.main.table.columns) == 11


async def test_footer_keys_do_what_the_footer_says(seeded, make_app, monkeypatch):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        footer = app.main.query_one(Footer)
        shown = {
            b.key
            for b in app.main.BINDINGS
            if getattr(b, "show", True) and b.description and footer.display
        }
        table = app.main.table
        table.select_key(f"run:{demo.TRAINING}")
        refreshed = []
        monkeypatch.setattr(app, "refresh_now", lambda **kw: refreshed.append(kw))
        expectations = {
            "question_mark": HelpScreen,
            "enter": RunScreen,
            "l": LaunchScreen,
            "s": ConfirmScreen,
            "x": ConfirmScreen,
            "g": GpuScreen,
            "c": CostScreen,
        }
        for key, screen_type in expectations.items():
            await pilot.press(key)
            await wait_for(lambda t=screen_type: isinstance(app.screen, t), what=f"{key} screen")
            app.pop_screen()
            await pilot.pause()
        await pilot.press("slash")
        assert app.main.query_one("#filter", Input).has_focus
        await pilot.press("escape")
        await pilot.press("R")
        assert refreshed == [{"network": True, "announce": True}]
        # r on a running run, d and o without a machine here: each answers in words.
        await pilot.press("r")
        await pilot.press("o")
        log = " ".join(notifications(app))
        assert "already going" in log
        assert "shell" in log
        await pilot.press("d")
        await wait_for(lambda: "download failed" in " ".join(notifications(app)), what="download")
        tested = {*expectations, "slash", "R", "r", "d", "o", "q"}
        assert shown <= tested, f"footer keys without a test: {shown - tested}"
        await pilot.press("q")
        await wait_for(lambda: app.return_code is not None or not app.is_running, what="quit")


async def test_help_and_palette_list_every_footer_key(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        commands = {c.title for c in app.get_system_commands(app.main)}
        for title in ("Launch", "Stop", "Terminate", "Resume", "Download", "Shell", "GPU"):
            assert title in commands
        for title in ("Cost", "Filter", "Refresh", "Help", "Quit"):
            assert title in commands
        await pilot.press("question_mark")
        await wait_for(lambda: isinstance(app.screen, HelpScreen))
        keys = {k for k, _ in app.screen.rows}
        assert {"l", "s", "x", "r", "d", "o", "g", "c", "/", "R", "?", "q"} <= keys


async def test_filter_and_sort_keep_the_selected_row(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.main.table
        table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("slash", *"standard")
        assert table.row_count == 1 and table.current_key == f"run:{demo.TRAINING}"
        await pilot.press("escape")
        assert table.row_count == 15 and table.current_key == f"run:{demo.TRAINING}"
        before = table.order
        await pilot.press("t")  # next sort column
        assert table.sort_column != "state" and table.current_key == f"run:{demo.TRAINING}"
        assert table.order != before


async def test_refresh_updates_rows_in_place_and_keeps_cursor_and_scroll(gpuctl_home, make_app):
    seed_many(gpuctl_home)
    app = make_app(live=True, reload_seconds=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: app.listed_at is not None, timeout=30, what="first refresh")
        table = app.main.table
        assert table.row_count == 1000
        table.move_cursor(row=500)
        await pilot.pause()
        key, scroll = table.current_key, table.scroll_y
        assert scroll > 0
        listed = app.listed_at
        await pilot.press("R")
        await wait_for(lambda: app.listed_at != listed, timeout=30, what="second refresh")
        await pilot.pause()
        assert table.current_key == key
        assert table.scroll_y == scroll
        await pilot.press("down")
        assert table.cursor_row == 501


async def test_a_failing_provider_never_blanks_the_table(gpuctl_home, make_app, fake_state):
    seed_many(gpuctl_home, 200)
    app = make_app(live=True, reload_seconds=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: app.listed_at is not None, timeout=30, what="first refresh")
        assert app.main.table.row_count == 200
        fake_state.failing["fake"] = "error"
        listed = app.listed_at
        await pilot.press("R")
        await wait_for(lambda: app.listed_at != listed, timeout=30, what="failing refresh")
        await pilot.pause()
        assert app.main.table.row_count == 200  # the cached rows stay
        chips = app.main.query_one(ProviderChips).render().plain
        assert "fake: error" in chips and "API timed out" in chips
        errors = notifications(app, "error")
        assert any("fake: error" in n and "API timed out" in n for n in errors)


async def test_missing_credentials_is_a_chip_and_a_warning(gpuctl_home, make_app):
    config = demo.config(5) + '\n[profiles.cloud]\nprovider = "fake"\nfail = "credentials"\n'
    config = config.replace('providers = ["local", "fake", "aws"]', 'providers = ["fake", "cloud"]')
    app = make_app(config=config, live=True, reload_seconds=3600.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(lambda: app.listed_at is not None, timeout=30, what="refresh")
        await pilot.pause()
        assert app.main.table.row_count == 5
        chips = app.main.query_one(ProviderChips).render().plain
        assert "fake: ok" in chips and "cloud: no credentials" in chips
        warnings = notifications(app, "warning")
        assert any("cloud: no credentials" in n and "FAKE_TOKEN" in n for n in warnings)


async def test_stop_asks_first_and_a_failure_is_a_notification_with_its_hint(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{demo.TRAINING}")
        await pilot.press("s")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "last.pt" in str(app.screen.body)
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        assert not notifications(app, "error")
        await pilot.press("s")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: notifications(app, "error"), what="stop failure")
        (message,) = notifications(app, "error")
        assert message.startswith("stop failed: ")
        assert "not reachable" in message and "hint: the fake has no machines" in message
        assert "Traceback" not in message


async def test_terminate_unmanaged_needs_its_name_typed(seeded, make_app, fake_state):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key("inst:fake/i-00000")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        dialog = app.screen
        assert dialog.require == "box-0000" and "NOT" in dialog.body
        confirm = dialog.query_one("#confirm")
        assert confirm.disabled
        await pilot.press("y")  # a plain yes is just a letter in the name box
        assert isinstance(app.screen, ConfirmScreen) and confirm.disabled
        await pilot.press("backspace", *"box-000", "enter")
        assert isinstance(app.screen, ConfirmScreen) and confirm.disabled
        assert fake_state.calls == []
        await pilot.press("0")
        assert not confirm.disabled
        await pilot.press("enter")
        await wait_for(lambda: ("terminate", "i-00000") in fake_state.calls, what="terminate")
        await wait_for(lambda: app.main.snapshot.row("inst:fake/i-00000") is None, what="row gone")
        with Store(seeded / "state.db") as store:
            assert store.get_instance("fake", "i-00000").state == InstanceState.TERMINATED


async def test_terminate_managed_is_a_plain_confirmation(seeded, make_app, fake_state):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key("inst:fake/i-00002")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.require is None
        await pilot.press("escape")
        assert fake_state.calls == []
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(lambda: ("terminate", "i-00002") in fake_state.calls, what="terminate")


async def test_actions_on_a_row_without_a_run_explain_themselves(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key("inst:fake/i-00002")
        for key in ("enter", "s", "r", "d", "g"):
            await pilot.press(key)
            assert isinstance(app.screen, MainScreen), key
        assert sum("no run on this row" in n for n in notifications(app)) == 5
        app.main.table.select_key(f"run:{demo.FINISHED}")
        await pilot.press("x")
        assert isinstance(app.screen, MainScreen)
        assert "nothing to terminate" in notifications(app)[-1]


async def test_narrow_and_wide_terminals(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        columns = [str(c.key.value) for c in app.main.table.columns.values()]
        assert {"name", "state", "epoch", "cost"} <= set(columns)
        assert len(columns) < 11
        await pilot.resize_terminal(160, 40)
        await pilot.pause()
        columns = [str(c.key.value) for c in app.main.table.columns.values()]
        assert len(columns) == 11


async def test_quit_asks_while_an_action_is_in_progress(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.busy = 1  # as if a launch were halfway through
        await pilot.press("q")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert "still in progress" in app.screen.body and "max-hours" in app.screen.body
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        assert app.is_running
        await pilot.press("q", "y")
        await wait_for(lambda: not app.is_running, what="exit")
