"""How gpuctl writes money, rates, durations, ages and shares, in the CLI, the TUI and notices.

One place so that the same number reads the same everywhere, and so that two rules hold
for all of them: an unknown amount never shows as "$0" (a price nobody knows is not
free), and a NaN or infinite number is refused here rather than printed as "$nan" (one
that got this far is a bug upstream: settings refuse them where they enter).

Table cells pass ``unknown=BLANK``: their column header already names the quantity.
"""

from __future__ import annotations

import math

BLANK = "-"  # a table cell with nothing to show: unknown, or not applicable


def _finite(value: float, what: str) -> float:
    """`value` as a float, or ValueError: NaN compares false and would print as 'nan'."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return number


def _dollars(value: float, digits: int, symbol: bool) -> str:
    """'$1,234.50', '-$0.50', '<$0.01': a sum that is not zero never reads as zero."""
    sign = "$" if symbol else ""
    text = f"{abs(value):,.{digits}f}"
    if text.strip("0.,") == "":  # rounds to zero
        if value == 0:
            return sign + text
        text = "<" + sign + f"{10.0**-digits:.{digits}f}"
        return ("-" if value < 0 else "") + text
    return ("-" if value < 0 else "") + sign + text


def money(
    dollars: float | None, *, digits: int = 2, unknown: str = "$?", symbol: bool = True
) -> str:
    """A dollar amount: '$4.98', '$1,250.00'; None is `unknown` ('$?'), never '$0.00'.

    `symbol=False` drops the '$' for a column whose header carries it.
    """
    if dollars is None:
        return unknown
    return _dollars(_finite(dollars, "an amount of money"), digits, symbol)


def rate(dollars_per_hour: float | None, *, digits: int = 3, unknown: str = "$?/h") -> str:
    """A price or burn per hour: '$1.992/h'. Three places: AWS prices differ in the third.

    None is '$?/h' in a sentence; `unknown=BLANK` makes it '-' in a table.
    """
    if dollars_per_hour is None:
        return unknown
    return _dollars(_finite(dollars_per_hour, "a price per hour"), digits, True) + "/h"


def duration(seconds: float | None, *, unknown: str = BLANK) -> str:
    """A measured length in a stable width: '42s', '3m12s', '2h05m', '3d04h'.

    Whole units are cut, not rounded, as a clock does; a negative length (clock skew,
    an overdue ETA) is '0s'.
    """
    if seconds is None:
        return unknown
    s = max(0, int(_finite(seconds, "a duration")))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def rough_duration(seconds: float) -> str:
    """A length in words for estimates, limits and elapsed time: '15 s', '3 min', '2.5 h'.

    Never '0.00 h' for a short one; seconds up to two minutes, where '2 min' would be off
    by half.
    """
    s = max(0.0, _finite(seconds, "a duration"))
    if round(s) < 120:
        return f"{s:.0f} s"
    if round(s / 60) < 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def age(seconds: float) -> str:
    """How long ago, for a listing or a check: 'just now', '45 s ago', '3 min ago', '5 h ago'."""
    s = _finite(seconds, "an age")
    if s < 1:
        return "just now"  # also a time a little ahead of ours (clock skew)
    if s < 60:
        return f"{int(s)} s ago"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 2 * 86400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} days ago"


def price_origin(source: str, at: float | None, now: float) -> str:
    """A price's source and age: 'live API, just now', 'catalog 2025-01-15, 322 days ago'."""
    return source if at is None else f"{source}, {age(now - at)}"


def percent(fraction: float) -> str:
    """A share, say of a budget: '42%'. '100%' only once it is all used, '0%' only at zero."""
    f = _finite(fraction, "a fraction")
    text = f"{f:.0%}"
    if text == "0%" and f > 0:
        return "<1%"
    if text == "100%" and f < 1:
        return "99%"
    return text
