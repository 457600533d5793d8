"""Graceful stop requests: SIGTERM/SIGINT or a STOP file in the run dir.

A request only sets a flag; the loop finishes its current step, writes last.pt and
exits 0. A repeat more than DUPLICATE_SECONDS later means "now": KeyboardInterrupt.
Repeats inside that window are the same request delivered twice (a terminal's Ctrl-C
reaches torchrun and its workers, and torchrun forwards it again; an agent signals
the whole process group).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any

from .protocol import StopReason

FILE_CHECK_SECONDS = 0.5
DUPLICATE_SECONDS = 2.0


class _Early:
    """A stop that arrived before StopRequest.install (while torch imports): kept."""

    reason: str | None = None
    at = 0.0


def _early(signum: int, _frame: FrameType | None) -> None:
    if _Early.reason is None:
        _Early.reason, _Early.at = signal.Signals(signum).name, time.monotonic()


def catch_early() -> None:
    """The trainer's first act: SIGTERM/SIGINT only set a flag from here on.

    Without it, a `gpuctl stop` right after the start kills the trainer mid-import
    (exit -15, which reads as a failure); with it the loop stops at its first step,
    writes last.pt and status interrupted, and exits 0.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _early)


class StopRequest:
    """Collects stop requests; `requested()` is cheap enough to call every step."""

    def __init__(self, stop_file: Path | None) -> None:
        self.stop_file = stop_file
        self.reason: str | None = None
        self._next_file_check = 0.0
        self._first_signal = 0.0
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Catch SIGTERM (spot notice, gpuctl stop) and SIGINT (Ctrl-C)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        if _Early.reason is not None and self.reason is None:
            self.reason, self._first_signal = _Early.reason, _Early.at

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._first_signal:
            if now - self._first_signal > DUPLICATE_SECONDS:
                raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
            return
        self._first_signal = now
        if self.reason is None:
            self.reason = signal.Signals(signum).name

    def requested(self) -> bool:
        """True once a signal arrived or the STOP file exists (checked twice a second)."""
        if self.reason is not None:
            return True
        if self.stop_file is not None:
            now = time.monotonic()
            if now >= self._next_file_check:
                self._next_file_check = now + FILE_CHECK_SECONDS
                if self.stop_file.exists():
                    self.reason = StopReason.STOP_FILE
                    self.stop_file.unlink(missing_ok=True)  # so a resume does not stop at once
        return self.reason is not None
