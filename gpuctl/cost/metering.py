"""The meter: one snapshot of what is spent and what burns now, for `gpuctl cost`, `ls`,
the TUI header and `--json`, from the ledger alone (no network)."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpuctl.format import money, percent, rate, rough_duration
from gpuctl.models import CostLine, Instance, InstanceState, PriceSegment, Run
from gpuctl.settings import Settings
from gpuctl.state import Store

from .billing import COMPUTE, billing_for, billing_lookup
from .budgets import BudgetState, budget_states
from .periods import day_start, month_start
from .segment_math import Charge, burn_rate, charges, elapsed_hours, instance_hours

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing


@dataclass(frozen=True)
class Meter:
    """A snapshot of the money: total, per provider, per run, per instance, budgets.

    `total` and `providers` lines carry this month in `spent` (the budget period); run and
    instance lines carry everything they have cost.
    """

    now: float
    total: CostLine
    providers: tuple[CostLine, ...] = ()
    runs: tuple[CostLine, ...] = ()
    instances: tuple[CostLine, ...] = ()
    budgets: tuple[BudgetState, ...] = ()
    flagged: tuple[str, ...] = ()  # instances metered by reconciliation, not by a launch
    # Listed machines that bill but have no open segment (not gpuctl's, or not yet seen by
    # a reconcile), at their listed prices: part of what burns now, not of what was spent.
    unmetered: tuple[str, ...] = ()
    unmetered_per_hour: float = 0.0

    @property
    def burn_now(self) -> float:
        """Everything that bills now: the ledger's burn plus the listed, unmetered machines."""
        return self.total.burn_per_hour + self.unmetered_per_hour

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "total": self.total.to_dict(),
            "unmetered": list(self.unmetered),
            "unmetered_per_hour": self.unmetered_per_hour,
            "burn_now": self.burn_now,
            "providers": [line.to_dict() for line in self.providers],
            "runs": [line.to_dict() for line in self.runs],
            "instances": [line.to_dict() for line in self.instances],
            "budgets": [b.to_dict() for b in self.budgets],
            "flagged": list(self.flagged),
        }


def compute_meter(
    segments: Sequence[PriceSegment],
    runs: Sequence[Run],
    settings: Settings,
    now: float,
    *,
    billing_of: Callable[[str], Billing] | None = None,
) -> Meter:
    """The meter from segments and runs alone (pure: the TUI can call it on its snapshot)."""
    billing_of = billing_of or billing_lookup(settings)
    owed = charges(segments, billing_of, now)
    today, month = day_start(now), month_start(now)

    def line(scope: str, key: str, items: list[Charge], segs: list[PriceSegment]) -> CostLine:
        total = sum(c.amount for c in items)
        month_spent = sum(c.within(month, math.inf) for c in items)
        return CostLine(
            scope=scope,
            key=key,
            burn_per_hour=burn_rate(segs, now),
            spent=month_spent if scope in ("total", "provider") else total,
            spent_today=sum(c.within(today, math.inf) for c in items),
            spent_month=month_spent,
            hours=(
                instance_hours(segs, month, now)
                if scope in ("total", "provider")
                else elapsed_hours(segs, now)
            ),
        )

    by_provider: dict[str, list[Charge]] = defaultdict(list)
    by_run: dict[str, list[Charge]] = defaultdict(list)
    by_instance: dict[tuple[str, str], list[Charge]] = defaultdict(list)
    for c in owed:
        by_provider[c.segment.provider].append(c)
        by_instance[(c.segment.provider, c.segment.instance_id)].append(c)
        if c.segment.run_id:
            by_run[c.segment.run_id].append(c)
    segs_provider: dict[str, list[PriceSegment]] = defaultdict(list)
    segs_run: dict[str, list[PriceSegment]] = defaultdict(list)
    segs_instance: dict[tuple[str, str], list[PriceSegment]] = defaultdict(list)
    for s in segments:
        segs_provider[s.provider].append(s)
        segs_instance[(s.provider, s.instance_id)].append(s)
        if s.run_id:
            segs_run[s.run_id].append(s)

    budget = settings.budget
    total = line("total", "all", owed, list(segments)).evolve(budget=budget.monthly)
    providers = tuple(
        line("provider", name, by_provider[name], segs_provider[name]).evolve(
            budget=budget.per_provider.get(name)
        )
        for name in sorted(set(by_provider) | set(budget.per_provider))
    )
    run_index = {r.id: r for r in runs}
    run_lines = []
    for run_id in sorted(by_run, key=lambda r: min(s.start for s in segs_run[r])):
        cl = line("run", run_id, by_run[run_id], segs_run[run_id])
        run = run_index.get(run_id)
        if run is not None:
            cl = cl.evolve(budget=run.budget, projected_total=projected_total(run, cl, now))
        run_lines.append(cl)
    instance_lines = tuple(
        line("instance", f"{p}/{i}", by_instance[(p, i)], segs_instance[(p, i)])
        for (p, i) in sorted(by_instance)
    )
    states = budget_states(segments, runs, settings, now, owed=owed)
    flagged = tuple(
        sorted(
            {
                f"{s.provider}/{s.instance_id}"
                for s in segments
                if s.source == "reconcile" and (s.end is None or s.end >= month)
            }
        )
    )
    return Meter(now, total, providers, tuple(run_lines), instance_lines, states, flagged)


def meter(store: Store, settings: Settings, now: float | None = None) -> Meter:
    """The meter from the state store: no network. The TUI header and `gpuctl cost` use it.

    Reads this month's segments, plus the whole of every run and instance they belong to
    (so a run's line is its full cost), not the years of history behind them.
    """
    now = time.time() if now is None else now
    window = store.segments(since=month_start(now))
    segs = {s.id: s for s in window}
    for run_id in {s.run_id for s in window if s.run_id}:
        segs.update({s.id: s for s in store.segments(run_id=run_id)})
    for provider, iid in {(s.provider, s.instance_id) for s in window if not s.run_id}:
        segs.update({s.id: s for s in store.segments(provider=provider, instance_id=iid)})
    ordered = sorted(segs.values(), key=lambda s: (s.start, s.id or 0))
    m = compute_meter(ordered, store.list_runs(), settings, now)
    keys, per_hour = listed_unmetered(store.instances(), ordered, settings)
    return replace(m, unmetered=keys, unmetered_per_hour=per_hour)


def listed_unmetered(
    instances: Iterable[Instance], segments: Iterable[PriceSegment], settings: Settings
) -> tuple[tuple[str, ...], float]:
    """(keys, $/h) of the listed machines of the configured providers that bill now (up, or
    off where off still bills) but have no open ledger segment. One rule for every view."""
    names = set(settings.providers)
    open_ = {(s.provider, s.instance_id) for s in segments if s.end is None}
    keys: list[str] = []
    per_hour = 0.0
    for inst in instances:
        if inst.provider not in names or (inst.provider, inst.id) in open_:
            continue
        off_billed = inst.state == InstanceState.STOPPED and (
            billing_for(settings, inst.provider).billed_when_stopped
        )
        if not (inst.state.billed or off_billed):
            continue
        keys.append(f"{inst.provider}/{inst.id}")
        per_hour += inst.price_per_hour or 0.0
    return tuple(keys), per_hour


def spent(
    store: Store, settings: Settings, *, run_id: str | None = None, now: float | None = None
) -> tuple[float, float]:
    """(dollars spent, dollars per hour burning now) for a run, or for everything."""
    now = time.time() if now is None else now
    segs = store.segments(run_id=run_id)
    total = sum(c.amount for c in charges(segs, billing_lookup(settings), now))
    return total, burn_rate(segs, now)


def run_line(store: Store, settings: Settings, run_id: str, now: float | None = None) -> CostLine:
    """One run's meter line: burn now, spent, elapsed hours, budget, projected total."""
    now = time.time() if now is None else now
    run = store.get_run(run_id)
    segs = store.segments(run_id=run.id)
    items = charges(segs, billing_lookup(settings), now)
    total = sum(c.amount for c in items)
    cl = CostLine(
        scope="run",
        key=run.id,
        burn_per_hour=burn_rate(segs, now),
        spent=total,
        spent_today=sum(c.within(day_start(now), math.inf) for c in items),
        spent_month=sum(c.within(month_start(now), math.inf) for c in items),
        hours=elapsed_hours(segs, now),
        budget=run.budget,
    )
    return cl.evolve(projected_total=projected_total(run, cl, now))


def projected_total(run: Run, line: CostLine, now: float) -> float | None:
    """What the run will have cost when it ends: spent + burn over its ETA (real epochs,
    the warm-up excluded). None when no ETA is known yet."""
    return projected(line.spent, line.burn_per_hour, run.eta_seconds, ended=not run.status.active)


def projected(
    spent: float | None, burn_per_hour: float | None, eta_seconds: float | None, *, ended: bool
) -> float | None:
    """Spent + burn over the ETA; what was spent once it ended; None when a part is unknown.
    The one rule for `gpuctl status`, the run screen and the follow stream's cost ticks."""
    if ended:
        return spent
    if spent is None or burn_per_hour is None or eta_seconds is None:
        return None
    return spent + burn_per_hour * max(0.0, eta_seconds) / 3600.0


def describe(line: CostLine) -> str:
    """The one-liner: '2.5 h elapsed, ~$4.98 spent, $1.992/h now'."""
    parts = [f"{rough_duration(line.hours * 3600)} elapsed", f"~{money(line.spent)} spent"]
    if line.burn_per_hour:
        parts.append(f"{rate(line.burn_per_hour)} now")
    if line.projected_total is not None and line.burn_per_hour:
        parts.append(f"~{money(line.projected_total)} at the end")
    if line.budget:
        parts.append(f"{percent(line.spent / line.budget)} of {money(line.budget)}")
    return ", ".join(parts)


@dataclass(frozen=True)
class InstanceMoney:
    """What the meter bills for one listed instance right now, and why when nothing.

    `burn_per_hour` is the sum of its open ledger segments (what `gpuctl cost` adds up),
    None when the ledger does not meter it at all; `note` says why in words.
    """

    burn_per_hour: float | None
    note: str = ""

    @property
    def metered(self) -> bool:
        return self.burn_per_hour is not None


def instance_money(
    store: Store,
    settings: Settings,
    instances: Iterable[Instance],
    *,
    now: float | None = None,
) -> dict[tuple[str, str], InstanceMoney]:
    """The meter's view of each instance, keyed by (provider, id), from the ledger alone."""
    now = time.time() if now is None else now
    known_runs = {r.id for r in store.list_runs()}
    out: dict[tuple[str, str], InstanceMoney] = {}
    for inst in instances:
        segs = store.segments(provider=inst.provider, instance_id=inst.id)
        live = [s for s in segs if s.end is None and s.start <= now]
        listed = "" if inst.price_per_hour is None else f"; listed at {rate(inst.price_per_hour)}"
        if live:
            burn = sum(s.rate_per_hour for s in live)
            kinds = {s.kind for s in live}
            note = ""
            if inst.state == InstanceState.STOPPED:
                note = "off, still billing" if COMPUTE in kinds else "stopped: its disk bills"
            out[inst.key] = InstanceMoney(burn, note)
        elif segs:
            out[inst.key] = InstanceMoney(0.0, f"{inst.state.value}: not billing")
        elif not inst.managed:
            out[inst.key] = InstanceMoney(None, f"not metered: not created by gpuctl{listed}")
        elif inst.run_id and inst.run_id not in known_runs:
            out[inst.key] = InstanceMoney(
                None, f"not metered: another gpuctl's run ({inst.run_id}){listed}"
            )
        elif inst.price_per_hour is None:
            out[inst.key] = InstanceMoney(None, "not metered: price unknown")
        elif inst.state in (InstanceState.STOPPED, InstanceState.TERMINATED):
            out[inst.key] = InstanceMoney(0.0, f"{inst.state.value}: not billing")
        else:
            out[inst.key] = InstanceMoney(
                None, f"not metered yet: `gpuctl cost --refresh` meters it{listed}"
            )
    return out
