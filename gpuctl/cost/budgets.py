"""Budgets: what is spent against each (run, month, provider month), the alerts they fire
once, what active runs may still spend, and whether a launch may go ahead."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gpuctl.errors import BudgetExceeded
from gpuctl.format import money, percent, rate
from gpuctl.models import Instance, LaunchSpec, PriceSegment, Run
from gpuctl.settings import Settings
from gpuctl.state import Store

from .billing import billing_for, billing_lookup, stop_margin_seconds, storage_rate
from .periods import month_key, month_start
from .segment_math import Charge, charges


@dataclass(frozen=True)
class BudgetState:
    """One budget and how much of it is gone: a run's, the month's, or a provider's month."""

    scope: str  # run | month | provider
    key: str  # run id | YYYY-MM | profile name
    budget: float
    spent: float
    warn_fraction: float = 0.8
    margin: float = 0.0  # dollars the stop itself costs (checkpoint, download, teardown)

    @property
    def fraction(self) -> float:
        return self.spent / self.budget if self.budget > 0 else math.inf

    @property
    def remaining(self) -> float:
        return self.budget - self.spent

    @property
    def stop_at(self) -> float:
        """Spent at which the run is stopped: early by what stopping costs at this burn,
        so the final bill stays within the budget."""
        return max(0.0, self.budget - self.margin)

    @property
    def warn_at(self) -> float:
        """The warning line: warn_fraction of the budget, or of the stop line when the
        stop comes before it (a small budget on an expensive machine)."""
        line = self.warn_fraction * self.budget
        return line if line < self.stop_at else self.warn_fraction * self.stop_at

    @property
    def level(self) -> str:
        """ok | warn | exceeded (the stop line is reached)"""
        if self.budget <= 0 or self.spent >= self.stop_at:
            return "exceeded"
        return "warn" if self.spent >= self.warn_at else "ok"

    @property
    def label(self) -> str:
        if self.scope == "run":
            return f"run {self.key}"
        if self.scope == "provider":
            return f"{self.key} this month"
        return "this month"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "key": self.key,
            "budget": self.budget,
            "spent": round(self.spent, 6),
            "fraction": round(self.fraction, 6),
            "remaining": round(self.remaining, 6),
            "stop_at": round(self.stop_at, 6),
            "level": self.level,
        }


def budget_states(
    segments: Sequence[PriceSegment],
    runs: Sequence[Run],
    settings: Settings,
    now: float,
    *,
    owed: Sequence[Charge] | None = None,
    only_run: str | None = None,
    only_provider: str | None = None,
) -> tuple[BudgetState, ...]:
    """Every configured budget with what is spent against it at `now`."""
    owed = owed if owed is not None else charges(segments, billing_lookup(settings), now)
    warn = settings.budget.warn_fraction
    month = month_start(now)
    live = [s for s in segments if s.end is None and s.start <= now]

    def margin(keep: Callable[[PriceSegment], bool]) -> float:
        return stop_margin(settings, [s for s in live if keep(s)])

    out: list[BudgetState] = []
    if settings.budget.monthly:
        spent_month = sum(c.within(month, math.inf) for c in owed)
        out.append(
            BudgetState(
                "month",
                month_key(now),
                settings.budget.monthly,
                spent_month,
                warn,
                margin(lambda s: True),
            )
        )
    for name, amount in sorted(settings.budget.per_provider.items()):
        if only_provider is not None and name != only_provider:
            continue
        spent_p = sum(c.within(month, math.inf) for c in owed if c.segment.provider == name)
        out.append(
            BudgetState(
                "provider", name, amount, spent_p, warn, margin(lambda s, n=name: s.provider == n)
            )
        )
    for run in runs:
        if not run.budget or (only_run is not None and run.id != only_run):
            continue
        if only_run is None and not run.status.active:
            continue
        spent_r = sum(c.amount for c in owed if c.segment.run_id == run.id)
        out.append(
            BudgetState(
                "run",
                run.id,
                run.budget,
                spent_r,
                warn,
                margin(lambda s, r=run.id: s.run_id == r),
            )
        )
    return tuple(out)


def stop_margin(settings: Settings, live: Iterable[PriceSegment]) -> float:
    """Dollars the stop of what these open segments bill will cost: margin x burn."""
    return sum(s.rate_per_hour * stop_margin_seconds(settings, s.provider) / 3600.0 for s in live)


def relevant_segments(store: Store, now: float, run_id: str | None) -> list[PriceSegment]:
    """This month's segments (month and provider budgets) plus all of one run's."""
    segs = {s.id: s for s in store.segments(since=month_start(now))}
    if run_id is not None:
        segs.update({s.id: s for s in store.segments(run_id=run_id)})
    return sorted(segs.values(), key=lambda s: (s.start, s.id or 0))


def run_budgets(
    store: Store, settings: Settings, run: Run, now: float | None = None
) -> tuple[BudgetState, ...]:
    """The budgets that apply to one run: its own, the month's, its provider's month."""
    now = time.time() if now is None else now
    return budget_states(
        relevant_segments(store, now, run.id),
        [run],
        settings,
        now,
        only_run=run.id,
        only_provider=run.provider,
    )


@dataclass(frozen=True)
class Alert:
    """A budget threshold crossed for the first time (warn at warn_fraction, stop at 100%)."""

    state: BudgetState
    level: str  # warn | stop

    @property
    def message(self) -> str:
        s = self.state
        if self.level == "stop":
            return (
                f"budget reached: {s.label} has spent {money(s.spent)} of {money(s.budget)}; "
                "stopping (the trainer checkpoints)"
            )
        return f"{s.label} has spent {money(s.spent)} of {money(s.budget)} ({percent(s.fraction)})"


def fire_alerts(
    store: Store, states: Iterable[BudgetState], now: float | None = None
) -> list[Alert]:
    """Thresholds crossed that no process has reported yet; each fires once, ever.

    A jump straight past 100% reports the stop only (the 80% line is recorded as passed).
    """
    now = time.time() if now is None else now
    fired = []
    for state in states:
        levels = {"warn": ("warn",), "exceeded": ("warn", "stop")}.get(state.level, ())
        key = f"{state.key}@{month_key(now)}" if state.scope == "provider" else state.key
        for level in levels:
            new = store.fire_alert(state.scope, key, level, state.spent, state.budget, now)
            if new and not (level == "warn" and "stop" in levels):
                fired.append(Alert(state, level))
    return fired


def exceeded(states: Iterable[BudgetState]) -> BudgetState | None:
    """The first budget that is used up, if any (the run must stop)."""
    return next((s for s in states if s.level == "exceeded"), None)


def seconds_to_threshold(states: Iterable[BudgetState], burn_per_hour: float) -> float | None:
    """Seconds until the next warn or stop line is crossed at the current burn (None: never).

    The follower ticks then, so a warning lands on time even when money burns fast.
    """
    if burn_per_hour <= 0:
        return None
    best = None
    for st in states:
        for line in (st.warn_at, st.stop_at):
            if line > st.spent:
                left = (line - st.spent) / burn_per_hour * 3600.0
                best = left if best is None else min(best, left)
    return best


def remaining_for(
    store: Store,
    settings: Settings,
    provider: str,
    run_budget: float | None,
    *,
    run_id: str | None = None,
    now: float | None = None,
) -> tuple[float, str] | None:
    """(dollars left, which budget) for a new or running run: the tightest of its budgets."""
    now = time.time() if now is None else now
    segs = relevant_segments(store, now, run_id)
    owed = charges(segs, billing_lookup(settings), now)
    month = month_start(now)
    options: list[tuple[float, str]] = []
    if run_budget is not None:
        used = sum(c.amount for c in owed if run_id and c.segment.run_id == run_id)
        options.append((run_budget - used, f"the run budget of {money(run_budget)}"))
    if not settings.budget.monthly and not settings.budget.per_provider.get(provider):
        return min(options) if options else None
    held = committed(store, settings, exclude=run_id, now=now)

    def after(amount: float, runs: int) -> str:
        if runs == 0:
            return ""
        return f" after {money(amount)} held for {runs} active run{'s' if runs != 1 else ''}"

    if settings.budget.monthly:
        used = sum(c.within(month, math.inf) for c in owed)
        amount = sum(h.amount for h in held)
        options.append(
            (
                settings.budget.monthly - used - amount,
                f"what is left of the monthly budget ({money(settings.budget.monthly)})"
                + after(amount, len(held)),
            )
        )
    per = settings.budget.per_provider.get(provider)
    if per:
        used = sum(c.within(month, math.inf) for c in owed if c.segment.provider == provider)
        mine = [h for h in held if h.provider == provider]
        amount = sum(h.amount for h in mine)
        options.append(
            (
                per - used - amount,
                f"what is left of the {provider} budget ({money(per)}/month)"
                + after(amount, len(mine)),
            )
        )
    return min(options) if options else None


RESERVED = "reserved"  # event: the estimate an admitted launch holds until it bills


@dataclass(frozen=True)
class Held:
    """Money an active run may still spend before its own limits stop it."""

    run_id: str
    provider: str
    amount: float
    seconds: float  # until its earliest limit (max hours, budget), margin included


def _month_end(now: float) -> float:
    return month_start(month_start(now) + 32 * 86400.0)


def _seconds_left(store: Store, run: Run, segs: Sequence[PriceSegment], now: float) -> float:
    """Seconds until the run's earliest limit on its machine: the agent's max hours and
    budget limits as started (the last `limits` event), else the spec's max hours from the
    start of billing, else the end of the month (the monthly budget's period)."""
    events = store.events(run.id, kinds=["limits"])
    if events:
        ev = events[-1]
        ends = [
            float(ev["time"]) + float(v)
            for v in (ev.get("max_seconds"), ev.get("budget_seconds"))
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if ends:
            return max(0.0, min(ends) - now)
    hours = run.spec.get("max_hours")
    if isinstance(hours, int | float) and hours > 0 and segs:
        return max(0.0, min(s.start for s in segs) + float(hours) * 3600.0 - now)
    return max(0.0, _month_end(now) - now)


def committed(
    store: Store, settings: Settings, *, exclude: str | None = None, now: float | None = None
) -> list[Held]:
    """What every other active run may still spend: its burn now until its earliest limit,
    plus what its own stop costs, at most what is left of its own run budget.

    Each launch and each agent's budget limit count this as spent, so runs started one
    after another share the monthly and provider budgets: the limits handed to their
    agents add up to no more than the budget, with gpuctl closed.
    """
    now = time.time() if now is None else now
    out = []
    billing = billing_lookup(settings)
    for run in store.list_runs(active=True):
        if run.id == exclude or not run.status.active:
            continue
        segs = store.segments(run_id=run.id)
        live = [s for s in segs if s.end is None and s.start <= now]
        burn = sum(s.rate_per_hour for s in live)
        if burn <= 0:
            if not segs:  # admitted, its machine not billing yet: it holds its estimate
                reserved = store.events(run.id, kinds=[RESERVED])
                amount = float(reserved[-1].get("amount") or 0.0) if reserved else 0.0
                if amount > 0:
                    out.append(Held(run.id, run.provider, amount, 0.0))
            continue
        seconds = _seconds_left(store, run, live, now) + stop_margin_seconds(settings, run.provider)
        amount = burn * seconds / 3600.0
        if run.budget:
            spent_r = sum(c.amount for c in charges(segs, billing, now))
            amount = min(amount, max(0.0, run.budget - spent_r))
        out.append(Held(run.id, run.provider, amount, seconds))
    return out


def launch_refusal(
    store: Store,
    settings: Settings,
    spec: LaunchSpec,
    estimate_cost: float | None,
    *,
    price_per_hour: float | None = None,
    now: float | None = None,
) -> BudgetExceeded | None:
    """Why a launch must not go ahead, or None: what is left of a budget (after what the
    active runs may still spend) is used up, below the provider's minimum charge, below
    the estimate, or the price is unknown so the budget cannot be checked. A known price
    with no estimate (a project command nobody has timed yet) is admitted.

    `--force` is the caller's.
    """
    left = remaining_for(store, settings, spec.provider, spec.budget, run_id=spec.run_id, now=now)
    if left is None:
        return None
    amount, which = left
    hint = (
        "raise the budget, choose a smaller preset or a cheaper offer, or add --force to "
        "launch anyway (the guard still stops the run at 100%)"
    )
    if amount <= 0:
        return BudgetExceeded(f"{which} is used up ({money(-amount)} over)", hint=hint)
    if estimate_cost is None and price_per_hour is None:
        return BudgetExceeded(
            f"the price of this machine is unknown, so {which} cannot be checked",
            hint="name an instance type with a known price, or add --force to launch "
            "anyway (the meter cannot count a machine without a price)",
        )
    billing = billing_for(settings, spec.provider)
    if price_per_hour and billing.minimum_seconds > 0:
        minimum = price_per_hour * billing.minimum_seconds / 3600.0
        if minimum > amount:
            return BudgetExceeded(
                f"{which}"
                + (f" ({money(amount)} left)" if "left" in which else "")
                + " is below the provider's minimum charge: "
                f"{money(minimum)} ({billing.minimum_seconds:.0f} s at {rate(price_per_hour)})",
                hint=f"raise the budget to more than {money(minimum)}, or choose a cheaper "
                "offer; a budget stop cannot bill less than the minimum",
            )
    if estimate_cost is None:  # a known price, no pace yet (a command's first run): the
        return None  # guard on the machine stops it at the budget, nothing to compare here
    if estimate_cost > amount:
        return BudgetExceeded(
            f"estimated {money(estimate_cost)} exceeds {which}"
            + (f": {money(amount)} left" if "left" in which else ""),
            hint=hint,
        )
    return None


def agent_budget_seconds(
    store: Store,
    settings: Settings,
    spec: LaunchSpec,
    instance: Instance,
    *,
    now: float | None = None,
) -> float | None:
    """The run's budget as a time limit for the agent on the machine: remaining / price.

    The tightest of the run, monthly and provider budgets (the latter two less what the
    other active runs may still spend, see `committed`), at this instance's rate (compute
    plus its disk), less the time a stop takes to end the bill (`stop_margin_seconds`).
    It holds with gpuctl closed; the agent measures it on its own monotonic clock, so a
    machine clock that disagrees with ours does not matter.
    """
    if not instance.price_per_hour:
        return None
    left = remaining_for(store, settings, spec.provider, spec.budget, run_id=spec.run_id, now=now)
    if left is None:
        return None
    rate = float(instance.price_per_hour) + (
        storage_rate(billing_for(settings, instance.provider), instance.disk_gb) or 0.0
    )
    margin = stop_margin_seconds(settings, instance.provider)
    return max(0.0, max(0.0, left[0]) / rate * 3600.0 - margin)
