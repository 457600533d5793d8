"""Incremental upload and resumable download over a real sshd (rsync and SFTP engines)."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuctl.errors import RemoteError
from gpuctl.events import SyncProgress
from gpuctl.files import FileEntry, walk_tree
from gpuctl.remote.ssh_host import SshHost
from gpuctl.remote.sync import MANIFEST, PART_SUFFIX, Record, plan_upload
from gpuctl.settings import Settings
from tests.events import drain as drive
from tests.fixtures.sshd import SshdServer

pytestmark = pytest.mark.sshd


def make_tree(root: Path, n: int = 120) -> None:
    for i in range(n):
        path = root / f"pkg{i % 7}" / f"sub{i % 3}" / f"m{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# module {i}\n" + "x = 1\n" * (i * 3))
    (root / "weights.bin").write_bytes(os.urandom(1 << 20))
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)


def remote_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != MANIFEST}


@pytest.fixture(params=["rsync", "sftp"])
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def engine_host(
    sshd: SshdServer, settings: Settings, remote_base: Path, method: str
) -> Iterator[SshHost]:
    h = SshHost(sshd.target(), settings, remote_base=str(remote_base), sync_method=method)
    yield h
    h.close()


def test_incremental_upload(
    engine_host: SshHost, method: str, tmp_path: Path, remote_base: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src)
    files = walk_tree(src)
    dest = remote_base / "runs" / "r1" / "work"
    events, stats = drive(engine_host.put_tree("r1", src, files, str(dest)))
    assert (stats.files, stats.skipped, stats.method) == (len(files), 0, method)
    assert stats.bytes == sum(f.size for f in files)
    assert remote_files(dest) == {f.rel for f in files}
    for f in files:
        there = dest / f.rel
        assert there.read_bytes() == (src / f.rel).read_bytes()
        assert int(there.stat().st_mtime) == int(f.mtime)
        assert there.stat().st_mode & 0o777 == f.mode
    progress = [e for e in events if isinstance(e, SyncProgress)]
    assert progress and progress[-1].files_done == len(files)
    assert {e.direction for e in progress} == {"up"}

    started = time.monotonic()
    _, again = drive(engine_host.put_tree("r1", src, walk_tree(src), str(dest)))
    assert (again.files, again.skipped) == (0, len(files))
    assert time.monotonic() - started < 0.5

    (src / "pkg1" / "sub1" / "m1.py").write_text("changed\n")
    _, one = drive(engine_host.put_tree("r1", src, walk_tree(src), str(dest)))
    assert (one.files, one.skipped, one.method) == (1, len(files) - 1, method)
    assert (dest / "pkg1/sub1/m1.py").read_text() == "changed\n"
    assert not [p for p in dest.rglob("*") if PART_SUFFIX in p.name]


def test_touched_but_identical_file_is_not_resent_over_sftp(
    sshd: SshdServer, settings: Settings, remote_base: Path, tmp_path: Path
) -> None:
    h = SshHost(sshd.target(), settings, sync_method="sftp")
    src = tmp_path / "src"
    make_tree(src, 10)
    drive(h.put_tree("r", src, walk_tree(src), str(remote_base / "w")))
    os.utime(src / "weights.bin", (time.time() + 100, time.time() + 100))  # a git checkout
    _, stats = drive(h.put_tree("r", src, walk_tree(src), str(remote_base / "w")))
    assert stats.files == 0  # hash on doubt: same content, nothing sent
    _, stats = drive(h.put_tree("r", src, walk_tree(src), str(remote_base / "w")))
    assert stats.files == 0
    h.close()


def test_plan_upload_is_pure() -> None:
    entries = [FileEntry("a", 1, 10.0, 0o644), FileEntry("b", 2, 20.0, 0o644)]
    manifest = {"a": Record(1, 10.0, 0o644), "b": Record(2, 19.0, 0o644, None)}
    send, refreshed = plan_upload(entries, manifest, Path("/nonexistent"))
    assert [e.rel for e in send] == ["b"] and refreshed == {}
    send, _ = plan_upload(entries, {}, Path("/nonexistent"))
    assert [e.rel for e in send] == ["a", "b"]


def test_gitignore_excludes_and_secrets_never_travel(
    host: SshHost, tmp_path: Path, remote_base: Path
) -> None:
    src = tmp_path / "proj"
    (src / "data").mkdir(parents=True)
    (src / "build").mkdir()
    (src / ".git").mkdir()
    (src / "train.py").write_text("print('hi')\n")
    (src / "data" / "x.csv").write_text("1,2\n")
    (src / ".gitignore").write_text("build/\n*.log\n")
    (src / "build" / "out.bin").write_bytes(b"\0" * 10)
    (src / "run.log").write_text("log\n")
    (src / "notes.tmp").write_text("scratch\n")
    (src / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (src / ".env").write_text("API_KEY=secret\n")
    (src / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (src / "data" / "credentials.json").write_text("{}")
    dest = remote_base / "work"
    drive(host.put_tree("r", src, walk_tree(src, excludes=("*.tmp",)), str(dest)))
    assert remote_files(dest) == {".gitignore", "train.py", "data/x.csv"}

    named = walk_tree(src, excludes=("*.tmp",), include_secrets=(".env",))
    drive(host.put_tree("r", src, named, str(dest)))
    assert remote_files(dest) == {".gitignore", "train.py", "data/x.csv", ".env"}
    assert not (dest / "id_rsa").exists()


def test_download_all_names_and_incremental(
    host: SshHost, remote_base: Path, tmp_path: Path
) -> None:
    run = remote_base / "runs" / "r9"
    (run / "ckpt").mkdir(parents=True)
    (run / "best.pt").write_bytes(os.urandom(300_000))
    (run / "history.json").write_text("{}")
    (run / "ckpt" / "e1.pt").write_bytes(b"1" * 1000)
    (run / MANIFEST).write_text("{}")
    (run / ("x" + PART_SUFFIX)).write_text("partial upload")
    out = tmp_path / "results"
    events, stats = drive(host.get_tree("r9", str(run), out))
    assert stats.files == 3
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {
        "best.pt",
        "history.json",
        "ckpt/e1.pt",
    }
    assert (out / "best.pt").read_bytes() == (run / "best.pt").read_bytes()
    assert any(isinstance(e, SyncProgress) and e.direction == "down" for e in events)
    _, again = drive(host.get_tree("r9", str(run), out))
    assert (again.files, again.skipped) == (0, 3)

    picked = tmp_path / "picked"
    _, some = drive(host.get_tree("r9", str(run), picked, ["best.pt", "last.pt", "ckpt"]))
    assert some.files == 2  # last.pt does not exist: skipped, not an error
    assert (picked / "ckpt" / "e1.pt").exists() and not (picked / "history.json").exists()


def test_partial_download_resumes(host: SshHost, remote_base: Path, tmp_path: Path) -> None:
    run = remote_base / "run"
    run.mkdir()
    blob = os.urandom(5 << 20)
    (run / "last.pt").write_bytes(blob)
    out = tmp_path / "out"
    out.mkdir()
    (out / ("last.pt" + PART_SUFFIX)).write_bytes(blob[: 2 << 20])  # an interrupted download
    _, stats = drive(host.get_tree("r", str(run), out, ["last.pt"]))
    assert stats.bytes == 3 << 20
    assert (out / "last.pt").read_bytes() == blob
    assert not (out / ("last.pt" + PART_SUFFIX)).exists()

    # A log that grew since the last download: only the new bytes travel.
    (run / "train.log").write_bytes(b"line\n" * 1000)
    drive(host.get_tree("r", str(run), out, ["train.log"]))
    with open(run / "train.log", "ab") as fh:
        fh.write(b"more\n" * 10)
    _, grew = drive(host.get_tree("r", str(run), out, ["train.log"]))
    assert grew.bytes == 50
    assert (out / "train.log").read_bytes() == (run / "train.log").read_bytes()

    # A partial that is not a prefix (the checkpoint was rewritten) is fetched whole.
    (out / ("last.pt" + PART_SUFFIX)).write_bytes(b"garbage" * 1000)
    (out / "last.pt").unlink()
    _, whole = drive(host.get_tree("r", str(run), out, ["last.pt"]))
    assert whole.bytes == len(blob) and (out / "last.pt").read_bytes() == blob


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_is_one_clean_line_and_leaves_no_partials(
    engine_host: SshHost, method: str, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("small\n")
    (src / "big.bin").write_bytes(os.urandom(3 << 20))
    with small_disk(tmp_path / "disk") as disk:
        dest = disk / "work"
        with pytest.raises(RemoteError) as info:
            drive(engine_host.put_tree("r", src, walk_tree(src), str(dest)))
        assert "disk full" in info.value.message and "\n" not in info.value.message
        leftovers = [p.name for p in dest.rglob("*") if p.name not in ("a.txt", MANIFEST)]
        assert leftovers == []


def test_write_bytes_on_a_full_disk(host: SshHost, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(RemoteError, match="disk full"):
            host.write_bytes(str(disk / "x.bin"), os.urandom(2 << 20))
        assert list(disk.iterdir()) == []


def test_rsync_failure_falls_back_to_sftp(
    sshd: SshdServer,
    settings: Settings,
    remote_base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No rsync on the machine, or the system ssh cannot get in: SFTP carries the files."""
    from gpuctl.remote import sshcmd

    monkeypatch.setattr(sshcmd, "rsync_shell", lambda *a, **k: "ssh -p 1 -o BatchMode=yes")
    src = tmp_path / "src"
    make_tree(src, 40)  # more than a small change: rsync is tried first
    auto = SshHost(sshd.target(), settings)
    _, stats = drive(auto.put_tree("r", src, walk_tree(src), str(remote_base / "a")))
    assert (stats.method, stats.files) == ("sftp", 42)
    assert remote_files(remote_base / "a") == {f.rel for f in walk_tree(src)}
    auto.close()
    forced = SshHost(sshd.target(), settings, sync_method="rsync")
    with pytest.raises(RemoteError, match=r"rsync to .* failed"):
        drive(forced.put_tree("r", src, walk_tree(src), str(remote_base / "b")))
    forced.close()


# -- what travels, and what the manifest believes ----------------------------------------------


def test_symlinks_out_of_the_tree_or_to_secrets_stay_home_and_are_reported(
    engine_host: SshHost, tmp_path: Path, remote_base: Path
) -> None:
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = s3cr3t\n")
    (home / "datasets").mkdir()
    (home / "datasets" / "train.csv").write_text("a,b\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    (src / ".env").write_text("TOKEN=s3cr3t\n")
    (src / "config.yaml").write_text("lr: 0.1\n")
    (src / "data.txt").symlink_to(home / ".aws" / "credentials")
    (src / "settings.txt").symlink_to(src / ".env")
    (src / "alias.yaml").symlink_to(src / "config.yaml")  # inside, not a secret: travels
    (src / "datasets").symlink_to(home / "datasets")

    skipped: list[str] = []
    files = walk_tree(src, skipped=skipped)
    assert sorted(skipped) == [
        "data.txt (points outside the work dir)",
        "datasets (points outside the work dir)",
        "settings.txt (points to a secret)",
    ]
    dest = remote_base / "w"
    drive(engine_host.put_tree("r", src, files, str(dest)))
    assert remote_files(dest) == {"train.py", "config.yaml", "alias.yaml"}
    assert (dest / "alias.yaml").read_text() == "lr: 0.1\n"  # sent as the file it names
    for path in dest.rglob("*"):
        assert "s3cr3t" not in path.read_text()


def test_a_file_rsync_could_not_send_is_sent_by_the_next_sync(
    sshd: SshdServer, settings: Settings, tmp_path: Path, remote_base: Path
) -> None:
    src = tmp_path / "src"
    make_tree(src, 40)
    files = walk_tree(src)
    gone = src / "pkg0" / "sub0" / "m0.py"
    text = gone.read_text()
    gone.unlink()  # vanished between listing and sending (an editor's save, a build)
    dest = remote_base / "w"
    host = SshHost(sshd.target(), settings, sync_method="rsync")
    try:
        events, stats = drive(host.put_tree("r", src, files, str(dest)))
        assert stats.method == "rsync"
        (warning,) = [e.message for e in events if getattr(e, "level", "") == "warning"]
        assert "1 file(s) not uploaded" in warning and "pkg0/sub0/m0.py" in warning
        assert remote_files(dest) == {f.rel for f in files} - {"pkg0/sub0/m0.py"}

        gone.write_text(text)
        os.utime(gone, (files[0].mtime, next(f.mtime for f in files if f.rel == "pkg0/sub0/m0.py")))
        _, again = drive(host.put_tree("r", src, walk_tree(src), str(dest)))
        assert (dest / "pkg0" / "sub0" / "m0.py").read_text() == text
        assert again.files == 1
    finally:
        host.close()


def test_rsync_keeps_a_run_dir_with_spaces_and_shell_characters_whole(
    sshd: SshdServer,
    settings: Settings,
    tmp_path: Path,
    remote_base: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RSYNC_OLD_ARGS", "1")  # a user's rsync set to the pre-3.2.4 habit
    src = tmp_path / "src"
    make_tree(src, 40)
    marker = f"PWNED-{os.getpid()}-{time.monotonic_ns()}"
    dest = remote_base / f"my run $(touch {marker}) 'x'"
    host = SshHost(sshd.target(), settings, sync_method="rsync")
    try:
        _, stats = drive(host.put_tree("r", src, walk_tree(src), str(dest)))
    finally:
        host.close()
    assert stats.method == "rsync"
    assert remote_files(dest) == {f.rel for f in walk_tree(src)}
    home = Path(pwd.getpwnam(sshd.user).pw_dir)  # where the remote shell would run it
    injected = (home / marker).exists()
    (home / marker).unlink(missing_ok=True)
    assert not injected
    assert sorted(p.name for p in remote_base.iterdir()) == [dest.name]
