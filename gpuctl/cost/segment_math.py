"""Segment arithmetic: what price segments owe at an explicit `now`, by billing rules.

Pure functions, no store: the meter, budgets and reports are sums over these charges, so
they agree with each other and tests freeze the clock.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpuctl.models import PriceSegment

from .billing import COMPUTE, SESSION_GAP

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing


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


def elapsed_hours(segs: Sequence[PriceSegment], now: float) -> float:
    compute = [s for s in segs if s.kind == COMPUTE] or list(segs)
    if not compute:
        return 0.0
    first = min(s.start for s in compute)
    last = max((s.end if s.end is not None else now) for s in compute)
    return max(0.0, min(last, now) - min(first, now)) / 3600.0


def instance_hours(segs: Iterable[PriceSegment], lo: float, now: float) -> float:
    total = 0.0
    for s in segs:
        if s.kind != COMPUTE:
            continue
        end = min(s.end if s.end is not None else now, now)
        total += max(0.0, end - max(s.start, lo))
    return total / 3600.0
