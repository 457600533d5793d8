"""The header: what burns now, what was spent today and this month, the budget bar,
and one chip per provider. Both render from a snapshot attribute set by the screen.

Every colour is doubled by text (a percentage and a word: ok / WARN / OVER, a tick or a
cross), so the header reads the same on a monochrome terminal or to a screen reader.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from gpuctl.format import money, percent, rate

from ..model import Chip, Meter, text_bar

LEVEL_TEXT = {"ok": "ok", "warn": "WARN", "over": "OVER BUDGET", "none": ""}


class CostMeter(Widget):
    """One line: $/h burning now, today, this month against the monthly budget."""

    DEFAULT_CSS = """
    CostMeter { height: 1; width: 1fr; }
    """

    meter: reactive[Meter] = reactive(Meter, layout=False)

    def render(self) -> Text:
        width = self.size.width or 100
        full = self._line(width, compact=False)
        return full if full.cell_len <= width else self._line(width, compact=True)

    def _line(self, width: int, *, compact: bool) -> Text:
        """The whole line; `compact` (80 columns) shortens words, never drops the budget."""
        m, t = self.meter, self.meter.totals
        out = Text(no_wrap=True, overflow="ellipsis")
        out.append(" gpuctl ", style="bold reverse")
        out.append(" ")
        out.append(rate(t.burn_now), style="bold")
        out.append(" · today " if compact else " now · today ", style="dim")
        out.append(money(t.spent_today))
        out.append(" · month ", style="dim")
        out.append(money(t.spent_month))
        tail = f" · {m.running} training" + ("" if compact else f" · {m.billed} billed")
        if t.budget:
            fraction = t.fraction or 0.0
            style = {"ok": "green", "warn": "bold yellow", "over": "bold red"}[t.level]
            out.append("/" if compact else " of ", style="dim")
            out.append(money(t.budget, digits=0))
            word = LEVEL_TEXT[t.level]
            room = width - out.cell_len - len(tail) - len(word) - 8
            bar = max(4, min(20, room))
            out.append(" ")
            out.append(text_bar(fraction, bar), style=style)
            out.append(f" {percent(fraction)} ", style=style)
            out.append(word, style=style + (" reverse" if t.level == "over" else ""))
        else:
            out.append(" · no budget" if compact else " · no monthly budget", style="dim")
        out.append(tail, style="dim")
        return out


class ProviderChips(Widget):
    """One chip per configured provider: ok, no credentials, or error with its reason."""

    DEFAULT_CSS = """
    ProviderChips { height: 1; width: 1fr; }
    """

    chips: reactive[tuple[Chip, ...]] = reactive(tuple, layout=False)
    refreshing: reactive[bool] = reactive(False)
    supervisor: reactive[str] = reactive("", layout=False)  # "" while none runs

    def render(self) -> Text:
        out = Text(no_wrap=True, overflow="ellipsis")
        if self.supervisor:
            out.append(f" ● {self.supervisor} ", style="green")
        out.append(" providers ", style="dim")
        for i, chip in enumerate(self.chips):
            if i:
                out.append("  ")
            mark, style = {
                "ok": ("✓", "green"),
                "nocreds": ("✗", "yellow"),
                "error": ("✗", "red"),
                "unchecked": ("?", "dim"),
            }[chip.state]
            out.append(f"{mark} {chip.label}", style=style)
            if chip.message:
                out.append(f" ({_short(chip.message)})", style="dim")
        if self.refreshing:
            out.append("  refreshing…", style="dim italic")
        return out

    def watch_chips(self, chips: tuple[Chip, ...]) -> None:
        problems = [f"{c.name}: {c.message}" for c in chips if c.message]
        self.tooltip = "\n".join(problems) or None


def _short(message: str, limit: int = 60) -> str:
    message = message.splitlines()[0] if message else ""
    return message if len(message) <= limit else message[: limit - 1] + "…"
