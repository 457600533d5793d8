"""The run screen (log tail, GPU meters, epochs, loss, cost, watchdog) and the GPU view.

Both render from the app's RunFeed for their run; the app calls apply() for each new
event (attributes down), so a screen never talks to the engine or to a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from gpuctl import cost
from gpuctl.models import Run, RunStatus
from gpuctl.views import max_hours_left

from ..feed import RunFeed
from ..model import Row
from ..widgets.gpu import GpuPanel
from ..widgets.logview import LogView
from ..widgets.progress import CostLine, EpochProgress, LossChart, Watchdog
from .actions import RowActions

RUN_ACTIONS = [
    Binding("s", "stop", "Stop"),
    Binding("x", "terminate", "Terminate"),
    Binding("r", "resume", "Resume"),
    Binding("d", "download", "Download"),
    Binding("o", "shell", "Shell"),
]


class RunView(RowActions, Screen[None]):
    """Shared by the run and GPU screens: which run, and the row/run it stands for."""

    @dataclass
    class Watch(Message):
        """The screen shows this run: follow it live, backfill its history once."""

        run_id: str

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id

    @property
    def feed(self) -> RunFeed:
        return self.gpuctl.feed(self.run_id)

    def run(self) -> Run | None:
        return self.gpuctl.engine.store.find_run(self.run_id)

    def target(self) -> Row | None:
        return self.gpuctl.row_for_run(self.run_id)

    def status_text(self) -> str:
        row = self.target()
        if row is not None:
            return row.state
        run = self.run()
        return run.status.value if run else "unknown"

    def title_text(self, extra: str = "") -> Text:
        run = self.run()
        row = self.target()
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(" esc ", style="reverse")
        out.append(f" {self.run_id}", style="bold")
        if run is not None:
            out.append(f" · {run.preset} on {run.provider}", style="dim")
        if row is not None and row.instance_id:
            out.append(f" · {row.instance_id}", style="dim")
            if row.instance_type:
                out.append(f" ({row.instance_type})", style="dim")
        out.append(" · ")
        out.append(self.status_text(), style="bold")
        if extra:
            out.append(f" · {extra}", style="dim")
        return out

    def ended(self) -> bool:
        """The run is over (its stream said so, or the store): no live meter is true."""
        run = self.run()
        return self.feed.final is not None or (run is not None and run.status.terminal)

    def gpu_tracks(self) -> dict[int, Any]:
        """The last GPU samples while the run goes; none once it ended (shown as N/A)."""
        return {} if self.ended() else dict(self.feed.gpus)

    def apply(self, changed: set[str]) -> None:
        """New events arrived for this run (or a new snapshot); redraw what they touched."""

    # actions shared by both views
    def action_back(self) -> None:
        self.app.pop_screen()


class RunScreen(RunView):
    """Everything about one run while it trains."""

    AUTO_FOCUS = "#log"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("n", "next_match", "Next match", show=False),
        Binding("N", "prev_match", "Previous match", show=False),
        *RUN_ACTIONS,
        Binding("g", "gpu", "GPU"),
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="run-title")
        with Horizontal(id="run-body"):
            with Vertical(id="log-pane"):
                yield LogView(id="log")
                yield Input(
                    placeholder="search the log (enter: find, esc: close)",
                    compact=True,
                    id="search",
                )
            with Vertical(id="side"):
                yield EpochProgress(id="progress")
                yield LossChart(id="loss")
                yield Static("GPU", classes="section")
                yield GpuPanel(id="gpus")
                yield CostLine(id="cost")
                yield Watchdog(id="watchdog")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#search", Input).display = False
        feed = self.feed
        self._seen = feed.dropped + len(feed.lines)
        self.log_view.replace(list(feed.lines))
        self.apply({"log", "gpu", "epoch", "cost", "phase"}, initial=True)
        self.post_message(self.Watch(self.run_id))

    @property
    def log_view(self) -> LogView:
        return self.query_one("#log", LogView)

    def apply(self, changed: set[str], *, initial: bool = False) -> None:
        feed = self.feed
        if "log" in changed and not initial:
            total = feed.dropped + len(feed.lines)
            new = min(len(feed.lines), total - self._seen)
            if new > 0:
                self.log_view.extend(list(feed.lines)[-new:])
            self._seen = total
        if initial and not feed.lines:
            self.log_view.replace(["(waiting for the log…)"] if self.feed.phase else [])
        run = self.run()
        row = self.target()
        status = self.status_text()
        if changed & {"epoch", "phase"}:
            self.query_one(EpochProgress).show(feed, run, status)
            self.query_one(LossChart).show(feed)
        if changed & {"gpu", "phase"}:
            self.query_one(GpuPanel).show(self.gpu_tracks(), _gpu_note(run, status))
        if changed & {"cost", "epoch", "phase"}:
            self._cost(run, row)
        self.query_one(Watchdog).show(run, max_hours_left(run, self.gpuctl.now()) if run else None)
        self._title()

    def _cost(self, run: Run | None, row: Row | None) -> None:
        """The core's numbers: the follow stream's latest cost tick, else the snapshot's
        run summary (what `gpuctl status` says), else the row's listed price."""
        feed = self.feed
        spent: float | None
        burn: float | None
        summary = self.gpuctl.snapshot.runs.get(self.run_id)
        if feed.cost is not None:
            spent, burn = feed.cost.spent, feed.cost.burn_per_hour
        elif summary is not None:
            spent, burn = summary.spent, summary.burn_per_hour
        elif row is not None:
            spent = row.cost(self.gpuctl.now())[0]
            burn = row.price_per_hour if row.billed else (0.0 if row.run_id else None)
        else:
            spent, burn = None, None
        eta = (
            feed.eta_seconds if feed.eta_seconds is not None else (run.eta_seconds if run else None)
        )
        ended = run is not None and run.status.terminal
        total = cost.projected(spent, burn, eta, ended=ended)
        self.query_one(CostLine).show(spent, burn, total, run.budget if run else None)

    def _title(self) -> None:
        log = self.log_view
        extra = "follow on" if log.follow else "follow off (f)"
        if log.match_label:
            extra += f" · {log.match_label}"
        self.query_one("#run-title", Static).update(self.title_text(extra))

    def on_log_view_state_changed(self) -> None:
        self._title()

    # -- keys ------------------------------------------------------------------------------------

    def action_toggle_follow(self) -> None:
        self.log_view.follow = not self.log_view.follow

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "search":
            return
        found = self.log_view.search(event.value.strip())
        if not event.value.strip():
            event.input.display = False
        self.log_view.focus()
        if event.value.strip() and not found:
            self.notify(f"'{event.value.strip()}' is not in the log", severity="warning")

    def action_back(self) -> None:
        box = self.query_one("#search", Input)
        if box.has_focus:
            box.display = False
            self.log_view.focus()
            return
        super().action_back()

    def action_next_match(self) -> None:
        self.log_view.next_match(1)

    def action_prev_match(self) -> None:
        self.log_view.next_match(-1)

    def action_gpu(self) -> None:
        self.app.push_screen(GpuScreen(self.run_id))


class GpuScreen(RunView):
    """Every GPU of one run, large: utilisation, memory, temperature, power."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        *RUN_ACTIONS,
    ]

    def compose(self) -> ComposeResult:
        yield Static("", id="run-title")
        yield Static(
            "GPU meters · 0-100% scale · N/A = the tool did not report it", classes="section"
        )
        yield GpuPanel(detailed=True, id="gpus")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.apply({"gpu"})
        self.post_message(self.Watch(self.run_id))

    def apply(self, changed: set[str]) -> None:
        if changed & {"gpu", "phase"}:
            self.query_one(GpuPanel).show(
                self.gpu_tracks(), _gpu_note(self.run(), self.status_text())
            )
        self.query_one("#run-title", Static).update(self.title_text("GPU view"))


def _gpu_note(run: Run | None, status: str) -> str:
    if run is None:
        return "no run on this row"
    word = status.split(",")[0]
    if run.status.terminal or word in {s.value for s in RunStatus if s.terminal}:
        what = run.status.value if run.status.terminal else word
        return f"N/A: the run is {what} (meters are live only)"
    if status in ("training", "running"):
        return "waiting for the first GPU sample…"
    return f"N/A until the trainer starts ({status})"
