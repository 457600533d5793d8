"""Helpers shared by the DigitalOcean provider tests."""

from __future__ import annotations

from dataclasses import dataclass, field

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
