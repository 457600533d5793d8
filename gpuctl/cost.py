"""The cost ledger, the meter, budgets and the report.

Money is derived, never stored: the state store keeps price segments (a rate in $/h over
a stretch of time, frozen when the instance came up or when its spot price moved), and
every number shown anywhere is a pure function of those segments, the provider's billing
rules and an explicit `now`. So what a run cost is known after its instance (or the
provider's API) is gone, two windows showing the meter agree, and tests freeze the clock.

Days and months are the user's local calendar ("spent today" is their today).
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import BudgetExceeded, ConfigError
from .format import money, percent, rate, rough_duration
from .models import CostLine, Instance, InstanceState, LaunchSpec, Market, PriceSegment, Run
from .prices import price_per_hour
from .settings import Profile, Settings
from .state import Store

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing

HOURS_PER_MONTH = 730.0  # how AWS turns GB-month storage prices into hourly ones
SESSION_GAP = 1.0  # seconds between two segments that still count as one billing session
COMPUTE = "compute"
STORAGE = "storage"

# -- billing rules: one table, read from the provider classes -----------------------------------

_BILLING: dict[str, Billing] = {}


def billing_of_kind(kind: str) -> Billing:
    """The billing rules of a provider kind (aws, digitalocean, local, ssh), cached."""
    from gpuctl.driver_registry import provider_class
    from gpuctl.providers.base import Billing

    if kind not in _BILLING:
        try:
            _BILLING[kind] = provider_class(kind).billing
        except ConfigError:
            _BILLING[kind] = Billing()  # unknown driver: per second, 60 s minimum
    return _BILLING[kind]


def billing_table() -> dict[str, Billing]:
    """Every known provider kind's billing rules: AWS per second with a 60 s minimum,
    DigitalOcean per second with 5 min and powered-off droplets billed, local and ssh
    at the profile's price with no minimum."""
    from gpuctl.driver_registry import kinds

    return {kind: billing_of_kind(kind) for kind in kinds()}


def billing_for(settings: Settings, profile_name: str) -> Billing:
    """Billing rules of a profile; a profile since removed from config falls back by name."""
    profile = settings.profiles.get(profile_name)
    return billing_of_kind(profile.provider if profile else profile_name)


def storage_rate(billing: Billing, disk_gb: float | None) -> float | None:
    """$/h for an attached disk billed by the GB-month (EBS), or None when not billed apart."""
    if not disk_gb or disk_gb <= 0 or billing.storage_gb_month <= 0:
        return None
    return disk_gb * billing.storage_gb_month / HOURS_PER_MONTH


def profile_price(profile: Profile) -> float | None:
    """A profile's `price_per_hour` override, checked: a number of USD per hour, >= 0."""
    return price_per_hour(profile.get("price_per_hour"), profile.name)


# -- calendar -------------------------------------------------------------------------------


def day_start(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def month_start(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, -1))


def month_key(now: float) -> str:
    return time.strftime("%Y-%m", time.localtime(now))


def days_in_month(now: float) -> int:
    t = time.localtime(now)
    return calendar.monthrange(t.tm_year, t.tm_mon)[1]


# -- ledger writes ---------------------------------------------------------------------------


def _start_time(instance: Instance, start: float | None, now: float) -> float:
    """When billing began: the provider's launch time is the truth, but never in our future
    (a machine clock ahead of ours is skew, not a launch that has not happened yet)."""
    when = start if start is not None else instance.launched_at
    return now if when is None else min(float(when), now)


def _open(store: Store, instance: Instance, kind: str) -> PriceSegment | None:
    for seg in store.segments(provider=instance.provider, instance_id=instance.id, open_only=True):
        if seg.kind == kind:
            return seg
    return None


def open_compute(
    store: Store,
    instance: Instance,
    run_id: str | None,
    start: float | None = None,
    *,
    now: float | None = None,
    source: str = "launch",
) -> PriceSegment | None:
    """Freeze the instance's hourly price into the ledger (idempotent per instance).

    Billing starts at the provider's launch time, but never inside time the ledger has
    already billed: a resumed machine whose launch time is its first boot is billed from
    the restart, not twice.
    """
    if instance.price_per_hour is None:
        return None
    segs = [
        s
        for s in store.segments(provider=instance.provider, instance_id=instance.id)
        if s.kind == COMPUTE
    ]
    existing = next((s for s in segs if s.end is None), None)
    if existing is not None:
        return existing
    now = time.time() if now is None else now
    begin = _start_time(instance, start, now)
    billed_until = max((s.end for s in segs if s.end is not None), default=None)
    if billed_until is not None and billed_until > begin:
        begin = min(billed_until, now)
    return store.open_segment(
        PriceSegment(
            provider=instance.provider,
            instance_id=instance.id,
            run_id=run_id,
            instance_type=instance.instance_type,
            region=instance.zone or instance.region,
            market=instance.market.value,
            rate_per_hour=float(instance.price_per_hour),
            start=begin,
            source=source,
        )
    )


def open_storage(
    store: Store,
    settings: Settings,
    instance: Instance,
    run_id: str | None,
    start: float | None = None,
    *,
    now: float | None = None,
    source: str = "launch",
) -> PriceSegment | None:
    """Start billing the attached disk (EBS), which goes on while the instance is stopped."""
    rate = storage_rate(billing_for(settings, instance.provider), instance.disk_gb)
    if rate is None:
        return None
    existing = _open(store, instance, STORAGE)
    if existing is not None:
        return existing
    now = time.time() if now is None else now
    return store.open_segment(
        PriceSegment(
            provider=instance.provider,
            instance_id=instance.id,
            run_id=run_id,
            instance_type=f"{instance.disk_gb:g} GB disk",
            region=instance.zone or instance.region,
            market="storage",
            rate_per_hour=rate,
            start=_start_time(instance, start, now),
            kind=STORAGE,
            source=source,
        )
    )


def record_launch(
    store: Store,
    settings: Settings,
    instance: Instance,
    run_id: str | None,
    *,
    now: float | None = None,
) -> list[PriceSegment]:
    """Everything an instance that just came up will bill: compute, and its disk if apart."""
    opened = [
        open_compute(store, instance, run_id, now=now),
        open_storage(store, settings, instance, run_id, now=now),
    ]
    return [s for s in opened if s is not None]


def record_spot_price(
    store: Store, instance: Instance, price: float, at: float
) -> PriceSegment | None:
    """The spot price of the instance's zone moved to `price` at `at`: bill it from then.

    Closes the open compute segment at `at` and opens one at the new rate, atomically.
    Returns the new segment, or None when nothing changed (same price, no open segment,
    or `at` not inside the open segment).
    """
    if price < 0 or not math.isfinite(price):
        raise ValueError(f"bad spot price {price!r}")
    seg = _open(store, instance, COMPUTE)
    if seg is None or seg.id is None or abs(seg.rate_per_hour - price) < 1e-12:
        return None
    return store.split_segment(seg.id, at, price, source="spot")


def backfill_spot_prices(
    store: Store, instance: Instance, points: Iterable[tuple[float, float]]
) -> int:
    """Apply spot price history (time, price) to the instance's compute segments.

    Used on the next contact after gpuctl was closed: each point re-prices the segment
    that contains it from that moment on. Returns how many segments were split.
    """
    changed = 0
    for at, price in sorted(points):
        if price < 0 or not math.isfinite(price):
            continue
        for seg in store.segments(provider=instance.provider, instance_id=instance.id):
            if seg.kind != COMPUTE or seg.id is None or at <= seg.start:
                continue
            if seg.end is not None and at >= seg.end:
                continue
            if abs(seg.rate_per_hour - price) >= 1e-12 and store.split_segment(
                seg.id, at, price, source="spot"
            ):
                changed += 1
            break
    return changed


def sync_spot_prices(store: Store, provider: Any, instances: Iterable[Instance]) -> int:
    """Re-price running spot instances from the provider's spot price history, if it has one.

    A provider declares Capability.SPOT_PRICE_HISTORY and answers
    `spot_price_history(instance, since) -> [(time, $/h), ...]` (AWS: DescribeSpotPriceHistory
    for the instance's type and zone, cached a few minutes). Called on every refresh, so
    prices are sampled while gpuctl runs and back-filled on the next contact.
    """
    from gpuctl.providers.base import Capability

    if Capability.SPOT_PRICE_HISTORY not in provider.capabilities:
        return 0
    changed = 0
    for inst in instances:
        if inst.market != Market.SPOT:
            continue
        seg = _open(store, inst, COMPUTE)
        if seg is None:
            continue
        try:
            points = provider.spot_price_history(inst, seg.start)
        except Exception:  # a failed price lookup must never break a listing
            continue
        changed += backfill_spot_prices(store, inst, points)
    return changed


def close_instance(store: Store, instance: Instance, end: float | None = None) -> None:
    """The instance is gone (terminated/destroyed): compute and storage both end."""
    store.close_segments(instance.provider, instance.id, time.time() if end is None else end)


def stop_instance(
    store: Store, settings: Settings, instance: Instance, at: float | None = None
) -> bool:
    """The instance was stopped: compute ends unless the provider bills stopped machines
    (DigitalOcean); the disk (EBS) goes on. True when compute billing ended."""
    if billing_for(settings, instance.provider).billed_when_stopped:
        return False
    at = time.time() if at is None else at
    store.close_segments(instance.provider, instance.id, at, kind=COMPUTE)
    return True


# -- arithmetic: pure functions over segments -----------------------------------------------


@dataclass(frozen=True)
class Charge:
    """Money owed for one segment up to `now`. A billing minimum top-up is its own charge
    with start == end (owed at the moment the session began)."""

    segment: PriceSegment
    start: float
    end: float
    amount: float

    @property
    def is_minimum(self) -> bool:
        return self.end == self.start and self.amount > 0

    def within(self, lo: float, hi: float) -> float:
        """The part of this charge that falls in [lo, hi)."""
        if self.end <= self.start:
            return self.amount if lo <= self.start < hi else 0.0
        overlap = min(self.end, hi) - max(self.start, lo)
        return self.amount * max(0.0, overlap) / (self.end - self.start)


def _sessions(segs: list[PriceSegment], now: float) -> list[list[PriceSegment]]:
    """Contiguous runs of segments: one start-to-stop of a machine (spot re-pricing inside)."""
    out: list[list[PriceSegment]] = []
    last_end: float | None = None
    for seg in sorted(segs, key=lambda s: (s.start, s.id or 0)):
        if out and last_end is not None and seg.start - last_end <= SESSION_GAP:
            out[-1].append(seg)
        else:
            out.append([seg])
        last_end = seg.end if seg.end is not None else now
    return out


def charges(
    segments: Iterable[PriceSegment], billing_of: Callable[[str], Billing], now: float
) -> list[Charge]:
    """What every segment owes at `now`, by its provider's rules.

    Compute is billed per session (launch or start to stop/terminate): per second, or per
    started hour, with the provider's minimum per session. Storage is billed by time, no
    minimum. Time after `now` (a segment from a clock ahead of ours) owes nothing yet.
    """
    groups: dict[tuple[str, str, str], list[PriceSegment]] = defaultdict(list)
    for seg in segments:
        groups[(seg.provider, seg.instance_id, seg.kind)].append(seg)
    out: list[Charge] = []
    for (provider, _, kind), segs in groups.items():
        billing = billing_of(provider)
        for session in _sessions(segs, now):
            seconds = 0.0
            started = False
            for seg in session:
                end = min(seg.end if seg.end is not None else now, now)
                start = min(seg.start, end)
                duration = max(0.0, end - start)
                started = started or seg.start <= now
                seconds += duration
                out.append(Charge(seg, start, end, duration * seg.rate_per_hour / 3600.0))
            if kind != COMPUTE or not started:
                continue
            billed = (
                math.ceil(seconds - 1e-9)
                if billing.per_second
                else (math.ceil(seconds / 3600.0 - 1e-9) * 3600.0)
            )
            billed = max(billed, billing.minimum_seconds, seconds)
            extra = billed - seconds
            if extra > 1e-9:
                last = session[-1]
                first = session[0]
                at = min(first.start, now)
                out.append(Charge(last, at, at, extra * last.rate_per_hour / 3600.0))
    return out


def instance_cost(
    segments: Iterable[PriceSegment], now: float, minimum_seconds: float = 0.0
) -> float:
    """Cost of one instance's compute segments, the minimum applied per session.

    Kept for callers that have no Billing at hand; `charges` is the full rule set.
    """
    from gpuctl.providers.base import Billing

    rules = Billing(per_second=True, minimum_seconds=minimum_seconds)
    return sum(c.amount for c in charges(segments, lambda _p: rules, now))


def burn_rate(segments: Iterable[PriceSegment], now: float) -> float:
    """$/h billing right now: every open segment that has begun."""
    return sum(s.rate_per_hour for s in segments if s.end is None and s.start <= now)


def _billing_lookup(settings: Settings) -> Callable[[str], Billing]:
    cache: dict[str, Billing] = {}

    def lookup(provider: str) -> Billing:
        if provider not in cache:
            cache[provider] = billing_for(settings, provider)
        return cache[provider]

    return lookup


def spent(
    store: Store, settings: Settings, *, run_id: str | None = None, now: float | None = None
) -> tuple[float, float]:
    """(dollars spent, dollars per hour burning now) for a run, or for everything."""
    now = time.time() if now is None else now
    segs = store.segments(run_id=run_id)
    total = sum(c.amount for c in charges(segs, _billing_lookup(settings), now))
    return total, burn_rate(segs, now)


# -- the meter -----------------------------------------------------------------------------------


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


def _elapsed_hours(segs: Sequence[PriceSegment], now: float) -> float:
    compute = [s for s in segs if s.kind == COMPUTE] or list(segs)
    if not compute:
        return 0.0
    first = min(s.start for s in compute)
    last = max((s.end if s.end is not None else now) for s in compute)
    return max(0.0, min(last, now) - min(first, now)) / 3600.0


def _instance_hours(segs: Iterable[PriceSegment], lo: float, now: float) -> float:
    total = 0.0
    for s in segs:
        if s.kind != COMPUTE:
            continue
        end = min(s.end if s.end is not None else now, now)
        total += max(0.0, end - max(s.start, lo))
    return total / 3600.0


def compute_meter(
    segments: Sequence[PriceSegment],
    runs: Sequence[Run],
    settings: Settings,
    now: float,
    *,
    billing_of: Callable[[str], Billing] | None = None,
) -> Meter:
    """The meter from segments and runs alone (pure: the TUI can call it on its snapshot)."""
    billing_of = billing_of or _billing_lookup(settings)
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
                _instance_hours(segs, month, now)
                if scope in ("total", "provider")
                else _elapsed_hours(segs, now)
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


def run_line(store: Store, settings: Settings, run_id: str, now: float | None = None) -> CostLine:
    """One run's meter line: burn now, spent, elapsed hours, budget, projected total."""
    now = time.time() if now is None else now
    run = store.get_run(run_id)
    segs = store.segments(run_id=run.id)
    items = charges(segs, _billing_lookup(settings), now)
    total = sum(c.amount for c in items)
    cl = CostLine(
        scope="run",
        key=run.id,
        burn_per_hour=burn_rate(segs, now),
        spent=total,
        spent_today=sum(c.within(day_start(now), math.inf) for c in items),
        spent_month=sum(c.within(month_start(now), math.inf) for c in items),
        hours=_elapsed_hours(segs, now),
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


# -- budgets -------------------------------------------------------------------------------------


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
    owed = owed if owed is not None else charges(segments, _billing_lookup(settings), now)
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


# Seconds from a budget stop until the bill ends: the trainer checkpoints, the results come
# down, the machine goes. A stop is triggered this much early at the current burn (and the
# agent's time limit is this much shorter), so the final cost stays within the budget.
def stop_margin_seconds(settings: Settings, provider: str) -> float:
    """Seconds a budget stop takes to end the bill on this profile: its driver's
    Billing.stop_margin_seconds, or the profile's own stop_margin_seconds."""
    profile = settings.profiles.get(provider)
    raw = profile.get("stop_margin_seconds") if profile is not None else None
    if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
        return max(0.0, float(raw))
    return billing_for(settings, provider).stop_margin_seconds


def stop_margin(settings: Settings, live: Iterable[PriceSegment]) -> float:
    """Dollars the stop of what these open segments bill will cost: margin x burn."""
    return sum(s.rate_per_hour * stop_margin_seconds(settings, s.provider) / 3600.0 for s in live)


def _relevant_segments(store: Store, now: float, run_id: str | None) -> list[PriceSegment]:
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
        _relevant_segments(store, now, run.id),
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
    segs = _relevant_segments(store, now, run_id)
    owed = charges(segs, _billing_lookup(settings), now)
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
    billing = _billing_lookup(settings)
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
    the estimate, or the price is unknown so the budget cannot be checked.

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
    if estimate_cost is None:
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


# -- what one instance costs now: one answer for `ls`, `cost` and the TUI ----------------------


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


# -- the ledger synced with what the providers report --------------------------------------------


@dataclass(frozen=True)
class LedgerFix:
    """A difference between the ledger and a provider's listing, and what was done."""

    provider: str
    instance_id: str
    run_id: str | None
    action: str  # metered | stopped | closed
    at: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _compute_billed(inst: Instance, billing: Billing) -> bool:
    if inst.state in (InstanceState.PENDING, InstanceState.RUNNING, InstanceState.STOPPING):
        return True
    return inst.state == InstanceState.STOPPED and billing.billed_when_stopped


def _ended_by(
    store: Store, segs: Sequence[PriceSegment], last_seen: float | None, now: float
) -> float:
    """When a machine that stopped or vanished unobserved stopped billing, at the latest.

    Not before we last saw it, and not after its run's max-hours limit (the agent on the
    machine enforces it with gpuctl closed), so a week away from gpuctl does not turn two
    hours of training into a week of phantom cost. With no limit known: now.
    """
    open_segs = [s for s in segs if s.end is None]
    if not open_segs:
        return now
    start = min(s.start for s in open_segs)
    bound = now
    run = store.find_run(open_segs[0].run_id) if open_segs[0].run_id else None
    hours = run.spec.get("max_hours") if run is not None else None
    if isinstance(hours, int | float) and hours > 0:
        idle = run.spec.get("idle_minutes") if run is not None else None
        grace = float(idle) * 60 if isinstance(idle, int | float) and idle > 0 else 0.0
        bound = start + float(hours) * 3600 + grace
    seen = start if last_seen is None else last_seen
    return max(start, min(now, max(seen, bound)))


def _metered_here(settings: Settings, inst: Instance) -> bool:
    """A machine found billing is metered only if gpuctl made it and no other installation
    says it did: a released one (`--instance`, after its run) and a colleague's are not."""
    return inst.managed and inst.owner in (None, settings.installation_id)


def sync_ledger(
    store: Store,
    settings: Settings,
    provider: str,
    instances: Sequence[Instance],
    *,
    complete: bool = True,
    last_seen: Mapping[str, float] | None = None,
    now: float | None = None,
) -> list[LedgerFix]:
    """Bring the ledger in line with a fresh listing of one provider.

    An instance billing now with no open segment (the ledger thought it gone, or a crash
    came between create and record) is flagged and metered from the provider's launch
    time, never twice for time already in the ledger. A machine the provider no longer
    lists (complete listings only) or that stopped is closed no earlier than we last saw
    it and no later than its run's max-hours limit (see `_ended_by`).
    """
    now = time.time() if now is None else now
    last_seen = last_seen or {}
    billing = billing_for(settings, provider)
    ledger: dict[str, list[PriceSegment]] = defaultdict(list)
    for seg in store.segments(provider=provider):
        ledger[seg.instance_id].append(seg)
    out: list[LedgerFix] = []
    listed = {i.id for i in instances if i.state != InstanceState.TERMINATED}
    for inst in instances:
        segs = ledger.get(inst.id, [])
        if inst.state == InstanceState.TERMINATED or not (inst.managed or segs):
            continue
        open_kinds = {s.kind for s in segs if s.end is None}
        seen = _ended_by(store, segs, last_seen.get(inst.id), now)
        if _compute_billed(inst, billing) and COMPUTE not in open_kinds:
            if inst.price_per_hour is None or not _metered_here(settings, inst):
                continue
            seg = open_compute(store, inst, inst.run_id, now=now, source="reconcile")
            start = seg.start if seg is not None else now
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(start))
            why = "the ledger had it gone" if segs else "it was not in the ledger"
            out.append(
                LedgerFix(
                    provider,
                    inst.id,
                    inst.run_id,
                    "metered",
                    start,
                    f"{provider} {inst.id} is {inst.state.value} but {why}: metering it from "
                    f"{when} ({rate(inst.price_per_hour)})",
                )
            )
            if STORAGE not in open_kinds:
                open_storage(store, settings, inst, inst.run_id, start, now=now, source="reconcile")
        elif not _compute_billed(inst, billing) and COMPUTE in open_kinds:
            if inst.stopped_at is not None:  # the provider knows when it stopped: bill to then
                begun = min(s.start for s in segs if s.end is None)
                seen = max(begun, min(now, float(inst.stopped_at)))
            store.close_segments(provider, inst.id, seen, kind=COMPUTE)
            out.append(
                LedgerFix(
                    provider,
                    inst.id,
                    inst.run_id,
                    "stopped",
                    seen,
                    f"{provider} {inst.id} is {inst.state.value}: compute billing ended",
                )
            )
    if complete:
        for instance_id, segs in ledger.items():
            if instance_id in listed or all(s.end is not None for s in segs):
                continue
            seen = _ended_by(store, segs, last_seen.get(instance_id), now)
            store.close_segments(provider, instance_id, seen)
            out.append(
                LedgerFix(
                    provider,
                    instance_id,
                    segs[0].run_id,
                    "closed",
                    seen,
                    f"{provider} {instance_id} is gone: billing closed at "
                    + time.strftime("%Y-%m-%d %H:%M", time.localtime(seen)),
                )
            )
    return out


# -- the report ----------------------------------------------------------------------------------

REPORT_BY = ("run", "day", "provider")


@dataclass(frozen=True)
class ReportRow:
    key: str
    cost: float
    hours: float  # instance-hours of compute in the window
    provider: str = ""
    preset: str = ""
    status: str = ""
    flagged: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "cost": round(self.cost, 6), "hours": round(self.hours, 6)}


@dataclass(frozen=True)
class Report:
    since: float
    now: float
    by: str
    rows: tuple[ReportRow, ...] = ()
    total: float = 0.0
    hours: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)


def parse_since(text: str, now: float | None = None) -> float:
    """'30d', '12h', '2w', 'today', 'month' or a date (YYYY-MM-DD) -> unix time."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    if value == "today":
        return day_start(now)
    if value == "month":
        return month_start(now)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([hdw])", value)
    if match:
        amount = float(match.group(1))
        unit = {"h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}[match.group(2)]
        return now - amount * unit
    try:
        return time.mktime(time.strptime(value, "%Y-%m-%d"))
    except ValueError:
        raise ConfigError(
            f"--since: cannot read '{text}'",
            hint="use a span like 30d, 12h, 2w, or 'today', 'month', or a date 2025-01-31",
        ) from None


def _days(lo: float, hi: float) -> list[tuple[str, float, float]]:
    out = []
    start = day_start(lo)
    while start < hi:
        t = time.localtime(start)
        nxt = time.mktime((t.tm_year, t.tm_mon, t.tm_mday + 1, 0, 0, 0, 0, 0, -1))
        out.append((time.strftime("%Y-%m-%d", t), start, nxt))
        start = nxt
    return out


def build_report(
    segments: Sequence[PriceSegment],
    runs: Sequence[Run],
    settings: Settings,
    *,
    since: float,
    by: str = "run",
    now: float,
    billing_of: Callable[[str], Billing] | None = None,
) -> Report:
    """Cost in [since, now] grouped by run, day or provider; rows add up to the total."""
    if by not in REPORT_BY:
        raise ConfigError(f"--by must be one of {', '.join(REPORT_BY)}, got '{by}'")
    owed = charges(segments, billing_of or _billing_lookup(settings), now)
    run_index = {r.id: r for r in runs}
    cost: dict[str, float] = defaultdict(float)
    hours: dict[str, float] = defaultdict(float)
    meta: dict[str, tuple[str, str, str]] = {}
    flagged: set[str] = set()

    def add(key: str, c: Charge, lo: float, hi: float) -> None:
        cost[key] += c.within(lo, hi)
        if c.segment.kind == COMPUTE and c.end > c.start:
            hours[key] += max(0.0, min(c.end, hi) - max(c.start, lo)) / 3600.0
        if c.segment.source == "reconcile":
            flagged.add(key)

    for c in owed:
        if c.end < since:
            continue
        seg = c.segment
        if by == "day":
            for key, lo, hi in _days(max(since, c.start), max(c.end, c.start) + 1e-6):
                add(key, c, max(lo, since), min(hi, now + 1e-6))
            continue
        if by == "provider":
            key = seg.provider
        else:
            key = seg.run_id or f"(no run) {seg.instance_id}"
            run = run_index.get(seg.run_id or "")
            meta[key] = (
                seg.provider,
                run.preset if run else "",
                run.status.value if run else "",
            )
        add(key, c, since, now + 1e-6)
    rows = []
    for key in sorted(cost, key=lambda k: (k if by == "day" else -cost[k], k)):
        if cost[key] <= 0 and hours[key] <= 0:
            continue
        provider, preset, status = meta.get(key, ("", "", ""))
        rows.append(
            ReportRow(
                key,
                cost[key],
                hours[key],
                provider=provider if by == "run" else (key if by == "provider" else ""),
                preset=preset,
                status=status,
                flagged=key in flagged,
            )
        )
    return Report(
        since=since,
        now=now,
        by=by,
        rows=tuple(rows),
        total=sum(r.cost for r in rows),
        hours=sum(r.hours for r in rows),
    )


def report(
    store: Store, settings: Settings, *, since: float, by: str = "run", now: float | None = None
) -> Report:
    """`gpuctl cost report` from the ledger, runs whose instances are gone included."""
    now = time.time() if now is None else now
    return build_report(
        store.segments(since=since), store.list_runs(), settings, since=since, by=by, now=now
    )
