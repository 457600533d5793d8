"""The user's local calendar: "spent today" is their today, a month is their month."""

from __future__ import annotations

import calendar
import time


def day_start(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def month_start(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, 1, 0, 0, 0, 0, 0, -1))


def month_key(now: float) -> str:
    return time.strftime("%Y-%m", time.localtime(now))


def days_in_month(now: float) -> int:
    t = time.localtime(now)
    return calendar.monthrange(t.tm_year, t.tm_mon)[1]
