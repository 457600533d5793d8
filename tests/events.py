"""Run a lifecycle or provider generator to its end in a test."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

from gpuctl.events import Event

T = TypeVar("T")


def drain(gen: Generator[Event, None, T]) -> tuple[list[Event], T]:
    """(every event it yielded, its return value)."""
    events: list[Event] = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value
