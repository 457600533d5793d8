"""A user's own training command (agent.json `job`): its command line, setup and checkpoint.

The agent runs `sh -c <command>` in the user's project instead of the bundled trainer.
Its checkpoint (a file or a directory under the project) is mirrored to the run dir's
last.pt, so that the spot path pushes it off the machine as it does the trainer's, and
restored from last.pt on a fresh machine before a resume. Standard library only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

DIR_MARKER = ".gpuctl-checkpoint-dir"  # first member of last.pt when it holds a directory
KIND_FILE, KIND_DIR = "file", "dir"
KIND_COMMAND = "command"  # the one kind of job so far: a shell command line


class JobError(Exception):
    """Why the command could not start; the run's reason (never holds a secret)."""


@dataclass(frozen=True)
class DataSet:
    name: str
    dir: str
    urls_env: str


@dataclass(frozen=True)
class Job:
    """agent.json's `job`, checked: a missing `job` is the bundled trainer."""

    command: str
    cwd: str
    kind: str = KIND_COMMAND
    checkpoint: str = ""
    resume_args: str = ""
    setup: tuple[str, ...] = ()
    setup_key: str = ""
    setup_dir: str = ""
    epochs: int | None = None
    env: tuple[tuple[str, str], ...] = ()
    secret_env: tuple[str, ...] = ()
    data: tuple[DataSet, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Job | None:
        raw = cfg.get("job")
        if not isinstance(raw, dict):
            return None
        epochs = raw.get("epochs")
        env = raw.get("env") if isinstance(raw.get("env"), dict) else {}
        return cls(
            kind=str(raw.get("kind") or KIND_COMMAND),
            command=str(raw.get("command") or ""),
            cwd=str(raw.get("cwd") or ""),
            checkpoint=str(raw.get("checkpoint") or ""),
            resume_args=str(raw.get("resume_args") or ""),
            setup=tuple(str(c) for c in listed(raw.get("setup"))),
            setup_key=str(raw.get("setup_key") or ""),
            setup_dir=str(raw.get("setup_dir") or ""),
            epochs=int(epochs) if isinstance(epochs, int) and epochs > 0 else None,
            env=tuple((str(k), str(v)) for k, v in env.items()),
            secret_env=tuple(str(n) for n in listed(raw.get("secret_env")) if n),
            data=tuple(
                DataSet(str(d.get("name") or ""), str(d.get("dir") or ""), str(d.get("urls_env")))
                for d in listed(raw.get("data"))
                if isinstance(d, dict) and d.get("urls_env") and d.get("dir")
            ),
        )

    def secret_names(self) -> set[str]:
        return set(self.secret_env) | {d.urls_env for d in self.data}

    def checkpoint_path(self) -> Path | None:
        if not self.checkpoint:
            return None
        return Path(self.cwd) / self.checkpoint

    def argv(self, resuming: bool) -> list[str]:
        """`sh -c` the command, with the resume arguments when there is a checkpoint."""
        line = self.command
        ckpt = self.checkpoint_path()
        if resuming and self.resume_args and ckpt is not None and ckpt.exists():
            # replace, not str.format: other braces in the arguments are the user's own
            line += " " + self.resume_args.replace("{checkpoint}", shlex.quote(str(ckpt)))
        return ["sh", "-c", line]


def listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


# -- checkpoint mirror ---------------------------------------------------------------------


def signature(src: Path) -> str:
    """A digest of what changes when a checkpoint is rewritten: each file's path, size, mtime."""
    files = sorted(p for p in src.rglob("*") if p.is_file()) if src.is_dir() else [src]
    digest = hashlib.blake2b(digest_size=12)
    for path in files:
        st = path.stat()
        rel = path.relative_to(src).as_posix() if path != src else ""
        digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def mirror(src: Path, dst: Path) -> str:
    """Copy the project's checkpoint to dst (last.pt) atomically; returns its kind."""
    tmp = dst.with_name(f".{dst.name}.mirror{os.getpid()}")
    try:
        if src.is_dir():
            kind = KIND_DIR
            with tarfile.open(tmp, "w") as tar:
                marker = tarfile.TarInfo(DIR_MARKER)
                tar.addfile(marker)
                for child in sorted(src.rglob("*")):
                    if child.is_symlink() or not (child.is_file() or child.is_dir()):
                        continue  # only files and folders travel (as restore makes them)
                    arcname = child.relative_to(src).as_posix()
                    tar.add(child, arcname=arcname, recursive=False)
        else:
            kind = KIND_FILE
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return kind


def holds_directory(archive: Path) -> bool:
    if not tarfile.is_tarfile(archive):
        return False
    with tarfile.open(archive) as tar:
        first = tar.next()
    return first is not None and first.name == DIR_MARKER


def restore(archive: Path, target: Path) -> str:
    """last.pt back to the project's checkpoint path (absent); returns its kind.

    A directory's archive is unpacked into a temp dir first: members with an absolute
    path or `..` are refused, and only files and folders are made.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if not holds_directory(archive):
        tmp = target.with_name(f".{target.name}.restore{os.getpid()}")
        shutil.copyfile(archive, tmp)
        os.replace(tmp, target)
        return KIND_FILE
    tmp_dir = target.with_name(f".{target.name}.restore{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                if member.name == DIR_MARKER:
                    continue
                if name.is_absolute() or ".." in name.parts:
                    raise JobError(f"checkpoint archive: refused member {member.name!r}")
                dest = tmp_dir.joinpath(*name.parts)
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif member.isfile():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(member)
                    assert src is not None
                    with src, open(dest, "wb") as out:
                        shutil.copyfileobj(src, out)
        os.replace(tmp_dir, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return KIND_DIR


# -- setup ---------------------------------------------------------------------------------


def setup_marker(job: Job) -> Path | None:
    if not job.setup or not job.setup_dir or not job.setup_key:
        return None
    return Path(job.setup_dir) / f"{job.setup_key}.done"


def run_setup(
    job: Job,
    log_path: Path,
    env: dict[str, str],
    stop_asked: Callable[[], str | None],
    started: Callable[[int], None],
) -> str | None:
    """Each setup command with `sh -c` in the project, output to train.log, unless this
    key's marker says it was done on this machine. None when all is set up; else why not
    (a stop, or `setup failed (exit N): cmd`)."""
    if not job.setup:
        return None
    marker = setup_marker(job)
    if marker is None:
        return _setup_commands(job, log_path, env, stop_asked, started)
    marker.parent.mkdir(parents=True, exist_ok=True)
    # One setup at a time per key: two runs started at once on one machine would both
    # run `pip install` into the same environment. The second waits, then skips.
    with open(marker.with_suffix(".lock"), "a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                reason = stop_asked()
                if reason:
                    return reason
                time.sleep(0.2)
        if marker.exists():
            log_line(log_path, f"setup: done before on this machine (key {job.setup_key}), skipped")
            return None
        failure = _setup_commands(job, log_path, env, stop_asked, started)
        if failure is None:
            tmp = marker.with_name(f"{marker.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"setup": list(job.setup), "at": time.time()}) + "\n")
            os.replace(tmp, marker)
        return failure


def _setup_commands(
    job: Job,
    log_path: Path,
    env: dict[str, str],
    stop_asked: Callable[[], str | None],
    started: Callable[[int], None],
) -> str | None:
    for command in job.setup:
        log_line(log_path, f"setup: {command}")
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                ["sh", "-c", command],
                cwd=job.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        started(proc.pid)
        while proc.poll() is None:
            reason = stop_asked()
            if reason:
                stop_group(proc, 10.0)
                return reason
            time.sleep(0.1)
        reason = stop_asked()  # a stop's SIGTERM ends it with a code: not a failure
        if reason:
            return reason
        if proc.returncode != 0:
            return f"setup failed (exit {proc.returncode}): {command}"
    return None


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL what is left after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and (proc.poll() is None or group_alive(proc.pid)):
            time.sleep(0.1)
        if proc.poll() is not None and not group_alive(proc.pid):
            return


def escaped(env_name: str, run_id: str) -> list[int]:
    """Live processes whose environment names this run: what the command left running
    outside its process group (a daemon that called setsid), which would otherwise go on
    for ever on the user's own machine (`local`, `ssh`)."""
    needle = f"{env_name}={run_id}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def end_escaped(env_name: str, run_id: str, grace: float = 5.0) -> list[int]:
    """SIGTERM what `escaped` finds, SIGKILL what is left after `grace`; the pids."""
    pids = escaped(env_name, run_id)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 0.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and escaped(env_name, run_id):
            time.sleep(0.1)
    return pids


def log_line(path: Path, message: str) -> None:
    """One line of the agent's own in train.log, marked so nobody takes it for the script's."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"[gpuctl] {message}\n")


def group_alive(pgid: int | None) -> bool:
    """Does any process of the group still run? Zombies do not count.

    `sh -c` dies at once on SIGTERM while the script it started still checkpoints; the
    job runs until its whole group is gone.
    """
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the name: state, ppid, pgrp
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False
