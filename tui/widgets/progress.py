"""Epoch progress with ETA, the loss curve, cost so far and the watchdog's limits."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import ProgressBar, Static
from textual_plotext import PlotextPlot

from gpuctl.format import duration, money, percent, rate
from gpuctl.models import Run

from ..feed import RunFeed


class EpochProgress(Vertical):
    """Epoch x of y, a bar, and an ETA that ignores the slow first (warm-up) epochs."""

    DEFAULT_CSS = """
    EpochProgress { height: auto; }
    EpochProgress > .line { height: 1; }
    EpochProgress ProgressBar { height: 1; }
    EpochProgress ProgressBar Bar { width: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", classes="line", id="epoch-line")
        yield ProgressBar(total=1, show_eta=False, show_percentage=True, id="epoch-bar")
        yield Static("", classes="line", id="metric-line")

    def show(self, feed: RunFeed, run: Run | None, status: str) -> None:
        last = feed.last_epoch
        epochs = feed.total_epochs or (run.epochs if run else 0) or 0
        epoch = last.epoch if last else (run.epoch if run else 0)
        eta = (
            feed.eta_seconds if feed.eta_seconds is not None else (run.eta_seconds if run else None)
        )
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(f"epoch {epoch}/{epochs or '?'}", style="bold")
        if status in ("training", "running"):
            if last is None or (last.warmup and epoch <= 1):
                line.append("  warming up (first epoch is slow)", style="yellow")
            elif eta is not None:
                line.append(f"  ETA {duration(eta)}")
                line.append(" excl. warm-up", style="dim")
        elif status:
            line.append(f"  {status}", style="dim")
        self.query_one("#epoch-line", Static).update(line)
        bar = self.query_one("#epoch-bar", ProgressBar)
        bar.update(total=max(1, epochs), progress=min(epoch, max(1, epochs)))
        metric = Text(no_wrap=True, overflow="ellipsis")
        if last is not None:
            parts = [
                ("loss", last.train_loss, 4),
                ("val", last.val_loss, 4),
                ("acc", last.metric, 3),
            ]
            for name, value, digits in parts:
                metric.append(f"{name} ", style="dim")
                metric.append("N/A " if value is None else f"{value:.{digits}f} ")
            best = max(
                (p.metric for p in feed.epochs.values() if p.metric is not None), default=None
            )
            if best is not None:
                metric.append("best ", style="dim")
                metric.append(f"{best:.3f}")
        else:
            metric.append("no epoch finished yet", style="dim italic")
        self.query_one("#metric-line", Static).update(metric)


class LossChart(PlotextPlot):
    """Train and validation loss per epoch (plotext draws it in cells)."""

    def show(self, feed: RunFeed) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        points = [feed.epochs[e] for e in sorted(feed.epochs)]
        xs = [p.epoch for p in points]
        train = [(p.epoch, p.train_loss) for p in points if p.train_loss is not None]
        val = [(p.epoch, p.val_loss) for p in points if p.val_loss is not None]
        if train:
            plt.plot([x for x, _ in train], [y for _, y in train], label="train", marker="braille")
        if val:
            plt.plot([x for x, _ in val], [y for _, y in val], label="val", marker="braille")
        if xs:
            plt.xticks(xs if len(xs) <= 8 else xs[:: max(1, len(xs) // 8)])
        plt.title("loss" if xs else "loss (no epoch yet)")
        self.refresh()


class CostLine(Static):
    """Cost so far, the rate, and the projected total (spent + rate x ETA)."""

    def show(
        self,
        spent: float | None,
        burn: float | None,
        projected: float | None,
        budget: float | None,
    ) -> None:
        out = Text(no_wrap=False)
        out.append("cost ", style="dim")
        out.append(money(spent), style="bold")
        out.append(" so far  ", style="dim")
        out.append(rate(burn))
        out.append("\n")
        out.append("projected ", style="dim")
        out.append(money(projected, unknown="N/A"))
        if budget:
            fraction = (spent or 0.0) / budget
            style = "red" if fraction >= 1 else ("yellow" if fraction >= 0.8 else "")
            out.append("  budget ", style="dim")
            out.append(f"{money(budget)} ({percent(fraction)})", style=style)
        self.update(out)


class Watchdog(Static):
    """Limits the agent enforces on the machine even with gpuctl closed."""

    def show(self, run: Run | None, left: float | None) -> None:
        """`left`: seconds before the max-hours stop (gpuctl.views.max_hours_left)."""
        out = Text()
        out.append("watchdog ", style="dim")
        if run is None:
            out.append("N/A")
            self.update(out)
            return
        spec = run.spec
        max_hours = spec.get("max_hours")
        idle = spec.get("idle_minutes")
        parts: list[str] = []
        if max_hours:
            if left is not None:
                parts.append(f"max {max_hours:g}h ({duration(left)} left)")
            else:
                parts.append(f"max {max_hours:g}h")
        else:
            parts.append("no max hours")
        parts.append(f"idle stop {idle:g}m" if idle else "no idle stop")
        if run.budget:
            parts.append(f"budget stop {money(run.budget)}")
        out.append(" · ".join(parts[:2]))
        rest = [*parts[2:], f"then {spec.get('teardown', 'terminate')}"]
        out.append("\n" + " · ".join(rest), style="dim")
        self.update(out)
