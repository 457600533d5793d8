"""Frozen value objects shared by every layer.

Providers return these, the state store persists them, the CLI prints them and the TUI
renders them. They never carry SDK objects, so a listing can be cached, compared and
sent across threads safely.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Self

from .format import price_origin, rate


class InstanceState(StrEnum):
    """Provider-neutral machine state; each provider maps its own once (STATE_MAP)."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"

    @property
    def billed(self) -> bool:
        """Whether compute is (probably) billed in this state; providers refine it."""
        return self in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING)


class Market(StrEnum):
    ON_DEMAND = "on-demand"
    SPOT = "spot"


class RunStatus(StrEnum):
    """Where a run is in its life; the terminal ones never change again on their own."""

    PENDING = "pending"
    PROVISIONING = "provisioning"
    SYNCING = "syncing"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    STOPPED = "stopped"
    BUDGET = "budget"
    STALLED = "stalled"  # no training progress for the stall time: stopped by the agent
    RECOVERING = "recovering"
    LOST = "lost"

    @property
    def active(self) -> bool:
        return self in ACTIVE_RUN_STATUSES

    @property
    def terminal(self) -> bool:
        return not self.active


ACTIVE_RUN_STATUSES = frozenset(
    {
        RunStatus.PENDING,
        RunStatus.PROVISIONING,
        RunStatus.SYNCING,
        RunStatus.STARTING,
        RunStatus.RUNNING,
        RunStatus.STOPPING,
        RunStatus.RECOVERING,
    }
)


def frozen_map(data: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """Read-only view of a mapping, so frozen dataclasses stay effectively immutable."""
    return MappingProxyType(dict(data or {}))


class _Value:
    """Shared helpers: plain-dict conversion for JSON and the state store."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, MappingProxyType):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build from a dict, ignoring unknown keys (older/newer rows stay readable)."""
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            if name not in known:
                continue
            kwargs[name] = value
        return cls(**kwargs)

    def _set(self, name: str, value: Any) -> None:
        """Normalise a field in __post_init__ (JSON gives lists and str, we keep tuples/enums)."""
        object.__setattr__(self, name, value)

    def evolve(self, **changes: Any) -> Self:
        return replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class Offer(_Value):
    """Something a provider will rent: a machine type, where, and what it costs per hour."""

    provider: str
    instance_type: str
    gpu_name: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: int
    memory_gb: float
    price_per_hour: float | None
    region: str = ""
    spot_price_per_hour: float | None = None
    spot_zone: str | None = None
    regions: tuple[str, ...] = ()
    available: bool = True
    note: str = ""
    # Where the prices came from and when they were read (unix time; None: unknown):
    # "live API" (asked now or a few minutes ago), "AWS Pricing API 2026-11-28",
    # "catalog 2025-01-15" (the bundled file). The spot figures are always the live API's.
    price_source: str = ""
    priced_at: float | None = None
    spot_priced_at: float | None = None

    @property
    def spot_saving(self) -> float | None:
        """Fraction saved by spot versus on-demand (0.65 = 65% cheaper), if both are known."""
        if not self.price_per_hour or self.spot_price_per_hour is None:
            return None
        return max(0.0, 1.0 - self.spot_price_per_hour / self.price_per_hour)

    def price_origin(self, now: float) -> str:
        """Where the prices came from and how old they are: "catalog 2025-01-15, 322 days
        ago; spot live API, just now" ("" when the driver does not say)."""
        parts = []
        if self.price_per_hour is not None and self.price_source:
            parts.append(price_origin(self.price_source, self.priced_at, now))
        if self.spot_price_per_hour is not None:
            parts.append("spot " + price_origin("live API", self.spot_priced_at, now))
        return "; ".join(parts)

    @property
    def gpu_label(self) -> str:
        if not self.gpu_count:
            return "CPU"
        return f"{self.gpu_count}x {self.gpu_name}" if self.gpu_count > 1 else self.gpu_name

    def __post_init__(self) -> None:
        self._set("regions", tuple(self.regions))


@dataclass(frozen=True)
class LaunchSpec(_Value):
    """Everything needed to create (or reuse) a machine and start one run on it."""

    run_id: str
    preset: str
    provider: str  # profile name, e.g. "local", "aws", "amd"
    train: Mapping[str, Any] = field(default_factory=dict)  # resolved trainer config
    instance_type: str | None = None
    region: str | None = None
    regions: tuple[str, ...] = ()
    spot: bool = False
    max_price: float | None = None
    fallback: str = "none"  # "none" | "on-demand"
    image: str | None = None
    disk_gb: int = 100
    budget: float | None = None
    max_hours: float | None = None
    idle_minutes: float | None = 30.0
    stall_minutes: float | None = None  # no progress this long: checkpoint-stop (None: off)
    workdir: str | None = None
    excludes: tuple[str, ...] = ()
    include_secrets: tuple[str, ...] = ()
    host: str | None = None  # ssh provider: user@host[:port]
    identity: str | None = None  # ssh private key path
    instance_id: str | None = None  # run on an existing machine
    managed: bool = False
    teardown: str = "terminate"  # what `run` does at the end: terminate | stop | keep
    require_gpu: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific
    # The user's own command instead of the bundled trainer (project.command_job); empty:
    # the bundled trainer.
    job: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._set("train", frozen_map(self.train))
        self._set("options", frozen_map(self.options))
        self._set("job", frozen_map(self.job))
        for name in ("regions", "excludes", "include_secrets"):
            self._set(name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class BilledPrice(_Value):
    """What a machine really got, read back from its cloud after it came up: the figure
    the ledger bills and a quote is compared with (the offer shown may be minutes old)."""

    instance_type: str
    market: str  # Market value: "spot" | "on-demand"
    zone: str | None
    price_per_hour: float
    source: str  # where the figure came from, in words ("spot price history of us-east-1a")
    at: float  # unix time it was read


@dataclass(frozen=True)
class Instance(_Value):
    """One machine as a provider reports it right now."""

    provider: str  # profile name
    id: str
    name: str
    region: str
    instance_type: str
    state: InstanceState
    public_ip: str | None = None
    launched_at: float | None = None  # unix seconds, provider's clock
    price_per_hour: float | None = None
    market: Market = Market.ON_DEMAND
    gpu_name: str = ""
    gpu_count: int = 0
    run_id: str | None = None  # from the gpuctl:run tag
    managed: bool = False  # created by gpuctl (tagged)
    raw_state: str = ""
    zone: str | None = None
    ssh_user: str | None = None
    ssh_port: int = 22
    disk_gb: float | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    stopped_at: float | None = None  # when a stopped machine stopped billing, if known
    owner: str | None = None  # installation id of the gpuctl that created it (its tag)

    def __post_init__(self) -> None:
        self._set("tags", frozen_map(self.tags))
        self._set("state", InstanceState(self.state))
        self._set("market", Market(self.market))

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, self.id)

    def uptime(self, now: float | None = None) -> float | None:
        if self.launched_at is None or self.state == InstanceState.TERMINATED:
            return None
        return max(0.0, (now or time.time()) - self.launched_at)

    def state_label(self, billed_when_stopped: bool) -> str:
        """The state as a user must read it: a powered-off droplet still costs money."""
        if self.state == InstanceState.STOPPED and billed_when_stopped:
            return f"off, still billing {rate(self.price_per_hour)}"
        return self.state.value


@dataclass(frozen=True)
class Run(_Value):
    """One training run as gpuctl records it; survives its instances."""

    id: str
    preset: str
    provider: str
    status: RunStatus
    created_at: float
    updated_at: float
    instance_id: str | None = None
    spec: Mapping[str, Any] = field(default_factory=dict)  # LaunchSpec.to_dict()
    remote_dir: str | None = None  # run dir on the machine
    results_dir: str | None = None  # local download dir
    epoch: int = 0
    epochs: int = 0
    metric: float | None = None
    eta_seconds: float | None = None
    reason: str = ""
    budget: float | None = None
    attempt: int = 1  # incremented on each recovery relaunch

    def __post_init__(self) -> None:
        self._set("spec", frozen_map(self.spec))
        self._set("status", RunStatus(self.status))

    @property
    def launch_spec(self) -> LaunchSpec:
        return LaunchSpec.from_dict(self.spec)


@dataclass(frozen=True)
class GpuSample(_Value):
    """One GPU at one instant; None means the tool did not report it (shown as N/A)."""

    index: int
    name: str
    util_pct: float | None = None
    mem_used_mb: float | None = None
    mem_total_mb: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    time: float = 0.0
    kind: str = "gpu"  # "gpu" | "cpu" (CPU-only machines report one pseudo-device)


@dataclass(frozen=True)
class PriceSegment(_Value):
    """A stretch of time billed at one rate; the ledger is a list of these."""

    provider: str
    instance_id: str
    run_id: str | None
    instance_type: str
    region: str
    market: str
    rate_per_hour: float
    start: float
    end: float | None = None  # None = still open
    kind: str = "compute"  # "compute" | "storage"
    id: int | None = None
    source: str = "launch"  # launch | spot | reconcile | restart: why the segment began


@dataclass(frozen=True)
class CostLine(_Value):
    """One row of the meter: what a scope burns now and has spent."""

    scope: str  # "instance" | "run" | "provider" | "total"
    key: str
    burn_per_hour: float
    spent: float
    spent_today: float = 0.0
    spent_month: float = 0.0
    hours: float = 0.0
    budget: float | None = None
    projected_total: float | None = None

    @property
    def budget_fraction(self) -> float | None:
        if not self.budget:
            return None
        return self.spent / self.budget


@dataclass(frozen=True)
class SshTarget(_Value):
    """How to reach a machine over SSH."""

    host: str
    port: int = 22
    user: str = "root"
    key_path: str | None = None
    host_alias: str | None = None  # ~/.ssh/config Host entry, if that is what the user named
