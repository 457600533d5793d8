"""Incremental upload and resumable download over one SSH session.

Change detection is ours, not the transport's: the remote directory keeps a manifest
(`.gpuctl-manifest.json`: size, mtime, mode and, when known, a content hash per file
gpuctl put there). A re-sync reads that one file and compares it with the local listing,
so "nothing changed" costs a single SFTP read however many files there are. A file whose
size matches but mtime differs (a fresh git checkout) is hashed locally and kept when
the hash matches: hash on doubt.

What did change travels by rsync over the system ssh when both ends have it (fast,
delta-encoded, its temp files removed on failure), or by SFTP otherwise (each file
written to a `.part` name and renamed, the part removed on failure). Downloads use SFTP
and resume: a local file (or `.gpuctl-part`) that is a prefix of the remote one is
appended to rather than fetched again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import shlex
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko

from gpuctl.errors import RemoteError
from gpuctl.events import Event, Notice, SyncProgress
from gpuctl.files import FileEntry, file_digest
from gpuctl.host import SyncStats

if TYPE_CHECKING:
    from .session import Session

log = logging.getLogger(__name__)

MANIFEST = ".gpuctl-manifest.json"
PART_SUFFIX = ".gpuctl-part"
CHUNK = 1 << 20
PROGRESS_EVERY = 0.25  # seconds between progress events
# Below this, SFTP on the open session beats rsync's fixed cost (an ssh and a remote
# rsync process, ~0.2-0.5 s): a one-file edit syncs in tens of milliseconds.
SMALL_CHANGE_FILES = 32
SMALL_CHANGE_BYTES = 8 << 20
RSYNC_IO_TIMEOUT = 120  # seconds without I/O before rsync gives up
RSYNC_IO_ERRORS = (11, 12, 23)  # file I/O, protocol stream, partial transfer
RSYNC_PARTIAL = (23, 24)  # some files not sent (errors, vanished): the rest went
RESULT_MODE = 0o600  # downloaded results: the user's only, whatever the machine said


# -- manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    size: int
    mtime: float
    mode: int
    digest: str | None = None


def load_manifest(raw: bytes | None) -> dict[str, Record]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        files = data["files"] if data.get("version") == 1 else {}
        return {
            rel: Record(int(v[0]), float(v[1]), int(v[2]), v[3] if len(v) > 3 else None)
            for rel, v in files.items()
        }
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}  # unreadable manifest: everything is re-checked, nothing is lost


def dump_manifest(records: dict[str, Record]) -> bytes:
    files = {rel: [r.size, r.mtime, r.mode, r.digest] for rel, r in sorted(records.items())}
    return json.dumps({"version": 1, "files": files}, separators=(",", ":")).encode()


def plan_upload(
    files: Sequence[FileEntry], manifest: dict[str, Record], local_root: Path
) -> tuple[list[FileEntry], dict[str, Record]]:
    """Files that must travel, and manifest records refreshed for those that need not."""
    send: list[FileEntry] = []
    refreshed: dict[str, Record] = {}
    for entry in files:
        rec = manifest.get(entry.rel)
        if rec is None or rec.size != entry.size or rec.mode != entry.mode:
            send.append(entry)
        elif abs(rec.mtime - entry.mtime) < 1e-6:
            continue
        elif rec.digest and _safe_digest(local_root / entry.rel) == rec.digest:
            refreshed[entry.rel] = Record(entry.size, entry.mtime, entry.mode, rec.digest)
        else:
            send.append(entry)
    return send, refreshed


def _safe_digest(path: Path) -> str | None:
    try:
        return file_digest(path)
    except OSError:
        return None


# -- SFTP helpers ---------------------------------------------------------------------------


class RemoteDirs:
    """mkdir -p over SFTP, remembering what exists so a tree costs one stat per directory."""

    def __init__(self, sftp: paramiko.SFTPClient) -> None:
        self.sftp = sftp
        self.known: set[str] = set()

    def ensure(self, path: str) -> None:
        path = posixpath.normpath(path)
        if path in self.known or path in ("/", "."):
            return
        try:
            st = self.sftp.stat(path)
            if not stat.S_ISDIR(st.st_mode or 0):
                raise RemoteError(
                    f"{path} exists on the machine and is not a directory",
                    hint="move it away or choose another run dir",
                )
        except FileNotFoundError:
            self.ensure(posixpath.dirname(path))
            with contextlib.suppress(OSError):  # a concurrent mkdir is fine
                self.sftp.mkdir(path)
        self.known.add(path)


def confirm_writes(fh: paramiko.SFTPFile, expected_size: int | None = None) -> None:
    """Read the status of every pipelined write still in flight; raise the first failure.

    paramiko discards those statuses when the file is closed (or when another request on
    the handle reads past them), so a full disk would otherwise pass as a good upload.
    """
    reqs = getattr(fh, "_reqs", None)
    if reqs is None:  # a paramiko without the queue: fall back to checking the size
        if expected_size is not None and fh.stat().st_size != expected_size:
            raise OSError("short write (is the disk full?)")
        return
    while reqs:
        fh.sftp._read_response(reqs.popleft())


def _remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    with contextlib.suppress(Exception):
        sftp.remove(path)


def write_error(
    session: Session, remote_dir: str, rel: str, exc: BaseException, needed: int = 0
) -> RemoteError:
    """Explain a failed write: disk full gets its own message (SFTP only says 'Failure')."""
    text = str(exc) or type(exc).__name__
    full = "no space" in text.lower() or "quota" in text.lower()
    if not full:
        with contextlib.suppress(Exception):
            res = session.exec(f"df -Pk {shlex.quote(remote_dir)} | tail -n 1", timeout=15)
            fields = res.stdout.split()
            free = int(fields[3]) * 1024 if res.ok and len(fields) >= 4 else None
            full = free is not None and (free < (1 << 20) or free < needed)
    if full:
        return RemoteError(
            f"disk full on {session.label} while uploading {rel}; partial files removed",
            hint="free space on the machine (or launch with a larger --disk) and sync again",
        )
    return RemoteError(
        f"uploading {rel} to {session.label} failed: {text}",
        hint="check free space and permissions in the run dir",
    )


class _Progress:
    def __init__(self, run_id: str, files_total: int, bytes_total: int, direction: str) -> None:
        self.run_id = run_id
        self.files_total = files_total
        self.bytes_total = bytes_total
        self.direction = direction
        self.files = 0
        self.bytes = 0
        self._last = 0.0

    def event(self, force: bool = False) -> SyncProgress | None:
        now = time.monotonic()
        if not force and now - self._last < PROGRESS_EVERY:
            return None
        self._last = now
        return SyncProgress(
            self.run_id, self.files, self.files_total, self.bytes, self.bytes_total, self.direction
        )


# -- upload ---------------------------------------------------------------------------------


def put_tree(
    session: Session,
    run_id: str,
    local_root: Path,
    files: Sequence[FileEntry],
    remote_dir: str,
    *,
    rsync: Callable[[], list[str] | None] | None = None,
    rsync_failed: Callable[[str], None] | None = None,
    small_by_sftp: bool = True,
) -> Generator[Event, None, SyncStats]:
    """Upload what changed.

    `rsync` returns the `rsync -e SSH host:` argv prefix when rsync may be tried; if it
    fails (no rsync on the machine, the system ssh cannot get in), `rsync_failed` hears
    why (it may raise) and the same files go by SFTP. With `small_by_sftp`, a small
    change set skips rsync's startup cost and goes by SFTP directly.
    """
    started = time.monotonic()
    local_root = Path(local_root)
    manifest_path = posixpath.join(remote_dir, MANIFEST)

    def read_manifest() -> bytes | None:
        with session.sftp_lock:
            sftp = session.sftp()
            try:
                with session.sftp_open(sftp, manifest_path, "rb") as fh:
                    fh.prefetch()
                    return fh.read()
            except FileNotFoundError:
                return None

    manifest = load_manifest(session.call(read_manifest, what="reading the sync manifest"))
    send, refreshed = plan_upload(files, manifest, local_root)
    skipped = len(files) - len(send)
    if not send:
        if refreshed:
            manifest.update(refreshed)
            _write_manifest(session, manifest_path, manifest)
        return SyncStats(0, 0, skipped, time.monotonic() - started, "sftp")

    progress = _Progress(run_id, len(send), sum(e.size for e in send), "up")
    yield progress.event(force=True)  # type: ignore[misc]
    sent: dict[str, Record] = dict(refreshed)
    method = "sftp"
    small = len(send) <= SMALL_CHANGE_FILES and progress.bytes_total <= SMALL_CHANGE_BYTES
    argv = rsync() if rsync is not None and not (small and small_by_sftp) else None
    try:
        if argv is not None:
            session.call(lambda: _mkdirs(session, remote_dir), what="creating the run dir")
            try:
                yield from _rsync_upload(
                    session, argv, local_root, send, remote_dir, progress, sent
                )
                method = "rsync"
            except _RsyncUnusable as exc:
                log.info("rsync to %s failed (%s); falling back to SFTP", session.label, exc)
                if rsync_failed is not None:
                    rsync_failed(str(exc))
                argv = None
                progress.files = progress.bytes = 0
        if argv is None:
            pending = [e for e in send if e.rel not in sent]
            yield from _sftp_upload(session, local_root, pending, remote_dir, progress, sent)
    finally:
        if sent:
            manifest.update(sent)
            with contextlib.suppress(Exception):
                _write_manifest(session, manifest_path, manifest)
    event = progress.event(force=True)
    if event:
        yield event
    return SyncStats(
        progress.files,
        progress.bytes,
        len(files) - progress.files,
        time.monotonic() - started,
        method,
    )


def _mkdirs(session: Session, path: str) -> None:
    with session.sftp_lock:
        RemoteDirs(session.sftp()).ensure(path)


def _write_manifest(session: Session, path: str, manifest: dict[str, Record]) -> None:
    data = dump_manifest(manifest)

    def op() -> None:
        with session.sftp_lock:
            sftp = session.sftp()
            tmp = path + PART_SUFFIX
            with session.sftp_open(sftp, tmp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
                fh.flush()
                confirm_writes(fh, len(data))
            sftp.posix_rename(tmp, path)

    session.call(op, what="writing the sync manifest")


def _sftp_upload(
    session: Session,
    local_root: Path,
    entries: Sequence[FileEntry],
    remote_dir: str,
    progress: _Progress,
    sent: dict[str, Record],
) -> Generator[Event, None, None]:
    dirs: list[RemoteDirs] = []  # one per SFTP client (a reconnect opens a new one)
    for entry in entries:
        digest = session.call(
            lambda entry=entry: _sftp_put_one(session, local_root, entry, remote_dir, dirs),  # type: ignore[misc]
            what=f"uploading {entry.rel}",
        )
        sent[entry.rel] = Record(entry.size, entry.mtime, entry.mode, digest)
        progress.files += 1
        progress.bytes += entry.size
        event = progress.event()
        if event:
            yield event


def _sftp_put_one(
    session: Session, local_root: Path, entry: FileEntry, remote_dir: str, dirs: list[RemoteDirs]
) -> str:
    target = posixpath.join(remote_dir, entry.rel)
    part = target + PART_SUFFIX
    h = hashlib.blake2b(digest_size=16)
    with session.sftp_lock:
        sftp = session.sftp()
        if not dirs or dirs[0].sftp is not sftp:
            dirs[:] = [RemoteDirs(sftp)]
        dirs[0].ensure(posixpath.dirname(target))
        try:
            with (
                open(local_root / entry.rel, "rb") as src,
                session.sftp_open(sftp, part, "wb") as dst,
            ):
                dst.set_pipelined(True)
                while block := src.read(CHUNK):
                    h.update(block)
                    dst.write(block)
                dst.flush()
                confirm_writes(dst, entry.size)
                dst.chmod(entry.mode)
                dst.utime((entry.mtime, entry.mtime))
            sftp.posix_rename(part, target)
        except FileNotFoundError as exc:
            if not (local_root / entry.rel).exists():
                raise RemoteError(
                    f"{entry.rel} vanished while uploading", hint="sync again"
                ) from None
            _remove_quietly(sftp, part)
            raise write_error(session, remote_dir, entry.rel, exc, entry.size) from None
        except OSError as exc:
            if not session.alive():  # link drop: let call() reconnect and retry
                raise
            _remove_quietly(sftp, part)
            raise write_error(session, remote_dir, entry.rel, exc, entry.size) from None
    return h.hexdigest()


class _RsyncUnusable(Exception):
    """rsync failed for a reason SFTP may not share (not disk full)."""


def _rsync_upload(
    session: Session,
    argv: list[str],
    local_root: Path,
    entries: Sequence[FileEntry],
    remote_dir: str,
    progress: _Progress,
    sent: dict[str, Record],
) -> Generator[Event, None, None]:
    by_rel = {e.rel: e for e in entries}
    confirmed: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="gpuctl-rsync-") as tmp:
        list_path = Path(tmp) / "files"
        list_path.write_bytes(b"".join(e.rel.encode() + b"\0" for e in entries))
        err_path = Path(tmp) / "stderr"
        cmd = [
            *argv[:-1],
            "--times",
            "--perms",
            # The file list vetted every symlink in it (inside the tree, no secret):
            # send what it names, as a file.
            "--copy-links",
            # Remote names travel in the protocol, never through the remote shell (a
            # run dir with spaces or `$(...)` in it stays one path); since rsync 3.0.
            "-s",
            f"--timeout={RSYNC_IO_TIMEOUT}",  # a stalled link fails instead of hanging
            "--from0",
            f"--files-from={list_path}",
            "--info=name2",  # name unchanged files too: every line is a file that is there
            "--out-format=%n",
            f"{local_root}/",
            argv[-1] + remote_dir.rstrip("/") + "/",
        ]
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
            assert proc.stdout is not None
            try:
                for raw in proc.stdout:
                    rel = raw.decode("utf-8", "replace").rstrip("\n")
                    entry = by_rel.get(rel)
                    if entry is None or rel in confirmed:
                        continue  # a directory line
                    confirmed.add(rel)
                    progress.files += 1
                    progress.bytes += entry.size
                    event = progress.event()
                    if event:
                        yield event
                rc = proc.wait()
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        stderr = err_path.read_text(errors="replace").strip()
    if rc != 0:
        last = stderr.splitlines()[-1] if stderr else f"exit {rc}"
        if rc in RSYNC_IO_ERRORS or "no space" in stderr.lower() or "quota" in stderr.lower():
            # rsync does not always relay the receiver's ENOSPC: ask the disk itself.
            largest = max(e.size for e in entries)
            err = write_error(session, remote_dir, "files", OSError(stderr or last), largest)
            if err.message.startswith("disk full"):
                raise err
        if rc not in RSYNC_PARTIAL or not confirmed:
            raise _RsyncUnusable(last)
    # Only what rsync named, and did not complain about, is recorded as there; the rest
    # (vanished, unreadable, skipped) is sent again by the next sync.
    quoted = {_rel_of(q, local_root) for q in re.findall(r'"([^"]+)"', stderr)}
    for rel in confirmed - quoted:
        entry = by_rel[rel]
        sent[rel] = Record(entry.size, entry.mtime, entry.mode, None)
    missing = sorted(set(by_rel) - set(sent))
    if missing:
        log.warning("rsync to %s did not send %s: %s", session.label, missing, stderr)
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        yield Notice(
            progress.run_id,
            f"{len(missing)} file(s) not uploaded (vanished or unreadable): {shown}; "
            "the next sync tries them again",
            "warning",
        )


def _rel_of(path: str, local_root: Path) -> str:
    prefix = f"{local_root}/"
    return path[len(prefix) :] if path.startswith(prefix) else path


# -- download -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    rel: str
    size: int
    mtime: int
    mode: int


def _internal(name: str) -> bool:
    """gpuctl's own bookkeeping files, never downloaded as results."""
    return name == MANIFEST or name.endswith(PART_SUFFIX)


def unsafe_name(name: str) -> bool:
    """A listing entry that is not one plain name: it could climb out of the results dir."""
    return not name or name in (".", "..") or "/" in name or "\0" in name or "\\" in name


def list_remote(
    sftp: paramiko.SFTPClient,
    remote_dir: str,
    names: Sequence[str] | None,
    refused: list[str] | None = None,
) -> list[RemoteFile]:
    """Regular files under remote_dir (or under the given names); missing names are skipped.

    Entries whose name is not one plain path component (`..`, `a/b`, a NUL: only a
    hostile or broken server lists those) are left out and added to `refused`.
    """
    out: list[RemoteFile] = []

    def walk(rel_dir: str) -> None:
        path = posixpath.join(remote_dir, rel_dir) if rel_dir else remote_dir
        try:
            items = sftp.listdir_attr(path)
        except FileNotFoundError:
            return
        for attr in sorted(items, key=lambda a: a.filename):
            if unsafe_name(attr.filename):
                if refused is not None:
                    refused.append(f"{rel_dir}/{attr.filename}" if rel_dir else attr.filename)
                continue
            rel = f"{rel_dir}/{attr.filename}" if rel_dir else attr.filename
            mode = attr.st_mode or 0
            if stat.S_ISDIR(mode):
                walk(rel)
            elif stat.S_ISREG(mode) and not _internal(attr.filename):
                out.append(RemoteFile(rel, attr.st_size or 0, attr.st_mtime or 0, mode & 0o777))

    if names is None:
        walk("")
        return out
    for name in names:
        rel = name.strip("/")
        try:
            attr = sftp.stat(posixpath.join(remote_dir, rel))
        except FileNotFoundError:
            continue
        mode = attr.st_mode or 0
        if stat.S_ISDIR(mode):
            walk(rel)
        elif stat.S_ISREG(mode):
            out.append(RemoteFile(rel, attr.st_size or 0, attr.st_mtime or 0, mode & 0o777))
    return out


def get_tree(
    session: Session,
    run_id: str,
    remote_dir: str,
    local_dir: Path,
    names: Sequence[str] | None = None,
) -> Generator[Event, None, SyncStats]:
    started = time.monotonic()
    local_dir = Path(local_dir)

    refused: list[str] = []

    def listing() -> list[RemoteFile]:
        refused.clear()
        with session.sftp_lock:
            return list_remote(session.sftp(), remote_dir, names, refused)

    remote = session.call(listing, what=f"listing {remote_dir}")
    local_dir.mkdir(parents=True, exist_ok=True)
    for rf in remote:
        if not inside(local_dir, rf.rel):
            refused.append(rf.rel)
    remote = [rf for rf in remote if rf.rel not in refused]
    if refused:
        shown = ", ".join(ascii(name) for name in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        log.warning("refused remote names from %s: %r", session.label, refused)
        yield Notice(
            run_id,
            f"skipped {len(refused)} remote file name(s) that would land outside "
            f"{local_dir}: {shown}{more}",
            "warning",
        )
    todo: list[RemoteFile] = []
    skipped = 0
    for rf in remote:
        try:
            st = (local_dir / rf.rel).stat()
            if st.st_size == rf.size and int(st.st_mtime) == rf.mtime:
                skipped += 1
                continue
        except FileNotFoundError:
            pass
        todo.append(rf)
    progress = _Progress(run_id, len(todo), sum(r.size for r in todo), "down")
    if todo:
        yield progress.event(force=True)  # type: ignore[misc]
    moved = 0
    for rf in todo:
        before = progress.bytes
        yield from _download_one(session, remote_dir, local_dir, rf, progress)
        moved += progress.bytes - before
        progress.files += 1
        event = progress.event()
        if event:
            yield event
    if todo:
        event = progress.event(force=True)
        if event:
            yield event
    return SyncStats(len(todo), moved, skipped, time.monotonic() - started, "sftp")


def inside(root: Path, rel: str) -> bool:
    """Whether root/rel, with every symlink already there resolved, stays under root."""
    parts = rel.split("/")
    if any(unsafe_name(p) for p in parts):
        return False
    real_root = os.path.realpath(root)
    target = os.path.join(real_root, *parts)
    if os.path.islink(target):
        return False  # a link in the results dir is never written through
    real = os.path.realpath(target)
    return real == target and os.path.commonpath([real_root, real]) == real_root


def _mkdirs_private(root: Path, parent: Path) -> None:
    """Create the directories between root and parent, each 0700."""
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = parent
    while path != root and root in path.parents:
        os.chmod(path, 0o700)
        path = path.parent


def _private_opener(path: str, flags: int) -> int:
    """Open 0600 and never through a symlink someone planted under the results dir."""
    return os.open(path, flags | os.O_NOFOLLOW, RESULT_MODE)


def _resume_offset(session: Session, remote_path: str, local: Path, remote_size: int) -> int:
    """How many bytes of `local` are a verified prefix of the remote file (0 = start over)."""
    try:
        size = local.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0 or size >= remote_size:
        return 0
    h = hashlib.sha256()
    with open(local, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    cmd = f"head -c {size} {shlex.quote(remote_path)} | sha256sum"
    try:
        res = session.exec(cmd, timeout=300)
        if res.ok and res.stdout.split():
            return size if res.stdout.split()[0] == h.hexdigest() else 0
    except RemoteError:
        pass
    # No sha256sum there: compare the last 64 KiB of the prefix instead.
    window = min(size, 64 << 10)
    with open(local, "rb") as fh:
        fh.seek(size - window)
        mine = fh.read(window)
    theirs = _read_range(session, remote_path, size - window, window)
    return size if theirs == mine else 0


def _read_range(session: Session, path: str, offset: int, length: int) -> bytes | None:
    def op() -> bytes | None:
        with session.sftp_lock:
            try:
                fh = session.sftp_open(session.sftp(), path, "rb")
            except FileNotFoundError:
                return None
            with fh:
                fh.seek(offset)
                if length > fh.MAX_REQUEST_SIZE:
                    fh.prefetch(offset + length)
                return fh.read(length)

    return session.call(op, what=f"reading {path}")


def _download_one(
    session: Session, remote_dir: str, local_dir: Path, rf: RemoteFile, progress: _Progress
) -> Iterator[Event]:
    remote_path = posixpath.join(remote_dir, rf.rel)
    final = local_dir / rf.rel
    part = final.with_name(final.name + PART_SUFFIX)
    _mkdirs_private(local_dir, final.parent)
    # Resume from a partial download, or from an older shorter copy (a log that grew).
    offset = _resume_offset(session, remote_path, part, rf.size)
    if offset:
        target = part
    else:
        part.unlink(missing_ok=True)
        offset = _resume_offset(session, remote_path, final, rf.size)
        if offset:
            os.replace(final, part)
        target = part
    mode = "ab" if offset else "wb"
    with open(target, mode, opener=_private_opener) as out:
        pos = offset
        while pos < rf.size:
            want = min(8 * CHUNK, rf.size - pos)
            data = _read_range(session, remote_path, pos, want)
            if data is None:
                raise RemoteError(
                    f"{remote_path} disappeared during download", hint="download again"
                )
            if not data:
                break  # the file shrank under us; keep what matches the listing
            out.write(data)
            pos += len(data)
            progress.bytes += len(data)
            event = progress.event()
            if event:
                yield event
    os.utime(part, (rf.mtime, rf.mtime))
    os.chmod(part, RESULT_MODE)  # never the remote's mode: no setuid, no exec bits
    os.replace(part, final)
