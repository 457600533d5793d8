"""`n`: the notifications gpuctl sent (or the agent on the machine sent), newest first.

Rows come from the state store (gpuctl.notify claims each one there before sending), so
the list holds what any gpuctl process and the agents sent, not only this app.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

if TYPE_CHECKING:
    from ..ports import ControlCenter


class NotificationsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("R", "reload", "Reload"),
    ]
    AUTO_FOCUS = "#notifications"

    @property
    def gpuctl(self) -> ControlCenter:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(Text(" esc  Notifications", style="bold"), id="run-title")
        yield DataTable(cursor_type="row", id="notifications")
        yield Static("", id="notifications-note")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("when", "event", "run", "message", "sent by", "outcome")
        self.action_reload()

    def action_reload(self) -> None:
        rows = self.gpuctl.engine.store.notifications(limit=200)
        table = self.query_one(DataTable)
        table.clear()
        for row in rows:
            table.add_row(
                time.strftime("%m-%d %H:%M:%S", time.localtime(row["at"])),
                row["event"],
                row["run_id"] or "",
                row["message"][:160],
                row["sent_by"],
                row["outcome"] or "sending",
            )
        urls = self.gpuctl.engine.settings.notify.urls
        note = (
            f"{len(rows)} shown; sent to {len(urls)} URL(s) from [notify] in config.toml"
            if urls
            else "no [notify] urls in config.toml: nothing is sent (toasts only)"
        )
        self.query_one("#notifications-note", Static).update(Text(note, style="dim"))

    def action_back(self) -> None:
        self.app.pop_screen()
