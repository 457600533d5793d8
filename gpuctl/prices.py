"""The rule for a price a user writes (a profile's price_per_hour): USD per hour, >= 0.

Both the config loader (which checks it when config.toml is read) and the meter (which
bills with it) apply this one rule; it lives below both so neither imports the other.
"""

from __future__ import annotations

import math
import re

from .errors import ConfigError


def price_per_hour(raw: object, profile_name: str) -> float | None:
    """`raw` (a profile's price_per_hour) checked as a number of USD per hour, or None."""
    if raw is None:
        return None
    where = f"[profiles.{profile_name}] price_per_hour"
    if isinstance(raw, str):
        text = raw.strip()
        priced = re.fullmatch(
            r"([A-Za-z]{3})?\s*([$€£¥])?\s*[\d.,]+\s*([A-Za-z]{3})?\s*(/\s*h\w*)?", text
        )
        code = priced and (priced.group(1) or priced.group(3) or priced.group(2))
        if code and code.upper() not in ("USD", "$"):
            raise ConfigError(
                f"{where}: unknown currency '{code}' in {raw!r}",
                hint="prices are USD per hour: write a plain number, e.g. price_per_hour = 0.5",
            )
        raise ConfigError(
            f"{where} must be a number of USD per hour, got {raw!r}",
            hint="write it without quotes or units, e.g. price_per_hour = 0.5",
        )
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(
            f"{where} must be a number of USD per hour, got {raw!r}",
            hint="e.g. price_per_hour = 0.5",
        )
    if not math.isfinite(raw) or raw < 0:
        raise ConfigError(
            f"{where} must be zero or more, got {raw!r}",
            hint="0 means free (your own machine); e.g. price_per_hour = 0.5",
        )
    return float(raw)
