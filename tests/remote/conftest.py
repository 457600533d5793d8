"""Fixtures for the remote tests: settings in the per-test GPUCTL_HOME, an SshHost."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuctl import settings as settings_mod
from gpuctl.remote.ssh_host import SshHost
from gpuctl.settings import Settings
from tests.fixtures.sshd import SshdServer


@pytest.fixture
def settings(gpuctl_home: Path) -> Settings:
    return settings_mod.load()


@pytest.fixture
def remote_base(tmp_path: Path) -> Path:
    """The machine is this machine: its gpuctl dir is a temp dir, not ~/gpuctl."""
    base = tmp_path / "remote"
    base.mkdir()
    return base


@pytest.fixture
def host(sshd: SshdServer, settings: Settings, remote_base: Path) -> Iterator[SshHost]:
    h = SshHost(sshd.target(), settings, remote_base=str(remote_base))
    yield h
    h.close()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For runs through the real CLI: the "machine" is this one, its gpuctl dir a temp
    dir (GPUCTL_REMOTE_BASE) and its python this venv (torch CPU)."""
    base = tmp_path / "remote-gpuctl"
    monkeypatch.setenv("GPUCTL_REMOTE_BASE", str(base))
    monkeypatch.setenv("GPUCTL_REMOTE_PYTHON", sys.executable)
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", "/dev/null")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return base
