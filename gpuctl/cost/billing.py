"""How each provider bills: the rules read from its driver class, and a profile's overrides.

One table, cached per provider kind, so the ledger, the meter and the budgets apply the
same minimum, granularity and stopped-machine rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpuctl.errors import ConfigError
from gpuctl.prices import price_per_hour
from gpuctl.settings import Profile, Settings

if TYPE_CHECKING:
    from gpuctl.providers.base import Billing


HOURS_PER_MONTH = 730.0  # how AWS turns GB-month storage prices into hourly ones
SESSION_GAP = 1.0  # seconds between two segments that still count as one billing session
COMPUTE = "compute"
STORAGE = "storage"

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


def billing_lookup(settings: Settings) -> Callable[[str], Billing]:
    """Profile name -> its billing rules, memoised for one computation over many segments."""
    cache: dict[str, Billing] = {}

    def lookup(provider: str) -> Billing:
        if provider not in cache:
            cache[provider] = billing_for(settings, provider)
        return cache[provider]

    return lookup


def storage_rate(billing: Billing, disk_gb: float | None) -> float | None:
    """$/h for an attached disk billed by the GB-month (EBS), or None when not billed apart."""
    if not disk_gb or disk_gb <= 0 or billing.storage_gb_month <= 0:
        return None
    return disk_gb * billing.storage_gb_month / HOURS_PER_MONTH


def profile_price(profile: Profile) -> float | None:
    """A profile's `price_per_hour` override, checked: a number of USD per hour, >= 0."""
    return price_per_hour(profile.get("price_per_hour"), profile.name)


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
