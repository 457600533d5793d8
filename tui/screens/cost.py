"""`c`: where the money went, by run, provider or day, and every budget's state.

Numbers come from the core's cost view (gpuctl.views, what `gpuctl cost` shows) and
gpuctl.cost's report (the ledger: prices frozen at launch, billing minimums), computed in
a worker so a long history never stalls the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from gpuctl import cost
from gpuctl.format import money, percent, rate
from gpuctl.views import CostView, cost_view

from ..messages import ReportReady
from ..model import text_bar

if TYPE_CHECKING:
    from ..ports import ControlCenter

GROUPINGS = ("run", "provider", "day")
WINDOWS = (("month", "this month"), ("today", "today"), ("7d", "7 days"), ("30d", "30 days"))
LEVEL_WORD = {"ok": "ok", "warn": "WARN", "exceeded": "OVER"}
LEVEL_STYLE = {"ok": "green", "warn": "bold yellow", "exceeded": "bold red"}


@dataclass(frozen=True)
class CostReport:
    """What the screen shows: the core's cost view (as `gpuctl cost`) and a report."""

    view: CostView
    report: cost.Report
    window: str


class CostScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("b", "group", "Group by"),
        Binding("w", "window", "Window"),
        Binding("R", "reload", "Reload"),
    ]
    AUTO_FOCUS = "#report"

    def __init__(self) -> None:
        super().__init__()
        self.grouping = 0
        self.window = 0

    @property
    def gpuctl(self) -> ControlCenter:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(Text(" esc  Cost report", style="bold"), id="run-title")
        yield Static(Text("computing…", style="dim italic"), id="cost-summary")
        yield Static("", id="budgets")
        yield DataTable(cursor_type="row", id="report")
        yield Static(
            Text(
                "From the ledger: each machine's price frozen when it came up, each provider's "
                "billing minimum applied. ! = metered from a listing, not from a gpuctl launch.",
                style="dim",
            ),
            id="cost-note",
        )
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.action_reload()

    def action_group(self) -> None:
        self.grouping = (self.grouping + 1) % len(GROUPINGS)
        self.action_reload()

    def action_window(self) -> None:
        self.window = (self.window + 1) % len(WINDOWS)
        self.action_reload()

    def action_reload(self) -> None:
        self._compute(self.gpuctl.now(), GROUPINGS[self.grouping], WINDOWS[self.window])

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _compute(self, now: float, by: str, window: tuple[str, str]) -> None:
        engine = self.gpuctl.engine
        try:
            since = cost.parse_since(window[0], now)
            engine.settle_ended_billing()
            view: Any = CostReport(
                cost_view(engine.store, engine.settings, now),
                cost.report(engine.store, engine.settings, since=since, by=by, now=now),
                window[1],
            )
        except Exception as exc:
            view = exc
        self.post_message(ReportReady(view))

    def on_report_ready(self, message: ReportReady) -> None:
        if isinstance(message.report, Exception):
            self.notify(f"cost report failed: {message.report}", severity="error")
            return
        shown: CostReport = message.report
        meter, total = shown.view.meter, shown.view.totals
        summary = Text(no_wrap=True, overflow="ellipsis")
        summary.append(f" burning {rate(total.burn_now)}", style="bold")
        if total.unmetered:
            summary.append(
                f" ({rate(total.unmetered_per_hour)} on {len(total.unmetered)} listed, unmetered)"
            )
        summary.append(
            f" · today {money(total.spent_today)} · this month {money(total.spent_month)}"
        )
        if meter.flagged:
            summary.append(f" · {len(meter.flagged)} metered from listings (!)", style="yellow")
        self.query_one("#cost-summary", Static).update(summary)

        budgets = Text()
        for state in meter.budgets:
            if budgets:
                budgets.append("\n")
            style = LEVEL_STYLE.get(state.level, "")
            budgets.append(f" {state.label:<28}", style="bold")
            budgets.append(f"{money(state.spent)} of {money(state.budget)} ")
            budgets.append(text_bar(min(1.0, state.fraction), 12), style=style)
            budgets.append(
                f" {percent(state.fraction)} {LEVEL_WORD.get(state.level, '')}", style=style
            )
        if not budgets:
            budgets.append(" no budgets set (budget.monthly in config.toml, --budget per run)")
            budgets.stylize("dim")
        self.query_one("#budgets", Static).update(budgets)

        by = shown.report.by
        table = self.query_one("#report", DataTable)
        table.clear(columns=True)
        first = {"run": "RUN", "provider": "PROVIDER", "day": "DAY"}[by]
        width = self.size.width or 100
        table.add_column(first, key="key", width=max(16, min(30, width - 62)))
        if by == "run":
            table.add_column("PROVIDER", key="provider", width=9)
            table.add_column("PRESET", key="preset", width=9)
            table.add_column("STATUS", key="status", width=10)
        table.add_column(Text("HOURS", justify="right"), key="hours", width=6)
        table.add_column(Text("COST", justify="right"), key="cost", width=9)
        for row in shown.report.rows:
            cells = [Text(row.key + (" !" if row.flagged else ""))]
            if by == "run":
                cells += [Text(row.provider), Text(row.preset), Text(row.status)]
            cells += [
                Text(f"{row.hours:.1f}", justify="right"),
                Text(money(row.cost), justify="right"),
            ]
            table.add_row(*cells)
        table.border_title = (
            f"by {by} · {shown.window} · total {money(shown.report.total)} "
            f"over {shown.report.hours:.1f} instance-hours   (b: group, w: window)"
        )

    def action_back(self) -> None:
        self.app.pop_screen()
