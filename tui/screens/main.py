"""The main screen: cost meter, provider chips, every instance and run, the keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from gpuctl.format import age as ago

from ..model import Row, Snapshot
from ..widgets.instances import InstancesTable
from ..widgets.meter import CostMeter, ProviderChips
from .actions import RowActions


class MainScreen(RowActions, Screen[None]):
    """Attributes down: the app sets `snapshot`; this screen renders it."""

    AUTO_FOCUS = "#instances"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("q", "app.quit", "Quit"),
        Binding("enter", "open_run", "Open run", key_display="enter"),
        Binding("l", "launch", "Launch"),
        Binding("s", "stop", "Stop"),
        Binding("x", "terminate", "Terminate"),
        Binding("r", "resume", "Resume"),
        Binding("d", "download", "Download"),
        Binding("o", "shell", "Shell"),
        Binding("g", "gpu", "GPU"),
        Binding("c", "cost", "Cost"),
        Binding("n", "notifications", "Notifications", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("R", "refresh", "Refresh"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("t", "sort", "Sort", show=False),
    ]

    @dataclass
    class OpenRun(Message):
        """Open the run screen of the row's run."""

        row: Row | None

    @dataclass
    class OpenGpu(Message):
        """Open the GPU view of the row's run."""

        row: Row | None

    @dataclass
    class OpenLaunch(Message):
        """Open the launch form."""

    @dataclass
    class OpenCost(Message):
        """Open the cost report."""

    @dataclass
    class OpenNotifications(Message):
        """Open the notifications list."""

    @dataclass
    class Refresh(Message):
        """List the providers now (the user asked: say so if one is already running)."""

    snapshot: reactive[Snapshot] = reactive(Snapshot, always_update=True)
    refreshing: reactive[bool] = reactive(False)

    def compose(self) -> ComposeResult:
        yield CostMeter(id="meter")
        yield ProviderChips(id="chips")
        yield InstancesTable(id="instances")
        yield Input(
            placeholder="filter: words that must all appear (esc clears)", compact=True, id="filter"
        )
        yield Static("", id="status")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.snapshot = self.gpuctl.display_snapshot()

    # -- attributes down -------------------------------------------------------------------------

    def watch_snapshot(self, snapshot: Snapshot) -> None:
        if not self.children:
            return
        self.query_one(CostMeter).meter = snapshot.meter
        self.query_one(ProviderChips).chips = snapshot.chips
        self.query_one(ProviderChips).supervisor = snapshot.supervisor
        self.table.show_rows(snapshot.rows, snapshot.taken_at or self.gpuctl.now())
        self._status()

    def watch_refreshing(self, refreshing: bool) -> None:
        if self.children:
            self.query_one(ProviderChips).refreshing = refreshing

    def update_row(self, row: Row) -> None:
        """One run moved on (its event stream): update its row only."""
        self.table.update_row(row, self.snapshot.taken_at or self.gpuctl.now())
        self._status()

    def tick(self) -> None:
        self.table.tick(self.gpuctl.now())
        self._status()

    @property
    def table(self) -> InstancesTable:
        return self.query_one(InstancesTable)

    def target(self) -> Row | None:
        return self.table.current

    def _status(self) -> None:
        table = self.table
        snap = self.snapshot
        total = len(snap.rows)
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(f" {total:,} rows", style="bold")
        if table.terms:
            out.append(f" · filter '{' '.join(table.terms)}': {table.shown:,} shown")
        arrow = "▼" if table.sort_reverse else "▲"
        out.append(f" · sort {table.sort_column} {arrow} (t)", style="dim")
        listed = self.gpuctl.listed_at
        if listed is None:
            out.append(" · cached listing", style="dim")
        else:
            age = max(0.0, self.gpuctl.now() - listed)
            out.append(f" · listed {ago(age)}", style="dim")
        if not total:
            out.append(" · nothing running: press l to launch a run", style="italic")
        self.query_one("#status", Static).update(out)

    # -- table events ----------------------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_run()

    def on_instances_table_sort_changed(self, event: InstancesTable.SortChanged) -> None:
        self._status()

    # -- filter ----------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value or box.display:
            box.value = ""
            box.display = False
            self.table.set_filter("")
            self.table.focus()
            self._status()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.table.set_filter(event.value)
            self._status()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            if not event.value:
                event.input.display = False
            self.table.focus()

    # -- actions: messages to the app, which does the work -----------------------------------------

    def action_open_run(self) -> None:
        self.post_message(self.OpenRun(self.target()))

    def action_launch(self) -> None:
        self.post_message(self.OpenLaunch())

    def action_gpu(self) -> None:
        self.post_message(self.OpenGpu(self.target()))

    def action_cost(self) -> None:
        self.post_message(self.OpenCost())

    def action_notifications(self) -> None:
        self.post_message(self.OpenNotifications())

    def action_refresh(self) -> None:
        self.post_message(self.Refresh())

    def action_sort(self) -> None:
        self.table.action_sort_next()
