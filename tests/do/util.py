"""Helpers shared by the DigitalOcean provider tests."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from gpuctl.events import Event

# Realistic shapes; never real secrets.
DO_TOKEN = "dop_v1_" + "0123456789abcdef" * 4
AMD_TOKEN = "amddev_" + "fedcba9876543210" * 4


@dataclass
class Clock:
    """A fake monotonic clock; the provider's sleeps advance it instead of waiting."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def drain(gen: Generator[Event, None, Any]) -> tuple[list[Event], Any]:
    """Run a provider generator to the end: (events, return value)."""
    events: list[Event] = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value
