"""The cost ledger: price segments frozen at launch, billed by each provider's rules.

An instance's price is written as a segment the moment it comes up, so what a run cost
is known even after the instance (or the provider's API) is gone.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable

from .models import Instance, PriceSegment
from .settings import Settings
from .state import Store


def billing_for(settings: Settings, profile_name: str):  # -> providers.base.Billing
    from gpuctl.providers.base import Billing, provider_class

    try:
        kind = settings.profile(profile_name).provider
        return provider_class(kind).billing
    except Exception:
        return Billing()


def open_compute(
    store: Store, instance: Instance, run_id: str | None, start: float | None = None
) -> PriceSegment | None:
    """Freeze the instance's hourly price into the ledger (idempotent per instance)."""
    if instance.price_per_hour is None:
        return None
    for seg in store.segments(provider=instance.provider, instance_id=instance.id, open_only=True):
        if seg.kind == "compute":
            return seg
    return store.open_segment(
        PriceSegment(
            provider=instance.provider,
            instance_id=instance.id,
            run_id=run_id,
            instance_type=instance.instance_type,
            region=instance.region,
            market=instance.market.value,
            rate_per_hour=float(instance.price_per_hour),
            start=start or instance.launched_at or time.time(),
        )
    )


def close_instance(store: Store, instance: Instance, end: float | None = None) -> None:
    store.close_segments(instance.provider, instance.id, end or time.time())


def instance_cost(
    segments: Iterable[PriceSegment], now: float, minimum_seconds: float = 0.0
) -> float:
    """Cost of one instance's segments; the billing minimum applies to its total time."""
    total = 0.0
    seconds = 0.0
    last_rate = 0.0
    for seg in segments:
        duration = max(0.0, (seg.end if seg.end is not None else now) - seg.start)
        seconds += duration
        total += duration * seg.rate_per_hour / 3600.0
        last_rate = seg.rate_per_hour
    if 0 < seconds < minimum_seconds:
        total += (minimum_seconds - seconds) * last_rate / 3600.0
    return total


def spent(
    store: Store, settings: Settings, *, run_id: str | None = None, now: float | None = None
) -> tuple[float, float]:
    """(dollars spent, dollars per hour burning now) for a run, or for everything."""
    now = now or time.time()
    by_instance: dict[tuple[str, str], list[PriceSegment]] = defaultdict(list)
    for seg in store.segments(run_id=run_id):
        if seg.kind == "compute":
            by_instance[(seg.provider, seg.instance_id)].append(seg)
    total = burn = 0.0
    for (provider, _), segs in by_instance.items():
        billing = billing_for(settings, provider)
        total += instance_cost(segs, now, billing.minimum_seconds)
        burn += sum(s.rate_per_hour for s in segs if s.end is None)
    return total, burn
