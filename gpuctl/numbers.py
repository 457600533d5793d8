"""One check for every number a user gives gpuctl: a flag, a config value, a preset limit.

NaN compares false with everything, so `hours > limit` never fires and a watchdog fed
NaN never stops; an infinite budget or price turns every sum into inf or NaN. Both are
refused where they enter, with the name of what was wrong.
"""

from __future__ import annotations

import math

from .errors import ConfigError


def finite_number(
    value: object,
    what: str,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    hint: str = "",
) -> float:
    """`value` as a float that is finite and within the bounds, else a ConfigError."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{what} must be a number, got {value!r}", hint=hint) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}", hint=hint)
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value!r}", hint=hint)
    if above == 0 and not number > 0:
        raise ConfigError(f"{what} must be a positive number, got {value!r}", hint=hint)
    if above is not None and not number > above:
        raise ConfigError(f"{what} must be more than {above:g}, got {value!r}", hint=hint)
    if at_least is not None and not number >= at_least:
        raise ConfigError(f"{what} must be at least {at_least:g}, got {value!r}", hint=hint)
    if below is not None and not number < below:
        raise ConfigError(f"{what} must be less than {below:g}, got {value!r}", hint=hint)
    return number


def finite_positive(value: object, what: str, *, hint: str = "") -> float:
    """A finite number > 0: hours, budgets, prices that bound a spend."""
    return finite_number(value, what, above=0.0, hint=hint)


def finite_nonnegative(value: object, what: str, *, hint: str = "") -> float:
    """A finite number >= 0: a price that may be free, an idle limit where 0 means off."""
    return finite_number(value, what, at_least=0.0, hint=hint)
