"""The Host protocol over SSH: what every cloud provider and the `ssh` provider hand out.

One paramiko Session carries commands, SFTP reads/writes and tails; rsync (over the
system ssh, trusting the same pinned key) carries bulk uploads when both ends have it.
Reads by offset are idempotent, so after a dropped link the read is simply repeated on
a fresh connection and a tail continues with no lost or doubled byte.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shlex
import shutil
import subprocess
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gpuctl.errors import RemoteError
from gpuctl.events import Event
from gpuctl.files import FileEntry
from gpuctl.host import ExecResult, SyncStats
from gpuctl.models import SshTarget

from . import sshcmd, sync
from .session import Session

if TYPE_CHECKING:
    from gpuctl.settings import Settings

REMOTE_BASE_ENV = "GPUCTL_REMOTE_BASE"  # tests point the remote base dir at a temp dir
DEFAULT_BASE = "~/gpuctl"


class SshHost:
    """A machine reached over SSH (connects lazily; `connect()` to fail early)."""

    def __init__(
        self,
        target: SshTarget,
        settings: Settings,
        *,
        connect_timeout: float = 10.0,
        boot_wait: float = 0.0,
        remote_base: str | None = None,
        sync_method: str = "auto",  # auto | rsync | sftp
    ) -> None:
        if sync_method not in ("auto", "rsync", "sftp"):
            raise ValueError(f"sync_method must be auto, rsync or sftp, not {sync_method!r}")
        self.target = target
        self.settings = settings
        self.session = Session(
            target, settings, connect_timeout=connect_timeout, boot_wait=boot_wait
        )
        self.label = self.session.label
        self.connect_timeout = connect_timeout
        self.sync_method = sync_method
        self._remote_base = remote_base or os.environ.get(REMOTE_BASE_ENV) or DEFAULT_BASE
        self._base: str | None = None
        self._home: str | None = None
        self._rsync: list[str] | None = None  # [] = unusable (no local rsync, or it failed)
        self._used_rsync = False

    def __repr__(self) -> str:
        return f"SshHost({self.label})"

    def connect(self) -> SshHost:
        self.session.connect()
        return self

    def wait_ready(self, seconds: float) -> SshHost:
        """Connect, retrying with backoff for up to `seconds` (a machine still booting).

        Only this connect waits that long; later reconnects keep their usual bound.
        """
        before = self.session.boot_wait
        self.session.boot_wait = max(before, seconds)
        try:
            return self.connect()
        finally:
            self.session.boot_wait = before

    # -- paths --------------------------------------------------------------------------

    def home(self) -> str:
        if self._home is None:

            def op() -> str:
                with self.session.sftp_lock:
                    return self.session.sftp().normalize(".")

            self._home = self.session.call(op, what="finding the home directory")
        return self._home

    def base_dir(self) -> str:
        if self._base is None:
            base = self._remote_base
            if base == "~" or base.startswith("~/"):
                base = self.home() + base[1:]
            elif not base.startswith("/"):
                base = posixpath.join(self.home(), base)
            base = posixpath.normpath(base)
            self._mkdirs(base)
            self._base = base
        return self._base

    def _mkdirs(self, path: str) -> None:
        def op() -> None:
            with self.session.sftp_lock:
                sync.RemoteDirs(self.session.sftp()).ensure(path)

        self.session.call(op, what=f"creating {path}")

    # -- commands -----------------------------------------------------------------------

    def exec(
        self,
        command: str,
        *,
        timeout: float | None = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        return self.session.exec(command, timeout=timeout, env=env)

    # -- files --------------------------------------------------------------------------

    def read_bytes(self, path: str, offset: int = 0, length: int | None = None) -> bytes | None:
        def op() -> bytes | None:
            with self.session.sftp_lock:
                sftp = self.session.sftp()
                try:
                    fh = self.session.sftp_open(sftp, path, "rb")
                except FileNotFoundError:
                    return None
                with fh:
                    size = fh.stat().st_size or 0
                    end = size if length is None else min(size, offset + length)
                    if end <= offset:
                        return b""
                    fh.seek(offset)
                    if end - offset > fh.MAX_REQUEST_SIZE:
                        fh.prefetch(end)
                    return fh.read(end - offset)

        return self._file_op(op, f"reading {path}")

    def file_size(self, path: str) -> int | None:
        def op() -> int | None:
            with self.session.sftp_lock:
                try:
                    return self.session.sftp().stat(path).st_size or 0
                except FileNotFoundError:
                    return None

        return self._file_op(op, f"checking {path}")

    def write_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        parent = posixpath.dirname(path)
        tmp = f"{parent}/.{posixpath.basename(path)}.{os.getpid()}.tmp"

        def op() -> None:
            with self.session.sftp_lock:
                sftp = self.session.sftp()
                sync.RemoteDirs(sftp).ensure(parent)
                try:
                    with self.session.sftp_open(sftp, tmp, "wb") as fh:
                        fh.set_pipelined(True)
                        fh.write(data)
                        fh.flush()
                        sync.confirm_writes(fh, len(data))
                        fh.chmod(mode)
                    sftp.posix_rename(tmp, path)
                except OSError as exc:
                    if not self.session.alive():
                        raise  # the link dropped: call() reconnects and writes again
                    with contextlib.suppress(Exception):
                        sftp.remove(tmp)
                    raise sync.write_error(self.session, parent, path, exc, len(data)) from None

        self._file_op(op, f"writing {path}")

    def _file_op(self, op: object, what: str) -> object:
        try:
            return self.session.call(op, what=what)  # type: ignore[arg-type]
        except RemoteError:
            raise
        except OSError as exc:
            raise RemoteError(
                f"{what} on {self.label} failed: {exc.strerror or exc}",
                hint="check the path and permissions on the machine",
            ) from None

    def put_tree(
        self, run_id: str, local_root: Path, files: Sequence[FileEntry], remote_dir: str
    ) -> Generator[Event, None, SyncStats]:
        return sync.put_tree(
            self.session,
            run_id,
            Path(local_root),
            files,
            remote_dir,
            rsync=self._rsync_prefix,
            rsync_failed=self._rsync_failed,
            small_by_sftp=self.sync_method == "auto",
        )

    def get_tree(
        self, run_id: str, remote_dir: str, local_dir: Path, names: Sequence[str] | None = None
    ) -> Generator[Event, None, SyncStats]:
        return sync.get_tree(self.session, run_id, remote_dir, Path(local_dir), names)

    # -- rsync --------------------------------------------------------------------------

    def _rsync_prefix(self) -> list[str] | None:
        """`rsync -e SSH host:` when both clients exist here (the machine's rsync is tried
        on the first upload; a failure falls back to SFTP for the rest of the session)."""
        if self.sync_method == "sftp":
            return None
        if self._rsync is None:
            ssh, rsync = sshcmd.ssh_binary(), shutil.which("rsync")
            self._rsync = []
            if ssh and rsync:
                ep = self.session.endpoint
                shell = sshcmd.rsync_shell(
                    ep, self.settings.known_hosts, connect_timeout=self.connect_timeout
                )
                self._rsync = [rsync, "-e", shell, sshcmd.rsync_remote(ep, "")]
        if not self._rsync and self.sync_method == "rsync":
            raise RemoteError(
                f"rsync is not usable to {self.label}",
                hint="install rsync and openssh-client here, or let gpuctl use SFTP",
            )
        return self._rsync or None

    def _rsync_failed(self, reason: str) -> None:
        self._used_rsync = True  # a multiplexing master may be running: close() stops it
        self._rsync = []
        if self.sync_method == "rsync":
            raise RemoteError(
                f"rsync to {self.label} failed: {reason}",
                hint="install rsync on the machine, or let gpuctl use SFTP",
            )

    # -- interactive ----------------------------------------------------------------------

    def shell_command(self, cwd: str) -> str:
        return f'cd {shlex.quote(cwd)} && exec "${{SHELL:-/bin/sh}}" -l'

    def shell_argv(self, cwd: str) -> list[str] | None:
        """The system ssh command line `gpuctl ssh` runs (None without an ssh client)."""
        ssh = sshcmd.ssh_binary()
        if ssh is None:
            return None
        ep = self.session.endpoint
        opts = sshcmd.ssh_options(
            ep,
            self.settings.known_hosts,
            connect_timeout=self.connect_timeout,
            multiplex=False,
            batch=False,
        )
        return [ssh, "-t", *opts, sshcmd.destination(ep), self.shell_command(cwd)]

    def shell(self, cwd: str) -> int:
        self.session.connect()  # fail with gpuctl's one-line errors, and pin the key first
        argv = self.shell_argv(cwd)
        if argv is not None:
            return subprocess.call(argv)
        from .interactive import run_interactive

        return run_interactive(self.session.transport(), self.shell_command(cwd))

    def close(self) -> None:
        if self._rsync or self._used_rsync:
            sshcmd.stop_master(self.session.endpoint, self.settings.known_hosts)
        self.session.close()
