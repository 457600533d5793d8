"""Ledger writes: open and close price segments as machines come up, stop and go, and
re-price spot machines when their zone's price moves.

Money is never stored, only these segments (a frozen $/h over a stretch of time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from gpuctl.models import Instance, Market, PriceSegment
from gpuctl.settings import Settings
from gpuctl.state import Store

from .billing import COMPUTE, STORAGE, billing_for, storage_rate


def _start_time(instance: Instance, start: float | None, now: float) -> float:
    """When billing began: the provider's launch time is the truth, but never in our future
    (a machine clock ahead of ours is skew, not a launch that has not happened yet)."""
    when = start if start is not None else instance.launched_at
    return now if when is None else min(float(when), now)


def open_segment_of(store: Store, instance: Instance, kind: str) -> PriceSegment | None:
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
    existing = open_segment_of(store, instance, STORAGE)
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
    seg = open_segment_of(store, instance, COMPUTE)
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
        seg = open_segment_of(store, inst, COMPUTE)
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
