"""Typed events yielded by the lifecycle generators.

The CLI prints them (text or one JSON object a line), the TUI turns each into a Textual
message, the state store records the interesting ones. Core never knows who listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .format import duration, money, rate, rough_duration
from .models import GpuSample, Instance


@dataclass(frozen=True)
class Event:
    """Base event: `kind` names it on the wire (`{"event": kind, ...}`)."""

    kind: ClassVar[str] = "event"
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v.to_dict() if hasattr(v, "to_dict") else v for v in value]
            out[f.name] = value
        return out

    def text(self) -> str:
        """One human line for the CLI's text mode."""
        return self.kind


@dataclass(frozen=True)
class Resolved(Event):
    kind: ClassVar[str] = "resolved"
    preset: str
    provider: str
    estimate_hours: float | None = None
    estimate_cost: float | None = None
    offer: str = ""
    estimate_note: str = ""  # "60 s minimum": the cost is the provider's minimum charge
    what: str = "preset"  # "mode": the project's own command (`fast` may be both)

    def text(self) -> str:
        est = ""
        if self.estimate_hours is not None:
            est = f", estimate ~{rough_duration(self.estimate_hours * 3600)}"
            if self.estimate_cost is not None:
                est += f" / {money(self.estimate_cost)}"
            if self.estimate_note:
                est += f" ({self.estimate_note})"
        return f"run {self.run_id}: {self.what} {self.preset} on {self.provider}{est}"


@dataclass(frozen=True)
class Provisioning(Event):
    kind: ClassVar[str] = "provisioning"
    provider: str
    detail: str = ""

    def text(self) -> str:
        return f"provisioning on {self.provider}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Attempt(Event):
    """One try at capacity (zone, region, market); failures are not fatal until the last."""

    kind: ClassVar[str] = "attempt"
    where: str
    ok: bool
    reason: str = ""

    def text(self) -> str:
        return f"  try {self.where}: " + ("ok" if self.ok else f"failed ({self.reason})")


@dataclass(frozen=True)
class InstanceUp(Event):
    kind: ClassVar[str] = "instance_up"
    instance_id: str
    price_per_hour: float | None
    public_ip: str | None = None
    instance_type: str = ""
    region: str = ""
    market: str = "on-demand"

    @classmethod
    def of(cls, run_id: str, instance: Instance) -> InstanceUp:
        """The event for a machine a run now holds (a launch's, or a recovery's new one)."""
        return cls(
            run_id,
            instance.id,
            instance.price_per_hour,
            instance.public_ip,
            instance.instance_type,
            instance.region,
            instance.market.value,
        )

    def text(self) -> str:
        price = "" if self.price_per_hour is None else f" at {rate(self.price_per_hour)}"
        where = f" ({self.public_ip})" if self.public_ip else ""
        return f"instance {self.instance_id} up{where}{price}"


@dataclass(frozen=True)
class SshReady(Event):
    kind: ClassVar[str] = "ssh_ready"
    host: str
    detail: str = ""

    def text(self) -> str:
        return f"reached {self.host}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class SyncProgress(Event):
    kind: ClassVar[str] = "sync_progress"
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    direction: str = "up"

    def text(self) -> str:
        return f"  {self.direction} {self.files_done}/{self.files_total} files"


@dataclass(frozen=True)
class Synced(Event):
    kind: ClassVar[str] = "synced"
    files: int
    bytes: int
    seconds: float
    skipped: int = 0
    method: str = ""
    what: str = ""  # "" the work dir; "dataset NAME" a project's dataset (cached on the machine)

    def text(self) -> str:
        mb = self.bytes / 1e6
        return (
            f"synced {self.what + ': ' if self.what else ''}{self.files} files "
            f"({mb:.1f} MB, {self.skipped} unchanged) "
            f"in {self.seconds:.1f}s" + (f" via {self.method}" if self.method else "")
        )


@dataclass(frozen=True)
class TrainerStarted(Event):
    kind: ClassVar[str] = "trainer_started"
    host: str
    pid: int | None = None
    remote_dir: str = ""
    resumed: bool = False

    def text(self) -> str:
        verb = "resumed" if self.resumed else "started"
        return f"trainer {verb} on {self.host}" + (f" (pid {self.pid})" if self.pid else "")


@dataclass(frozen=True)
class LogLines(Event):
    kind: ClassVar[str] = "log"
    lines: tuple[str, ...] = ()

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass(frozen=True)
class GpuSampled(Event):
    kind: ClassVar[str] = "gpu"
    samples: tuple[GpuSample, ...] = ()

    def text(self) -> str:
        parts = []
        for s in self.samples:
            util = "N/A" if s.util_pct is None else f"{s.util_pct:.0f}%"
            parts.append(f"{s.name or s.kind}#{s.index} {util}")
        return "gpu " + ", ".join(parts)


@dataclass(frozen=True)
class EpochDone(Event):
    kind: ClassVar[str] = "epoch"
    epoch: int
    epochs: int
    train_loss: float | None = None
    val_loss: float | None = None
    metric: float | None = None
    epoch_seconds: float | None = None
    eta_seconds: float | None = None
    warmup: bool = False

    def text(self) -> str:
        metric = "" if self.metric is None else f" acc {self.metric:.3f}"
        loss = "" if self.train_loss is None else f" loss {self.train_loss:.4f}"
        eta = "" if self.eta_seconds is None else f" eta {duration(self.eta_seconds)}"
        return f"epoch {self.epoch}/{self.epochs}{loss}{metric}{eta}"


@dataclass(frozen=True)
class CostTick(Event):
    kind: ClassVar[str] = "cost"
    spent: float
    burn_per_hour: float
    projected_total: float | None = None
    budget: float | None = None

    def text(self) -> str:
        budget = "" if self.budget is None else f" of {money(self.budget)}"
        return f"cost {money(self.spent)}{budget} ({rate(self.burn_per_hour)})"


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should read: a warning, budget threshold, reconnect."""

    kind: ClassVar[str] = "notice"
    message: str
    level: str = "info"  # info | warning | error

    def text(self) -> str:
        return f"{self.level}: {self.message}" if self.level != "info" else self.message


@dataclass(frozen=True)
class Downloaded(Event):
    kind: ClassVar[str] = "downloaded"
    path: str
    files: int
    bytes: int = 0

    def text(self) -> str:
        return f"downloaded {self.files} files to {self.path}"


@dataclass(frozen=True)
class TornDown(Event):
    kind: ClassVar[str] = "torn_down"
    instance_id: str
    action: str  # terminated | stopped | kept | removed | released (left running: not ours)

    def text(self) -> str:
        return f"instance {self.instance_id} {self.action}"


@dataclass(frozen=True)
class Finished(Event):
    kind: ClassVar[str] = "finished"
    status: str
    results_dir: str | None = None
    metric: float | None = None
    epochs: int = 0
    cost: float | None = None

    def text(self) -> str:
        metric = "" if self.metric is None else f", best acc {self.metric:.3f}"
        cost = "" if self.cost is None else f", cost {money(self.cost)}"
        where = f", results in {self.results_dir}" if self.results_dir else ""
        return f"run {self.run_id} {self.status}{metric}{cost}{where}"


@dataclass(frozen=True)
class Failed(Event):
    kind: ClassVar[str] = "failed"
    error: str
    hint: str = ""
    exit_code: int = 1
    log_tail: tuple[str, ...] = field(default_factory=tuple)

    def text(self) -> str:
        return f"error: {self.error}" + (f"\nhint: {self.hint}" if self.hint else "")


@dataclass(frozen=True)
class Recovering(Event):
    """A managed run lost its machine (or its trainer was interrupted) and is coming back.

    `step` says where: notice, checkpoint (saved where gpuctl can reach it), waiting (for
    the provider to reclaim the machine), relaunching, restoring.
    """

    kind: ClassVar[str] = "recovering"
    attempt: int
    step: str
    reason: str = ""
    detail: str = ""

    def text(self) -> str:
        said = f": {self.detail}" if self.detail else ""
        return f"recovering (attempt {self.attempt}, {self.step}){said}"


@dataclass(frozen=True)
class Recovered(Event):
    """Training resumed from the last checkpoint, on `instance_id` (new or the same)."""

    kind: ClassVar[str] = "recovered"
    attempt: int
    instance_id: str
    epoch: int = 0
    step: int = 0
    seconds: float = 0.0  # from the interruption to the trainer running again
    same_machine: bool = False

    def text(self) -> str:
        where = "the same machine" if self.same_machine else f"instance {self.instance_id}"
        return (
            f"recovered (attempt {self.attempt}) on {where}: resumed at epoch {self.epoch} "
            f"step {self.step} after {self.seconds:.0f}s"
        )
