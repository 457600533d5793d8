"""The Host protocol for this machine: subprocesses and file copies.

The local provider uses it, so a local run goes through exactly the path a cloud run
does (code upload, agent start, tail by offset, download), just without SSH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path

from .errors import RemoteError
from .events import Event, SyncProgress
from .files import FileEntry
from .host import ExecResult, SyncStats
from .private import private_dir


class LocalHost:
    label = "local"

    def __init__(self, base: Path) -> None:
        self._base = Path(base).resolve()

    def base_dir(self) -> str:
        private_dir(self._base)  # local runs live in the data dir: the user's only
        return str(self._base)

    def exec(
        self,
        command: str,
        *,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        full_env = dict(os.environ)
        full_env.update(env or {})
        try:
            proc = subprocess.run(
                ["/bin/sh", "-c", command],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=full_env,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise RemoteError(
                f"command timed out after {timeout:.0f}s on this machine",
                hint="the machine may be overloaded",
            ) from None
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read() if length is None else fh.read(length)
        except FileNotFoundError:
            return None

    def file_size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return None

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        mode &= 0o700
        target = Path(path)
        private_dir(target.parent)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)

    def put_tree(
        self, run_id: str, local_root: Path, files: Sequence[FileEntry], remote_dir: str
    ) -> Generator[Event, None, SyncStats]:
        return _copy_tree(run_id, Path(local_root), files, Path(remote_dir), "up")

    def get_tree(
        self, run_id: str, remote_dir: str, local_dir: Path, names: Sequence[str] | None = None
    ) -> Generator[Event, None, SyncStats]:
        root = Path(remote_dir)
        entries = []
        for name in names if names is not None else _all_files(root):
            try:
                st = (root / name).stat()
            except FileNotFoundError:
                continue
            entries.append(FileEntry(name, st.st_size, st.st_mtime, st.st_mode & 0o777))
        return _copy_tree(run_id, root, entries, Path(local_dir), "down")

    def shell(self, cwd: str) -> int:
        return subprocess.call([os.environ.get("SHELL", "/bin/sh")], cwd=cwd)

    def close(self) -> None:
        pass


def _all_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)).replace(os.sep, "/") for p in root.rglob("*") if p.is_file()
    )


def _copy_tree(
    run_id: str, src: Path, files: Sequence[FileEntry], dst: Path, direction: str
) -> Generator[Event, None, SyncStats]:
    """Copy files whose size or mtime differ; the rest is already there."""
    started = time.monotonic()
    total_bytes = sum(f.size for f in files)
    sent = sent_bytes = skipped = 0
    last_report = 0.0
    for entry in files:
        target = dst / entry.rel
        try:
            st = target.stat()
            if st.st_size == entry.size and abs(st.st_mtime - entry.mtime) < 1e-3:
                skipped += 1
                continue
        except FileNotFoundError:
            pass
        private_dir(target.parent)
        try:
            shutil.copy2(src / entry.rel, target)
            # Results are the user's only, like every download; a local run's copy of the
            # work dir keeps the owner's bits only (it lives in the data dir).
            os.chmod(target, 0o600 if direction == "down" else entry.mode & 0o700)
        except OSError as exc:
            raise RemoteError(
                f"copying {entry.rel} failed: {exc.strerror or exc}",
                hint="check free disk space and permissions",
            ) from None
        sent += 1
        sent_bytes += entry.size
        if time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            yield SyncProgress(
                run_id, sent + skipped, len(files), sent_bytes, total_bytes, direction
            )
    return SyncStats(sent, sent_bytes, skipped, time.monotonic() - started, "copy")
