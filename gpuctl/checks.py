"""How one config.toml value is checked: its type, its range, that it is finite.

Each check takes (value, what) and returns the value as gpuctl uses it, or raises a
ConfigError naming `what` (e.g. "profiles.aws.poll_seconds"); settings.py adds the file
and line. Shared by the top-level tables and the provider profile schemas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .errors import ConfigError
from .numbers import finite_number
from .prices import price_per_hour

Check = Callable[[Any, str], Any]


def number(**bounds: float) -> Check:
    return lambda value, what: finite_number(value, what, **bounds)


def integer(low: int, high: int) -> Check:
    def check(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
        return value

    return check


def string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} must be a non-empty string, got {value!r}")
    return value


def strings(value: Any, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f'{what} must be a list of names, e.g. ["a", "b"], got {value!r}')
    return value


def command(value: Any, what: str) -> list[str]:
    """A command line as a list: empty would turn the machine's shutdown into nothing."""
    strings(value, what)
    if not value:
        raise ConfigError(
            f"{what} is empty: the agent's limits could not end the machine",
            hint='give the command as a list, e.g. ["sudo", "shutdown", "-h", "now"]',
        )
    return value


def price(value: Any, what: str) -> float:
    """The meter's rule for a profile price (gpuctl/prices.py), NaN refused first."""
    if isinstance(value, float) and not math.isfinite(value):
        finite_number(value, what)
    name = what.split(".")[1] if what.count(".") == 2 else what
    amount = price_per_hour(value, name)
    return float(amount or 0.0)


def monthly(value: Any, what: str) -> float:
    amount = finite_number(value, what)
    if amount <= 0:
        raise ConfigError(
            f"{what} must be positive, got {value!r}", hint="remove it for no monthly budget"
        )
    return amount


def currency(value: Any, what: str) -> str:
    if not isinstance(value, str) or value.upper() != "USD":
        raise ConfigError(
            f"unknown currency {value!r} in {what}",
            hint='cloud prices are in USD; set currency = "USD" or remove it',
        )
    return "USD"


def boolean(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{what} must be true or false, got {value!r}")
    return value


def table(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a table ([{what}] or {{ key = value }}), got {value!r}")
    return value


def choice(*choices: str, fold: bool = False, hint: str = "") -> Check:
    def check(value: Any, what: str) -> str:
        text = value.upper() if fold and isinstance(value, str) else value
        if text not in choices:
            raise ConfigError(
                f"{what} must be {' or '.join(repr(c) for c in choices)}, got {value!r}",
                hint=hint,
            )
        return text

    return check


def per_provider(value: Any, what: str) -> dict[str, float]:
    return {
        name: finite_number(amount, f"{what}.{name}", above=0.0)
        for name, amount in table(value, what).items()
    }


def notify_urls(value: Any, what: str) -> list[str]:
    """Apprise URLs (scheme://...). They hold tokens: an error names the entry, never
    its text."""
    if not isinstance(value, list):
        raise ConfigError(f'{what} must be a list of URLs, e.g. ["json://host/hook"]')
    for i, url in enumerate(value):
        if not isinstance(url, str) or "://" not in url.strip() or url.strip().startswith("://"):
            raise ConfigError(
                f"{what}[{i}] is not a notification URL (scheme://...)",
                hint="e.g. ntfy://topic, json://host:port/path, https://hooks.example/x",
            )
    return [u.strip() for u in value]


def names_of(known: Iterable[str]) -> Check:
    """A list drawn from `known` (e.g. [notify] events)."""
    names = tuple(known)

    def check(value: Any, what: str) -> list[str]:
        strings(value, what)
        for name in value:
            if name not in names:
                raise ConfigError(
                    f"{what}: unknown event '{name}'", hint=f"known: {', '.join(names)}"
                )
        return value

    return check
