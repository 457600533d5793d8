"""The one way gpuctl writes money, rates, durations, ages and shares.

What a user must never read: an unknown price as "$0", a sum that is not zero as "$0.00",
"$nan", a budget at 99.7% as "100%", or a length in a unit that changes its meaning.
"""

from __future__ import annotations

import math

import pytest

from gpuctl.format import BLANK, age, duration, money, percent, rate, rough_duration
from gpuctl.models import Instance, InstanceState

NOT_NUMBERS = [math.nan, math.inf, -math.inf]


# -- unknown is not zero -------------------------------------------------------------------------


def test_unknown_money_and_rates_never_read_as_zero() -> None:
    assert money(None) == "$?"
    assert rate(None) == "$?/h"
    for text in (money(None), rate(None), money(None, unknown=BLANK), rate(None, unknown=BLANK)):
        assert "0" not in text
    assert money(None, unknown=BLANK) == "-" and rate(None, unknown=BLANK) == "-"
    assert money(None, unknown="N/A", symbol=False) == "N/A"
    assert duration(None) == "-"


@pytest.mark.parametrize(("price", "text"), [(None, "$?/h"), (1.99, "$1.990/h"), (0.0, "$0.000/h")])
def test_a_powered_off_machine_says_what_it_still_bills(price: float | None, text: str) -> None:
    """`gpuctl ls` and the control center's state column: an unknown price is not free."""
    off = Instance(
        "amd", "d-1", "r1", "atl1", "mi300x", InstanceState.STOPPED, price_per_hour=price
    )
    assert off.state_label(billed_when_stopped=True) == f"off, still billing {text}"


@pytest.mark.parametrize("tiny", [0.001, 0.0049, 1e-9])
def test_a_sum_that_is_not_zero_never_reads_as_zero(tiny: float) -> None:
    assert money(tiny) == "<$0.01"
    assert money(-tiny) == "-<$0.01"
    assert money(tiny, symbol=False) == "<0.01"
    assert rate(tiny / 10) == "<$0.001/h"
    assert percent(tiny / 100) == "<1%"


def test_zero_is_zero() -> None:
    assert money(0.0) == "$0.00"
    assert money(-0.0) == "$0.00"
    assert rate(0) == "$0.000/h"
    assert percent(0) == "0%"


# -- NaN and infinity are refused ------------------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_NUMBERS)
def test_nan_and_infinity_are_refused_not_printed(bad: float) -> None:
    for fmt in (money, rate, duration, rough_duration, age, percent):
        with pytest.raises(ValueError, match="finite"):
            fmt(bad)


@pytest.mark.parametrize("bad", ["1.5", True])
def test_a_non_number_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="number"):
        money(bad)  # type: ignore[arg-type]


# -- rounding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dollars", "text"),
    [
        (4.98, "$4.98"),
        (4.984, "$4.98"),
        (4.986, "$4.99"),
        (1250, "$1,250.00"),
        (1234567.891, "$1,234,567.89"),
        (-0.5, "-$0.50"),
        (-0.004, "-<$0.01"),
        (0.005001, "$0.01"),
    ],
)
def test_money_rounds_to_cents_with_thousands(dollars: float, text: str) -> None:
    assert money(dollars) == text


def test_money_digits_and_symbol() -> None:
    assert money(36, digits=3) == "$36.000"
    assert money(200, digits=0) == "$200"
    assert money(1.0, symbol=False) == "1.00"
    assert money(1.99, digits=3, symbol=False) == "1.990"


def test_rates_have_three_places_because_prices_differ_in_the_third() -> None:
    assert rate(1.992) == "$1.992/h"
    assert rate(0.526) == "$0.526/h"  # not "$0.53/h"
    assert rate(1.99) == "$1.990/h"
    assert rate(0.35, digits=4) == "$0.3500/h"
    assert rate(-1.0) == "-$1.000/h"


@pytest.mark.parametrize(
    ("fraction", "text"),
    [(0.42, "42%"), (0.81, "81%"), (0.994, "99%"), (0.999, "99%"), (1.0, "100%"), (1.5, "150%")],
)
def test_percent_says_100_only_when_all_is_used(fraction: float, text: str) -> None:
    assert percent(fraction) == text


# -- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (42, "42s"),
        (59.99, "59s"),  # cut, as a clock: never "60s"
        (60, "1m00s"),
        (700, "11m40s"),
        (3599.9, "59m59s"),
        (3600, "1h00m"),
        (3720, "1h02m"),
        (4320, "1h12m"),
        (86399, "23h59m"),
        (86400 + 4 * 3600 + 59, "1d04h"),
        (49 * 3600, "2d01h"),
    ],
)
def test_duration_is_compact_and_cut(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize("negative", [-0.5, -1, -3600])
def test_a_negative_duration_is_zero_not_minus(negative: float) -> None:
    """Clock skew or an overdue ETA: '0s', never '-1m00s' or '-1s'."""
    assert duration(negative) == "0s"
    assert rough_duration(negative) == "0 s"
    assert age(negative) == "just now"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (15, "15 s"),
        (60, "60 s"),
        (119.4, "119 s"),  # "2 min" would be off by a sixth
        (119.6, "2 min"),
        (180, "3 min"),
        (3569, "59 min"),
        (3571, "1.0 h"),  # never "60 min"
        (9000, "2.5 h"),
        (7200, "2.0 h"),
        (48 * 3600, "48.0 h"),
    ],
)
def test_rough_duration_in_words(seconds: float, text: str) -> None:
    assert rough_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "just now"),
        (0.9, "just now"),
        (1, "1 s ago"),
        (45.7, "45 s ago"),
        (192, "3 min ago"),
        (5 * 3600 + 59 * 60, "5 h ago"),
        (47 * 3600, "47 h ago"),
        (3 * 86400, "3 days ago"),
    ],
)
def test_age(seconds: float, text: str) -> None:
    assert age(seconds) == text
