"""One view of the numbers: snapshots every front end renders, built once, here.

nvitop's snapshot model: a frozen value computed from the state store (the last listing,
the runs) and the cost ledger at one instant, then rendered by `gpuctl ls`, `gpuctl
status`, `gpuctl cost`, their --json, and the control center's header, table, run
screen and cost screen. A number a front end shows (burn now, spent, budget left, a
run's cost so far and projected total, time left under max hours) is computed in this
module or below it, never in a front end, so two views of the same state cannot
disagree. No network here: callers refresh (and settle ended billing) first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import cost, results
from .errors import NotFoundError
from .models import CostLine, Instance, InstanceState, PriceSegment, Run
from .ownership import is_foreign
from .reconcile import is_orphan
from .rundir import RunDir
from .settings import Settings
from .state import Store
from .tail import last_lines
from .trainer.protocol import TRAIN_LOG_FILE

if TYPE_CHECKING:
    from .ports import EngineOps

# -- the totals: what the header and `gpuctl cost` lead with -------------------------------------


@dataclass(frozen=True)
class Totals:
    """Burn now, spent today and this month, against the monthly budget."""

    burn_now: float = 0.0  # the ledger's open segments plus listed, unmetered machines
    spent_today: float = 0.0
    spent_month: float = 0.0
    budget: float | None = None  # budget.monthly
    warn_fraction: float = 0.8
    unmetered: tuple[str, ...] = ()  # provider/id of machines that bill with no ledger entry
    unmetered_per_hour: float = 0.0

    @property
    def budget_left(self) -> float | None:
        return None if self.budget is None else self.budget - self.spent_month

    @property
    def fraction(self) -> float | None:
        return None if not self.budget else self.spent_month / self.budget

    @property
    def level(self) -> str:
        """none | ok | warn | over: also printed as text, so no colour is needed."""
        f = self.fraction
        if f is None:
            return "none"
        if f >= 1.0:
            return "over"
        if f >= self.warn_fraction:
            return "warn"
        return "ok"


def totals_of(meter: cost.Meter, settings: Settings) -> Totals:
    """The totals of a meter: one rule for what burns now (unmetered machines included)."""
    total = meter.total
    return Totals(
        burn_now=meter.burn_now,
        spent_today=total.spent_today,
        spent_month=total.spent_month,
        budget=settings.budget.monthly,
        warn_fraction=settings.budget.warn_fraction,
        unmetered=meter.unmetered,
        unmetered_per_hour=meter.unmetered_per_hour,
    )


def with_unmetered(
    meter: cost.Meter,
    instances: Sequence[Instance],
    segments: Sequence[PriceSegment],
    settings: Settings,
) -> cost.Meter:
    """The meter with the listed machines it does not meter added to what burns now."""
    keys, per_hour = cost.listed_unmetered(instances, segments, settings)
    return replace(meter, unmetered=keys, unmetered_per_hour=per_hour)


# -- money of one thing ----------------------------------------------------------------------------


def cost_so_far(
    ledger: float | None, price_per_hour: float | None, uptime: float | None
) -> tuple[float | None, bool]:
    """(dollars, whether it is an estimate): the ledger's sum, else listed price x uptime
    for a machine the ledger does not know yet (shown with a '~')."""
    if ledger is not None:
        return ledger, False
    if uptime is None or price_per_hour is None:
        return None, False
    return price_per_hour * uptime / 3600.0, True


def max_hours_left(run: Run, now: float) -> float | None:
    """Seconds left before the agent's max-hours stop; None without a limit or once ended."""
    max_hours = run.spec.get("max_hours")
    if not max_hours or not run.status.active:
        return None
    return max(0.0, max_hours * 3600 - (now - run.created_at))


# -- a run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One run's numbers: status, progress, what it cost so far and will cost, where."""

    run: Run
    spent: float
    burn_per_hour: float
    projected_total: float | None
    taken_at: float

    @property
    def budget(self) -> float | None:
        return self.run.budget

    @property
    def budget_fraction(self) -> float | None:
        return None if not self.run.budget else self.spent / self.run.budget

    def to_dict(self) -> dict[str, Any]:
        """The money keys of `gpuctl status --json` (next to the run's own)."""
        return {
            "spent": round(self.spent, 4),
            "burn_per_hour": self.burn_per_hour,
            "projected_total": self.projected_total,
        }


def summary_of(run: Run, line: CostLine | None, now: float) -> RunSummary:
    """A run's summary from its meter line (no line: nothing billed yet)."""
    spent = line.spent if line is not None else 0.0
    burn = line.burn_per_hour if line is not None else 0.0
    total = cost.projected(spent, burn, run.eta_seconds, ended=not run.status.active)
    return RunSummary(run, spent, burn, total, now)


def run_summary(store: Store, settings: Settings, run: Run, now: float | None = None) -> RunSummary:
    """`gpuctl status RUN` and the run screen: the run as the store has it, at `now`."""
    now = time.time() if now is None else now
    return summary_of(run, cost.run_line(store, settings, run.id, now), now)


# -- the overview: every machine, every run, the totals --------------------------------------------


@dataclass(frozen=True)
class Whose:
    """Whose a listed machine is, in the words of `gpuctl ls` and the control center."""

    orphan: bool  # this installation's, and nothing will take it down
    foreign: bool  # another gpuctl installation's
    owner: str  # "-" (this installation's), "not gpuctl", or the other owner's name


def whose(instance: Instance, run: Run | None, installation: str) -> Whose:
    """One rule for every view (`run`: the store's run of the machine's run id, if any)."""
    foreign = is_foreign(instance, installation, run_known=run is not None)
    mine = "-" if instance.managed else "not gpuctl"
    owner = (instance.owner or "unknown") if foreign else mine
    return Whose(is_orphan(instance, run, installation=installation), foreign, owner)


@dataclass(frozen=True)
class InstanceLine:
    """One listed machine: whose it is, which run it serves, what it burns."""

    instance: Instance
    run: Run | None
    state: str  # the listed state in words ("off, still billing $0.050/h")
    orphan: bool  # this installation's, and nothing will take it down
    foreign: bool  # another gpuctl installation's
    owner: str  # "-" (this installation's), "not gpuctl", or the other owner's name
    money: cost.InstanceMoney
    uptime_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        """One line of `gpuctl ls --json`."""
        return {
            **self.instance.to_dict(),
            "uptime_seconds": self.uptime_seconds,
            "run_status": self.run.status.value if self.run else None,
            "orphan": self.orphan,
            "foreign": self.foreign,
            "burn_per_hour": self.money.burn_per_hour,
            "metered": self.money.metered,
            "meter_note": self.money.note,
        }


@dataclass(frozen=True)
class Listing:
    """Every listed machine of the configured providers, as `gpuctl ls` shows it."""

    taken_at: float
    instances: tuple[InstanceLine, ...] = ()  # listed, not terminated
    # name -> (ok, message, checked_at) of each configured provider's last listing
    provider_statuses: Mapping[str, tuple[bool, str, float]] = field(default_factory=dict)

    def provider_errors(self) -> list[tuple[str, str]]:
        """(provider, message) of each configured provider whose last listing failed."""
        return [(name, msg) for name, (ok, msg, _at) in self.provider_statuses.items() if not ok]


def listing(store: Store, settings: Settings, now: float | None = None) -> Listing:
    """The machines from the store's cache alone: no network, and only the ledger of the
    machines listed (a cached `gpuctl ls` stays fast on a year of history)."""
    now = time.time() if now is None else now
    names = list(settings.providers)
    live = [
        i for i in store.instances() if i.provider in names and i.state != InstanceState.TERMINATED
    ]
    runs = store.list_runs()
    by_run = {r.id: r for r in runs}
    money = cost.instance_money(store, settings, live, now=now)
    mine = settings.installation_id
    off_bills = {n: cost.billing_for(settings, n).billed_when_stopped for n in names}
    rows = []
    for inst in live:
        run = by_run.get(inst.run_id or "")
        facts = whose(inst, run, mine)
        rows.append(
            InstanceLine(
                instance=inst,
                run=run,
                state=inst.state_label(off_bills[inst.provider]),
                orphan=facts.orphan,
                foreign=facts.foreign,
                owner=facts.owner,
                money=money[inst.key],
                uptime_seconds=inst.uptime(now),
            )
        )
    statuses = store.provider_statuses()
    return Listing(now, tuple(rows), {n: statuses[n] for n in names if n in statuses})


@dataclass(frozen=True)
class Overview:
    """The money of everything at one instant: the control center's header and table."""

    taken_at: float
    meter: cost.Meter  # over every segment: each run's and instance's whole cost
    totals: Totals
    runs: Mapping[str, RunSummary] = field(default_factory=dict)  # runs the ledger bills
    # name -> (ok, message, checked_at) of each configured provider's last listing
    provider_statuses: Mapping[str, tuple[bool, str, float]] = field(default_factory=dict)
    instances: tuple[Instance, ...] = ()  # the configured providers', terminated included
    all_runs: tuple[Run, ...] = ()


def overview(store: Store, settings: Settings, now: float | None = None) -> Overview:
    """The overview from the store alone: no network, ever."""
    now = time.time() if now is None else now
    names = list(settings.providers)
    instances = [i for i in store.instances() if i.provider in names]
    runs = store.list_runs()
    segments = store.segments()
    meter = with_unmetered(
        cost.compute_meter(segments, runs, settings, now), instances, segments, settings
    )
    lines = {line.key: line for line in meter.runs}
    summaries = {r.id: summary_of(r, lines.get(r.id), now) for r in runs if r.id in lines}
    statuses = store.provider_statuses()
    return Overview(
        taken_at=now,
        meter=meter,
        totals=totals_of(meter, settings),
        runs=summaries,
        provider_statuses={n: statuses[n] for n in names if n in statuses},
        instances=tuple(instances),
        all_runs=tuple(runs),
    )


# -- the cost view: what `gpuctl cost` and the cost screen show ------------------------------------


@dataclass(frozen=True)
class CostView:
    """The meter with its totals, the runs its lines name, and the machines billing runless."""

    meter: cost.Meter
    totals: Totals
    runs: Mapping[str, Run]
    runless: frozenset[str]  # provider/id billing with no run: shown on their own
    # (provider, error) of each configured provider whose last listing failed: what runs
    # there beyond gpuctl's own ledger is unknown, not $0.
    unlisted: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """`gpuctl cost --json`."""
        out = self.meter.to_dict()
        out["unlisted"] = [{"provider": name, "error": error} for name, error in self.unlisted]
        return out


def cost_view(store: Store, settings: Settings, now: float | None = None) -> CostView:
    """The meter from this month's ledger (and the whole of what it names): no network."""
    m = cost.meter(store, settings, now)
    return CostView(
        meter=m,
        totals=totals_of(m, settings),
        runs={r.id: r for r in store.list_runs()},
        runless=frozenset(
            f"{s.provider}/{s.instance_id}" for s in store.segments(open_only=True) if not s.run_id
        ),
        unlisted=tuple(
            (name, message)
            for name, (ok, message, _at) in store.provider_statuses().items()
            if not ok and name in settings.providers
        ),
    )


# -- a run's log: one order of sources for `gpuctl logs` and the run screen -----------------------


@dataclass(frozen=True)
class LogHistory:
    """The last lines of a run's training log, and whether they came from its machine."""

    lines: tuple[str, ...]
    from_machine: bool


def saved_results(store: Store, run: Run) -> Path | None:
    """The downloaded results to read an ended run's log and epochs from, or None: read
    its machine. Saved ones count once they are current (no newer results only on the
    machine, gpuctl.results.pending): complete, and there after the machine is gone."""
    if not run.status.terminal or not run.results_dir:
        return None
    saved = Path(run.results_dir)
    if not (saved / TRAIN_LOG_FILE).is_file() or results.pending(store, run):
        return None
    return saved


def log_history(engine: EngineOps, run: Run, lines: int) -> LogHistory:
    """The one order of a run's log, for `gpuctl logs` and the run screen: an ended run's
    current saved copy; else its machine's log; else, the machine gone, the saved copy.

    NotFoundError when there is none of them."""
    saved = Path(run.results_dir) / TRAIN_LOG_FILE if run.results_dir else None
    if saved is not None and saved_results(engine.store, run) is not None:
        return LogHistory(_last(saved, lines), from_machine=False)
    if not run.remote_dir:
        raise NotFoundError(
            f"run {run.id} never started, so it has no log ({run.status.value}"
            + (f": {run.reason}" if run.reason else "")
            + ")",
            hint=f"`gpuctl status {run.id}` says why",
        )
    try:
        _, host = engine.locate(run)
        tail, _ = last_lines(host, RunDir(host, run.id, run.remote_dir).p(TRAIN_LOG_FILE), lines)
        return LogHistory(tuple(tail), from_machine=True)
    except NotFoundError as exc:
        if saved is None or not saved.is_file():
            raise NotFoundError(
                f"run {run.id} has no live machine and no saved log", hint=exc.hint
            ) from None
        return LogHistory(_last(saved, lines), from_machine=False)


def _last(path: Path, lines: int) -> tuple[str, ...]:
    return tuple(path.read_text(errors="replace").splitlines()[-lines:]) if lines > 0 else ()
