"""Downloads from a hostile machine: names, paths and modes it lists are not trusted.

The machine is a paramiko SSH + SFTP server on 127.0.0.1 whose listing is synthesised,
so it can offer names no disk holds. What matters is what lands on this machine.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import paramiko
import pytest

from gpuctl import settings as settings_mod
from gpuctl.events import Notice
from gpuctl.models import SshTarget
from gpuctl.remote.ssh_host import SshHost
from tests.events import drain
from tests.fakes.sftp_server import HostileSftp

REG = stat.S_IFREG


@pytest.fixture
def host(hostile_sftp: HostileSftp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SshHost:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", "/dev/null")
    key = tmp_path / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(key))
    target = SshTarget(host="127.0.0.1", port=hostile_sftp.port, user="me", key_path=str(key))
    h = SshHost(target, settings_mod.load(), remote_base="/base")
    yield h
    h.close()


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_hostile_names_are_refused_and_nothing_lands_outside(
    hostile_sftp: HostileSftp, host: SshHost, tmp_path: Path
) -> None:
    hostile_sftp.tree = {
        "/run": [
            ("best.pt", REG | 0o644, b"weights"),
            ("../evil", REG | 0o644, b"climbed"),
            ("a/b", REG | 0o644, b"nested"),
            ("nul\0name", REG | 0o644, b"nul"),
            ("..", stat.S_IFDIR | 0o755, b""),
            ("sub", stat.S_IFDIR | 0o755, b""),
        ],
        "/run/sub": [("../../escape", REG | 0o644, b"climbed twice"), ("ok.txt", REG, b"ok")],
    }
    outside = tmp_path / "home"
    results = outside / "results" / "r1"
    results.mkdir(parents=True)
    events, stats = drain(host.get_tree("r1", "/run", results, None))

    assert files_under(outside) == {
        "results",
        "results/r1",
        *(f"results/r1/{n}" for n in ("best.pt", "sub", "sub/ok.txt")),
    }
    assert (results / "best.pt").read_bytes() == b"weights"
    assert not (tmp_path / "escape").exists() and not (outside / "evil").exists()
    assert stats.files == 2
    (warning,) = [e for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert "skipped 4 remote file name(s)" in warning.message
    for name in ("'../evil'", "'a/b'", "'nul\\x00name'", "'sub/../../escape'"):
        assert name in warning.message
    # Nothing hostile was even asked for.
    assert all(".." not in p and "\0" not in p for p in hostile_sftp.opened)


def test_symlinks_already_in_the_results_dir_are_not_written_through(
    hostile_sftp: HostileSftp, host: SshHost, tmp_path: Path
) -> None:
    hostile_sftp.tree = {
        "/run": [
            ("best.pt", REG | 0o644, b"weights"),
            ("logs", stat.S_IFDIR | 0o755, b""),
        ],
        "/run/logs": [("train.log", REG | 0o644, b"log")],
    }
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_bytes(b"mine")
    results = tmp_path / "results"
    results.mkdir()
    (results / "best.pt").symlink_to(precious / "keep")
    (results / "logs").symlink_to(precious)

    events, stats = drain(host.get_tree("r1", "/run", results, None))

    assert (precious / "keep").read_bytes() == b"mine"
    assert sorted(os.listdir(precious)) == ["keep"]
    assert stats.files == 0
    (warning,) = [e for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert "'best.pt'" in warning.message and "'logs/train.log'" in warning.message


def test_remote_modes_are_not_copied(
    hostile_sftp: HostileSftp, host: SshHost, tmp_path: Path
) -> None:
    hostile_sftp.tree = {
        "/run": [
            ("best.pt", REG | stat.S_ISUID | 0o4777, b"weights"),
            ("dir", stat.S_IFDIR | 0o777, b""),
        ],
        "/run/dir": [("run.sh", REG | 0o777, b"#!/bin/sh\n")],
    }
    results = tmp_path / "results"
    drain(host.get_tree("r1", "/run", results, None))
    assert stat.S_IMODE((results / "best.pt").stat().st_mode) == 0o600
    assert stat.S_IMODE((results / "dir" / "run.sh").stat().st_mode) == 0o600
    assert stat.S_IMODE((results / "dir").stat().st_mode) == 0o700
