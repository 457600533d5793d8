"""What the screens show, as immutable snapshots built from the state store.

Nothing here imports textual: a snapshot is built in a worker thread (it reads SQLite),
handed to the UI thread in a message, and rendered there. Keeping the data layer pure
(nvitop style) makes it testable without a terminal and keeps the UI thread free of I/O.
Every value the store does not know is None and renders as "-", "N/A" or "$?" (gpuctl.format),
never as 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from gpuctl import cost, supervisor_state
from gpuctl.format import BLANK, duration, money
from gpuctl.models import Instance, InstanceState, Run, RunStatus
from gpuctl.ownership import is_foreign
from gpuctl.runstate import epoch_text
from gpuctl.settings import Settings
from gpuctl.state import Store
from gpuctl.views import RunSummary, Totals, cost_so_far, overview

# How long finished runs without a live machine stay in the table.
RECENT_RUN_SECONDS = 3 * 24 * 3600


def text_bar(fraction: float, width: int) -> str:
    """A bar readable without colour: filled and empty cells differ in shape."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)


# -- rows of the instances table ------------------------------------------------------------------

# Order of states when sorting by state: what needs attention or costs money first.
_STATE_RANK = {
    "failed": 0,
    "lost": 0,
    "budget": 1,
    "stalled": 1,
    "orphan": 2,
    "provisioning": 3,
    "syncing": 3,
    "starting": 3,
    "training": 4,
    "running": 4,
    "stopping": 5,
    "pending": 5,
    "recovering": 5,
    "interrupted": 6,
    "stopped": 7,
    "finished": 8,
    "terminated": 9,
}


@dataclass(frozen=True)
class Live:
    """What the UI learned from a run's event stream since it started following it."""

    phase: str = ""  # "provisioning", "up", "syncing 3/10", "training", ...
    epoch: int | None = None
    epochs: int | None = None
    eta_seconds: float | None = None
    warmup: bool = False


@dataclass(frozen=True)
class Row:
    """One line of the instances table: an instance, a run, or both."""

    key: str
    provider: str
    region: str
    name: str
    instance_type: str
    gpus: str
    state: str
    tone: str  # ok | busy | warn | bad | idle | done: colour only, the text says it all
    started_at: float | None
    price_per_hour: float | None
    ledger_cost: float | None  # from the cost ledger (frozen prices)
    preset: str
    epoch: int
    epochs: int
    eta_seconds: float | None
    warmup: bool = False
    run_id: str | None = None
    instance_id: str | None = None
    managed: bool = True
    live_instance: bool = False
    billed: bool = False

    def uptime(self, now: float) -> float | None:
        if self.started_at is None or not self.live_instance:
            return None
        return max(0.0, now - self.started_at)

    def cost(self, now: float) -> tuple[float | None, bool]:
        """(dollars so far, whether it is an estimate from price x uptime)."""
        return cost_so_far(self.ledger_cost, self.price_per_hour, self.uptime(now))

    def epoch_text(self) -> str:
        """Completed epochs (the CLI's words), a warm-up or ETA note while training."""
        if not self.epochs:
            return "-"
        text = epoch_text(self.epoch, self.epochs)
        if self.warmup and self.epoch <= 1 and self.state == "training":
            return text + " warm-up"
        if self.eta_seconds and self.state == "training":
            return f"{text} {duration(self.eta_seconds)}"
        return text

    def cells(self, now: float) -> dict[str, str]:
        """Display strings by column key; the table diffs these to update in place.

        Memoised per `now`: the snapshot worker computes them off the UI thread.
        """
        memo = self.__dict__.get("_memo")
        if memo is not None and memo[0] == now:
            return memo[1]
        cells = self._cells(now)
        object.__setattr__(self, "_memo", (now, cells))
        return cells

    def _cells(self, now: float) -> dict[str, str]:
        spent, approx = self.cost(now)
        return {
            "provider": self.provider,
            "region": self.region or "-",
            "name": self.name,
            "type": self.instance_type or "-",
            "gpus": self.gpus,
            "state": self.state,
            "uptime": duration(self.uptime(now)),
            "price": money(self.price_per_hour, digits=3, symbol=False, unknown=BLANK),
            "cost": BLANK
            if spent is None
            else ("~" if approx else "") + money(spent, symbol=False),
            "preset": self.preset or "-",
            "epoch": self.epoch_text(),
        }

    def sort_value(self, column: str, now: float) -> Any:
        if column == "state":
            return (_STATE_RANK.get(self.state.split()[0], 5), self.name)
        if column == "uptime":
            return self.uptime(now) or -1.0
        if column == "price":
            return self.price_per_hour if self.price_per_hour is not None else -1.0
        if column == "cost":
            return self.cost(now)[0] or -1.0
        if column == "epoch":
            return (self.epoch / self.epochs) if self.epochs else -1.0
        return self.cells(now)[column].lower()

    def matches(self, terms: Sequence[str], now: float) -> bool:
        if not terms:
            return True
        text = " ".join(self.cells(now).values()).lower()
        text += f" {self.instance_id or ''} {self.run_id or ''}".lower()
        return all(t in text for t in terms)

    def with_live(self, live: Live | None) -> Row:
        """Overlay what the event stream knows newer than the store snapshot."""
        if live is None:
            return self
        changes: dict[str, Any] = {}
        if live.phase and self.state.split(",")[0] not in _TERMINAL_STATES:
            changes["state"] = live.phase
            changes["tone"] = _tone(live.phase)
        if live.epochs:
            changes.update(
                epoch=live.epoch or 0,
                epochs=live.epochs,
                eta_seconds=live.eta_seconds,
                warmup=live.warmup,
            )
        return replace(self, **changes) if changes else self


_TERMINAL_STATES = {s.value for s in RunStatus if s.terminal}


def _tone(state: str) -> str:
    word = state.split()[0] if state else ""
    if word in ("failed", "lost", "budget", "stalled"):
        return "bad"
    if word in ("orphan",) or "orphan" in state or "still billing" in state:
        return "warn"
    if word in ("training", "running"):
        return "ok"
    if word in ("provisioning", "syncing", "starting", "up", "pending", "recovering", "stopping"):
        return "busy"
    if word in ("stopped", "interrupted"):
        return "idle"
    return "done"


def _gpus(inst: Instance | None, run: Run | None) -> str:
    if inst is None:
        return "-"
    if inst.gpu_count:
        return f"{inst.gpu_count}x {inst.gpu_name}" if inst.gpu_name else f"{inst.gpu_count}x GPU"
    if inst.provider == "local" or inst.instance_type == "local":
        return "CPU"
    return "-"


def _run_state(run: Run) -> str:
    return "training" if run.status == RunStatus.RUNNING else run.status.value


def _row(
    inst: Instance | None,
    run: Run | None,
    spent: float | None,
    billed_when_stopped: Mapping[str, bool],
    installation: str = "",
) -> Row:
    live_inst = inst is not None and inst.state != InstanceState.TERMINATED
    billed = False
    if inst is not None and live_inst:
        billed = inst.state.billed or (
            inst.state == InstanceState.STOPPED and billed_when_stopped.get(inst.provider, False)
        )
    foreign = False
    if run is not None:
        key = f"run:{run.id}"
        state = _run_state(run)
        if run.status.terminal and live_inst and inst is not None:
            label = inst.state_label(billed_when_stopped.get(inst.provider, False))
            state = f"{state}, {label}"
        name, preset = run.id, run.preset
    else:
        assert inst is not None
        key = f"inst:{inst.provider}/{inst.id}"
        state = inst.state_label(billed_when_stopped.get(inst.provider, False))
        name, preset = inst.name or inst.id, inst.tags.get("gpuctl:preset", "")
        foreign = bool(inst.run_id) and is_foreign(inst, installation, run_known=False)
        if foreign:  # another gpuctl installation's (a colleague's): named with its owner
            state += " foreign"
            name += f" (owner {inst.owner or 'unknown'})"
        elif inst.managed and inst.run_id:
            state += " orphan"
        elif not inst.managed:
            state += " ext"
    return Row(
        key=key,
        provider=inst.provider if inst is not None else (run.provider if run else "-"),
        region=inst.region if inst is not None else "",
        name=name,
        instance_type=inst.instance_type if inst is not None else "",
        gpus=_gpus(inst, run),
        state=state,
        tone=_tone(state),
        started_at=inst.launched_at if inst is not None else None,
        price_per_hour=inst.price_per_hour if inst is not None else None,
        ledger_cost=spent,
        preset=preset,
        epoch=run.epoch if run is not None else 0,
        epochs=run.epochs if run is not None else 0,
        eta_seconds=run.eta_seconds if run is not None else None,
        run_id=run.id if run is not None else None,
        instance_id=inst.id if inst is not None else (run.instance_id if run else None),
        managed=(inst.managed and not foreign) if inst is not None else True,
        live_instance=live_inst,
        billed=billed,
    )


# -- the cost meter and provider chips -----------------------------------------------------------


@dataclass(frozen=True)
class Meter:
    """The header: the core's totals (gpuctl.views, as `gpuctl cost` has them) and how
    many rows train and bill."""

    totals: Totals = field(default_factory=Totals)
    running: int = 0
    billed: int = 0


@dataclass(frozen=True)
class Chip:
    """One provider's health as of its last listing."""

    name: str
    state: str  # ok | nocreds | error | unchecked
    message: str = ""

    @property
    def label(self) -> str:
        word = {
            "ok": "ok",
            "nocreds": "no credentials",
            "error": "error",
            "unchecked": "not checked yet",
        }[self.state]
        return f"{self.name}: {word}"


def chip_for(name: str, status: tuple[bool, str, float] | None) -> Chip:
    if status is None:
        return Chip(name, "unchecked")
    ok, message, _checked = status
    if ok:
        return Chip(name, "ok")
    low = message.lower()
    creds = ("credential", "token", "unauthorized", "401", "sso", "not logged in", "login")
    return Chip(name, "nocreds" if any(w in low for w in creds) else "error", message)


# -- the snapshot ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    rows: tuple[Row, ...] = ()
    meter: Meter = field(default_factory=Meter)
    chips: tuple[Chip, ...] = ()
    taken_at: float = 0.0
    active_runs: tuple[str, ...] = ()  # runs whose trainer may be going: followed live
    runs: Mapping[str, RunSummary] = field(default_factory=dict)  # by run id, the ledger's
    supervisor: str = ""  # "supervisor: running since ..." while `gpuctl supervise` runs

    @cached_property
    def _index(self) -> dict[str, Row]:
        return {r.key: r for r in self.rows}

    def row(self, key: str) -> Row | None:
        return self._index.get(key)


def build_snapshot(store: Store, settings: Settings, now: float) -> Snapshot:
    """Everything the main screen shows, from the core's overview (gpuctl.views): no
    network, ever.

    Money comes from the cost ledger (frozen prices, billing minimums); a listed machine
    the ledger does not know yet still counts in the burn rate at its listed price, and
    its cost shows as an estimate (~).
    """
    view = overview(store, settings, now)
    names = list(settings.providers)
    billed_when_stopped = {n: cost.billing_for(settings, n).billed_when_stopped for n in names}
    runs = view.all_runs
    by_run = {r.id: r for r in runs}
    per_instance = {line.key: line.spent for line in view.meter.instances}
    per_run = {line.key: line.spent for line in view.meter.runs}

    rows: list[Row] = []
    seen_runs: set[str] = set()
    for inst in view.instances:
        run = by_run.get(inst.run_id or "")
        if run is not None and (run.id in seen_runs or run.instance_id not in (None, inst.id)):
            run = None  # an older machine of a relaunched run: show it on its own
        if run is not None:
            seen_runs.add(run.id)
            spent = per_run.get(run.id)
        else:
            spent = per_instance.get(f"{inst.provider}/{inst.id}")
        rows.append(_row(inst, run, spent, billed_when_stopped, settings.installation_id))
    for run in runs:
        if run.id in seen_runs:
            continue
        if run.status.terminal and now - run.updated_at > RECENT_RUN_SECONDS:
            continue
        rows.append(_row(None, run, per_run.get(run.id), billed_when_stopped))

    meter = Meter(
        totals=view.totals,
        running=sum(1 for r in rows if r.state == "training"),
        billed=sum(1 for r in rows if r.billed),
    )
    chips = tuple(chip_for(n, view.provider_statuses.get(n)) for n in names)
    for row in rows:
        row.cells(now)  # formatted here, in the worker, not on the UI thread
    active = tuple(r.id for r in runs if r.status.active and r.provider in names)
    return Snapshot(
        rows=tuple(rows),
        meter=meter,
        chips=chips,
        taken_at=now,
        active_runs=active,
        runs=view.runs,
        supervisor=supervisor_chip(settings),
    )


def supervisor_chip(settings: Settings) -> str:
    """The supervisor's chip text, "" when none runs (a lock probe that never waits)."""
    info = supervisor_state.current(settings.home)
    return "" if info is None else f"supervisor: running since {info.since_text()}"
