"""One lock file shared by gpuctl processes (the CLI, the TUI, scripts) for a
read-decide-write step that must not interleave: pinning a host key, a launch's budget
check and the record of the run it admits."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(lock: Path) -> Iterator[None]:
    """Hold `lock` (created 0600 if missing) exclusively; waits for another holder.

    flock locks belong to the open file, so two threads of one process exclude each
    other as well as two processes do.
    """
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
