"""`c`: where the money went, by provider and by run, against the budgets.

Computed from the ledger (price segments frozen at launch) in a worker: a long history
must not stall the UI thread.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from gpuctl import cost
from gpuctl.settings import Settings
from gpuctl.state import Store

from ..messages import ReportReady
from ..model import day_start, duration, money, month_start, rate, text_bar, window_cost

if TYPE_CHECKING:
    from ..app import GpuctlApp


@dataclass(frozen=True)
class ReportLine:
    scope: str  # "provider" | "run" | "total"
    key: str
    burn: float
    today: float
    month: float
    total: float
    hours: float
    budget: float | None = None
    detail: str = ""


def build_report(store: Store, settings: Settings, now: float) -> list[ReportLine]:
    """Per provider and per run: burning now, today, this month, all time, hours."""
    segments = [s for s in store.segments() if s.kind == "compute"]
    d0, m0 = day_start(now), month_start(now)
    groups: dict[tuple[str, str], list] = defaultdict(list)
    for seg in segments:
        groups[("provider", seg.provider)].append(seg)
        groups[("run", seg.run_id or f"{seg.instance_id} (no run)")].append(seg)
    runs = {r.id: r for r in store.list_runs()}
    lines: list[ReportLine] = []
    for (scope, key), segs in groups.items():
        by_instance: dict[tuple[str, str], list] = defaultdict(list)
        for seg in segs:
            by_instance[(seg.provider, seg.instance_id)].append(seg)
        total = sum(
            cost.instance_cost(v, now, cost.billing_for(settings, k[0]).minimum_seconds)
            for k, v in by_instance.items()
        )
        hours = sum(((s.end if s.end is not None else now) - s.start) for s in segs) / 3600.0
        budget = settings.budget.per_provider.get(key) if scope == "provider" else None
        detail = ""
        if scope == "run" and key in runs:
            run = runs[key]
            budget = run.budget
            detail = f"{run.preset} · {run.status.value}"
        lines.append(
            ReportLine(
                scope,
                key,
                burn=sum(s.rate_per_hour for s in segs if s.end is None),
                today=window_cost(segs, d0, now),
                month=window_cost(segs, m0, now),
                total=total,
                hours=hours,
                budget=budget,
                detail=detail,
            )
        )
    lines.sort(key=lambda r: (r.scope != "provider", -r.month, r.key))
    provider_lines = [r for r in lines if r.scope == "provider"]
    lines.insert(
        0,
        ReportLine(
            "total",
            "all providers",
            burn=sum(r.burn for r in provider_lines),
            today=sum(r.today for r in provider_lines),
            month=sum(r.month for r in provider_lines),
            total=sum(r.total for r in provider_lines),
            hours=sum(r.hours for r in provider_lines),
            budget=settings.budget.monthly,
        ),
    )
    return lines


class CostScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("question_mark", "app.help", "Help", key_display="?"),
        Binding("R", "reload", "Reload"),
    ]
    AUTO_FOCUS = "#report"

    @property
    def gpuctl(self) -> GpuctlApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(Text(" esc  Cost report", style="bold"), id="run-title")
        yield Static(Text("computing…", style="dim italic"), id="cost-summary")
        yield DataTable(cursor_type="row", id="report")
        yield Static(
            Text(
                "From the ledger: each instance's price frozen when it came up. Today and this "
                "month are clipped to the window; TOTAL applies each provider's billing minimum.",
                style="dim",
            ),
            id="cost-note",
        )
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#report", DataTable)
        for label, key, width in (
            ("SCOPE", "scope", 8),
            ("NAME", "name", 24),
            ("NOW", "burn", 10),
            ("TODAY", "today", 9),
            ("MONTH", "month", 9),
            ("TOTAL", "total", 9),
            ("HOURS", "hours", 7),
            ("BUDGET", "budget", 16),
        ):
            table.add_column(label, key=key, width=width)
        self.action_reload()

    def action_reload(self) -> None:
        self._compute(self.gpuctl.now())

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _compute(self, now: float) -> None:
        engine = self.gpuctl.engine
        try:
            report = build_report(engine.store, engine.settings, now)
        except Exception as exc:
            report = exc
        self.post_message(ReportReady(report))

    def on_report_ready(self, message: ReportReady) -> None:
        if isinstance(message.report, Exception):
            self.notify(f"cost report failed: {message.report}", severity="error")
            return
        lines: list[ReportLine] = message.report
        table = self.query_one("#report", DataTable)
        table.clear()
        for line in lines:
            budget = "-"
            if line.budget:
                spent = line.month if line.scope != "run" else line.total
                fraction = spent / line.budget
                budget = f"{text_bar(fraction, 6)} {fraction:.0%} of {money(line.budget, 0)}"
            table.add_row(
                Text(line.scope, style="bold" if line.scope == "total" else ""),
                Text(line.key + (f" ({line.detail})" if line.detail else "")),
                Text(rate(line.burn) if line.burn else "-", justify="right"),
                Text(money(line.today), justify="right"),
                Text(money(line.month), justify="right"),
                Text(money(line.total), justify="right"),
                Text(f"{line.hours:.1f}", justify="right"),
                Text(budget),
            )
        total = lines[0]
        summary = Text()
        summary.append(f" burning {rate(total.burn)}", style="bold")
        summary.append(f" · today {money(total.today)} · this month {money(total.month)}")
        if total.budget:
            summary.append(f" of {money(total.budget, 0)}")
            days = time.localtime(self.gpuctl.now()).tm_mday
            if days:
                summary.append(
                    f" · {duration(max(0.0, self.gpuctl.now() - month_start(self.gpuctl.now())))}"
                    " into the month",
                    style="dim",
                )
        self.query_one("#cost-summary", Static).update(summary)

    def action_back(self) -> None:
        self.app.pop_screen()
