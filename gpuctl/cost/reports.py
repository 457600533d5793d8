"""`gpuctl cost report`: cost over a window, grouped by run, day or provider."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuctl.errors import ConfigError
from gpuctl.models import PriceSegment, Run
from gpuctl.settings import Settings
from gpuctl.state import Store

from .billing import COMPUTE, billing_lookup
from .periods import day_start, month_start
from .segment_math import Charge, charges

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing


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
    owed = charges(segments, billing_of or billing_lookup(settings), now)
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
