"""Run a generator of events against a deadline, for waits that must not be open-ended.

A checkpoint pull after a spot notice races the machine's end: SFTP over a link that
stalls (the machine shutting down, a laptop on a bad network) can block for minutes in
a socket read. The generator runs on a worker thread; its events are passed on as they
come, and when the deadline passes the caller learns so at once (and closes the link,
which ends the worker's blocked read).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What the generator returned, or that it did not finish in time."""

    finished: bool
    value: T | None = None


_DONE = object()


def within(gen: Generator[Any, None, T], seconds: float) -> Generator[Any, None, Outcome[T]]:
    """Yield gen's events until it returns (Outcome(True, value)) or `seconds` pass
    (Outcome(False)). An exception in gen is raised here, in the caller's thread."""
    events: queue.Queue[Any] = queue.Queue()
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = yield_all(gen, events)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            events.put(_DONE)

    threading.Thread(target=work, name="gpuctl-deadline", daemon=True).start()
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return Outcome(False)
        try:
            item = events.get(timeout=left)
        except queue.Empty:
            return Outcome(False)
        if item is _DONE:
            break
        yield item
    if "error" in result:
        raise result["error"]
    return Outcome(True, result.get("value"))


def yield_all(gen: Generator[Any, None, T], sink: queue.Queue[Any]) -> T:
    """Drive gen to its end, putting each event into sink; its return value."""
    while True:
        try:
            sink.put(next(gen))
        except StopIteration as stop:
            return stop.value
