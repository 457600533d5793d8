"""Per-run state learned from a lifecycle event stream, kept on the UI thread.

A worker consumes Engine.launch/follow/... in a thread and posts each event; the app
applies it here, on the UI thread only, and the screens render from it. It is bounded
(log lines, GPU history) so a run of days does not grow memory without limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuctl.events import (
    Attempt,
    CostTick,
    Downloaded,
    EpochDone,
    Event,
    Failed,
    Finished,
    GpuSampled,
    InstanceUp,
    LogLines,
    Notice,
    Provisioning,
    Resolved,
    SshReady,
    Synced,
    SyncProgress,
    TornDown,
    TrainerStarted,
)
from gpuctl.models import GpuSample

from .model import Live

MAX_LINES = 20_000
GPU_HISTORY = 120  # samples kept per GPU for the sparklines


@dataclass
class GpuTrack:
    """One device's recent samples; None values stay None (rendered as N/A)."""

    index: int
    name: str = ""
    kind: str = "gpu"
    util: deque[float] = field(default_factory=lambda: deque(maxlen=GPU_HISTORY))
    mem: deque[float] = field(default_factory=lambda: deque(maxlen=GPU_HISTORY))
    last: GpuSample | None = None

    def add(self, sample: GpuSample) -> None:
        self.name = sample.name or self.name
        self.kind = sample.kind
        self.last = sample
        if sample.util_pct is not None:
            self.util.append(float(sample.util_pct))
        if sample.mem_used_mb is not None and sample.mem_total_mb:
            self.mem.append(100.0 * sample.mem_used_mb / sample.mem_total_mb)


@dataclass(frozen=True)
class EpochPoint:
    epoch: int
    epochs: int
    train_loss: float | None
    val_loss: float | None
    metric: float | None
    seconds: float | None
    warmup: bool = False


class RunFeed:
    """Log, GPU meters, epochs, cost and phase of one run, as far as the UI has seen."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.dropped = 0  # lines that fell off the front (so views keep their place)
        self.gpus: dict[int, GpuTrack] = {}
        self.epochs: dict[int, EpochPoint] = {}
        self.total_epochs: int | None = None
        self.eta_seconds: float | None = None
        self.cost: CostTick | None = None
        self.phase = ""
        self.final: str | None = None
        self.history_loaded = False

    # -- applying events ---------------------------------------------------------------------

    def add_lines(self, lines: Iterable[str]) -> int:
        added = 0
        for line in lines:
            if len(self.lines) == self.lines.maxlen:
                self.dropped += 1
            self.lines.append(line)
            added += 1
        return added

    def add_epoch(self, point: EpochPoint) -> None:
        self.epochs[point.epoch] = point
        if point.epochs:
            self.total_epochs = point.epochs

    def apply(self, ev: Event) -> set[str]:
        """Fold one event in; returns which parts changed (log, gpu, epoch, cost, phase)."""
        changed: set[str] = set()
        if isinstance(ev, LogLines):
            if self.add_lines(ev.lines):
                changed.add("log")
            return changed
        if isinstance(ev, GpuSampled):
            for sample in ev.samples:
                self.gpus.setdefault(sample.index, GpuTrack(sample.index)).add(sample)
            changed.add("gpu")
            return changed
        if isinstance(ev, EpochDone):
            self.add_epoch(
                EpochPoint(
                    ev.epoch,
                    ev.epochs,
                    ev.train_loss,
                    ev.val_loss,
                    ev.metric,
                    ev.epoch_seconds,
                    ev.warmup,
                )
            )
            self.eta_seconds = ev.eta_seconds
            changed.add("epoch")
            return changed
        if isinstance(ev, CostTick):
            self.cost = ev
            changed.add("cost")
            return changed
        phase = _phase(ev)
        if phase is not None:
            self.phase = phase
            changed.add("phase")
        if isinstance(ev, Finished):
            self.final = ev.status
            self.phase = ev.status
            changed.add("phase")  # the header, meters and progress say it ended
        elif isinstance(ev, Failed) and ev.log_tail:
            self.add_lines(ev.log_tail)
            changed.add("log")
        if isinstance(
            ev, Notice | Failed | Finished | Downloaded | TornDown | Synced
        ) or ev.kind in (
            "recovering",
            "recovered",
        ):
            self.add_lines([f"── {ev.text()}"])
            changed.add("log")
        return changed

    def load_history(
        self, lines: Iterable[str] | None, epochs: Iterable[Mapping[str, Any]]
    ) -> None:
        """Backfill what happened before this UI started following (no duplicates)."""
        if lines is not None and not self.lines:
            self.add_lines(lines)
        for ev in epochs:
            epoch = int(ev.get("epoch", 0) or 0)
            if epoch <= 0 or epoch in self.epochs:
                continue
            self.add_epoch(
                EpochPoint(
                    epoch,
                    int(ev.get("epochs", 0) or 0),
                    _num(ev.get("train_loss")),
                    _num(ev.get("val_loss")),
                    _num(ev.get("val_metric", ev.get("metric"))),
                    _num(ev.get("epoch_seconds")),
                    bool(ev.get("warmup", False)),
                )
            )
        self.history_loaded = True

    # -- views ----------------------------------------------------------------------------------

    @property
    def last_epoch(self) -> EpochPoint | None:
        return self.epochs[max(self.epochs)] if self.epochs else None

    def live(self) -> Live:
        last = self.last_epoch
        return Live(
            phase=self.final or self.phase,  # the end, as soon as the stream says it
            epoch=last.epoch if last else None,
            epochs=self.total_epochs,
            eta_seconds=self.eta_seconds,
            warmup=bool(last and last.warmup),
        )


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _phase(ev: Event) -> str | None:
    """The state column's word for where a launch is, from the event that just came."""
    if isinstance(ev, Resolved | Provisioning):
        return "provisioning"
    if isinstance(ev, Attempt):
        return "provisioning" if not ev.ok else "up"
    if isinstance(ev, InstanceUp | SshReady):
        return "up"
    if isinstance(ev, SyncProgress):
        return f"syncing {ev.files_done}/{ev.files_total}"
    if isinstance(ev, Synced):
        return "synced"
    if isinstance(ev, TrainerStarted):
        return "training"
    if isinstance(ev, Downloaded):
        return "downloaded"
    if isinstance(ev, Failed):
        return "failed"
    # Managed-run recovery (spot interruptions): matched by kind, not class, so this
    # module does not depend on which lifecycle version is installed.
    if ev.kind == "recovering":
        return f"recovering {getattr(ev, 'step', '')}".strip()
    if ev.kind == "recovered":
        return "training"
    return None
