"""Shared fixtures: every test gets its own GPUCTL_HOME so nothing touches the user's files."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# `sshd` / `private_sshd`: a real OpenSSH server; `checkip`: the caller-address service;
# `hostile_sftp`: an SFTP server that lists names no disk holds
pytest_plugins = ["tests.fixtures.sshd", "tests.fakes.checkip", "tests.fakes.sftp_server"]


def pytest_configure(config: pytest.Config) -> None:
    """Tests press Ctrl-C on gpuctl as a user at a terminal would. A runner started in
    the background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
    gpuctl rightly keeps an ignored signal ignored, so they would fail for a reason that
    is not gpuctl's: give this process (and so every gpuctl it starts) a terminal's Ctrl-C."""
    del config
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def gpuctl_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Isolate gpuctl's config, state and keys per test; no cloud credentials leak in."""
    home = tmp_path_factory.mktemp("gpuctl-home")
    monkeypatch.setenv("GPUCTL_HOME", str(home))
    for var in (
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "DIGITALOCEAN_TOKEN",
        "AMD_DEVCLOUD_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # Trainers started by tests share 2 cores with pytest and each other: one thread each
    # keeps several at once from thrashing (the benchmarks use every core).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield home
