"""A machine gpuctl can run commands on and move files to: this one, or one over SSH.

Everything after provisioning (sync, start, tail, stop, download) is written once in
terms of this small protocol (see rundir.py), so the local provider and every cloud
share one code path: the local e2e tests exercise the same logic a cloud run uses.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import RemoteError
from .events import Event
from .files import FileEntry


@dataclass(frozen=True)
class ExecResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self, what: str) -> ExecResult:
        """Raise a one-line RemoteError naming `what` and the last line of stderr."""
        if self.rc != 0:
            last = (self.stderr.strip() or self.stdout.strip()).splitlines()[-1:] or [""]
            raise RemoteError(
                f"{what} failed (exit {self.rc}): {last[0][:300]}",
                hint="see `gpuctl logs` or run `gpuctl ssh` to look on the machine",
            )
        return self


@dataclass(frozen=True)
class SyncStats:
    files: int  # files transferred
    bytes: int  # bytes transferred
    skipped: int  # files already up to date
    seconds: float
    method: str  # "copy" | "rsync" | "sftp"

    def plus(self, other: SyncStats) -> SyncStats:
        """Two transfers of one download, counted as one."""
        return SyncStats(
            self.files + other.files,
            self.bytes + other.bytes,
            self.skipped + other.skipped,
            self.seconds + other.seconds,
            self.method,
        )


@runtime_checkable
class Host(Protocol):
    label: str  # shown to users: "local", "ubuntu@3.4.5.6"

    def base_dir(self) -> str:
        """Absolute path of gpuctl's directory on the machine (runs/, code/)."""
        ...

    def exec(
        self,
        command: str,
        *,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """Run a shell command (POSIX sh) and wait for it. Env is passed, never logged."""
        ...

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """Bytes from offset (b"" past the end); None when the file does not exist."""
        ...

    def file_size(self, path: str) -> int | None: ...

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Atomic write (tmp + rename), parents created."""
        ...

    def put_tree(
        self, run_id: str, local_root: Path, files: Sequence[FileEntry], remote_dir: str
    ) -> Generator[Event, None, SyncStats]:
        """Upload files (relative to local_root) into remote_dir, sending only changes."""
        ...

    def get_tree(
        self, run_id: str, remote_dir: str, local_dir: Path, names: Sequence[str] | None = None
    ) -> Generator[Event, None, SyncStats]:
        """Download remote_dir (or only `names` in it) into local_dir, resuming partials."""
        ...

    def shell(self, cwd: str) -> int:
        """An interactive shell in cwd on the machine (the caller suspends any UI)."""
        ...

    def close(self) -> None: ...
