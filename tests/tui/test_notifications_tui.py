"""Notifications in the control center: a toast for each new one, a list on `n`."""

from __future__ import annotations

from textual.widgets import DataTable

from gpuctl.state import Store
from gpuctl.tui.screens.notifications import NotificationsScreen
from tests.tui import demo
from tests.tui.conftest import SIZE, notifications, wait_for


async def test_a_notification_from_another_process_is_a_toast_and_listed(seeded, make_app):
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        # The CLI (another process, its own store handle) sent one: the app sees it.
        with Store(seeded / "state.db") as other:
            other.claim_notification(
                f"{demo.TRAINING}:finished:1",
                demo.TRAINING,
                "finished",
                f"gpuctl: run {demo.TRAINING} finished",
                f"run {demo.TRAINING} finished; metric 0.91; cost $1.20 to date",
                "gpuctl",
            )
        app.refresh_now(network=False)
        await wait_for(
            lambda: any("metric 0.91" in n for n in notifications(app)), what="the toast"
        )
        assert any(n.startswith("notified: finished") for n in notifications(app))
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, NotificationsScreen), what="the list")
        table = app.screen.query_one(DataTable)
        assert table.row_count == 1
        row = [str(c) for c in table.get_row_at(0)]
        assert row[1:3] == ["finished", demo.TRAINING] and "cost $1.20" in row[3]
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, NotificationsScreen), what="back")
        # Seen once: a later reload toasts nothing new.
        count = len(notifications(app))
        app.refresh_now(network=False)
        await pilot.pause(0.3)
        assert len(notifications(app)) == count
