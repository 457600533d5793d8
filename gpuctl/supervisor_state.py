"""Whether a supervisor runs for a data directory, read without ever waiting for it.

The supervisor holds an exclusive flock on <data dir>/supervisor.lock for its whole life
and writes who it is into that file; the kernel drops the lock when the process dies
(kill -9 included), so a stale file never reads as "running". The CLI and the TUI ask
`current`, which only tries a shared lock without blocking.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "supervisor.lock"


@dataclass(frozen=True)
class SupervisorInfo:
    """The supervisor that holds a data directory: who, since when."""

    pid: int
    since: float
    data_dir: str
    host: str

    def since_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))

    def line(self) -> str:
        return f"supervisor: running since {self.since_text()} (pid {self.pid})"

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class AlreadyRunning(Exception):
    """Another process holds the lock (its info, when it could be read)."""

    def __init__(self, info: SupervisorInfo | None) -> None:
        super().__init__("a supervisor already runs")
        self.info = info


class Held:
    """The lock, held until `release` or the end of the process."""

    def __init__(self, fd: int, info: SupervisorInfo) -> None:
        self.fd = fd
        self.info = info

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            os.ftruncate(self.fd, 0)  # nobody reads a stopped supervisor as running
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1


def lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / LOCK_NAME


def hold(data_dir: Path) -> Held:
    """Take the data directory's supervisor lock, or raise AlreadyRunning at once."""
    path = lock_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(_read(path)) from None
    info = SupervisorInfo(os.getpid(), time.time(), str(data_dir), socket.gethostname())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info.to_dict()).encode(), 0)
    os.fsync(fd)
    return Held(fd, info)


def current(data_dir: Path) -> SupervisorInfo | None:
    """The running supervisor of data_dir, or None; never blocks, never raises."""
    path = lock_path(data_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path) or SupervisorInfo(0, 0.0, str(data_dir), "")
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)  # we got it: nobody holds it
        return None
    finally:
        os.close(fd)


def _read(path: Path) -> SupervisorInfo | None:
    try:
        data = json.loads(path.read_text() or "{}")
        return SupervisorInfo(
            int(data["pid"]), float(data["since"]), str(data["data_dir"]), str(data["host"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
