"""`?`: every key of the screen below and of the app, from their bindings (never stale)."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

LEGEND = (
    "States: provisioning → up → syncing n/N → training → finished / stopped / failed.\n"
    "'ext' = a machine gpuctl did not create (terminating it asks for its name);\n"
    "'orphan' = created by gpuctl, its run is gone. COST with ~ = price × uptime estimate.\n"
    "The budget bar says ok / WARN (≥ 80%) / OVER BUDGET in words as well as colour.\n"
    "q quits the app only: runs keep going on their machines, watched by the agent."
)


def key_rows(screen: Screen, app_bindings: list[Binding]) -> list[tuple[str, str]]:
    rows = []
    seen = set()
    for binding in [*screen.BINDINGS, *app_bindings]:
        if not isinstance(binding, Binding) or not binding.description:
            continue
        key = binding.key_display or binding.key
        key = {"slash": "/", "question_mark": "?", "escape": "esc", "enter": "enter"}.get(key, key)
        if (key, binding.description) in seen:
            continue
        seen.add((key, binding.description))
        rows.append((key, binding.description))
    return rows


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, under: Screen, app_bindings: list[Binding]) -> None:
        super().__init__()
        self.rows = key_rows(under, app_bindings)
        self.under_name = type(under).__name__.replace("Screen", "").lower() or "main"

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for key, description in self.rows:
            table.add_row(key, description)
        with VerticalScroll(id="dialog", classes="help"):
            yield Static(Text(f"Keys ({self.under_name} screen)", style="bold"), id="dialog-title")
            yield Static(table)
            yield Static(Text("ctrl+p opens the command palette: every action by name."))
            yield Static(Text(LEGEND, style="dim"), id="legend")
            yield Static(Text("esc closes", style="dim italic"))

    def action_close(self) -> None:
        self.dismiss(None)
