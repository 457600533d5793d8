"""`gpuctl supervise` through the real CLI: one per data dir, its status, its service file.

The service-manager tests run with a fake HOME and a PATH without systemctl: they assert
on the file written and on what gpuctl says, never on the real service manager.
"""

from __future__ import annotations

import os
import plistlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gpuctl import supervisor_service
from gpuctl.settings import load
from gpuctl.state import Store
from gpuctl.tui.model import build_snapshot
from tests.cli import GPUCTL, gpuctl

pytestmark = pytest.mark.slow


def test_one_supervisor_per_data_dir_status_ls_and_a_clean_stop(gpuctl_home: Path) -> None:
    proc = subprocess.Popen(
        [GPUCTL, "supervise", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("supervisor: started"), first + (proc.stderr.read() or "")
        second = gpuctl("supervise", timeout=60)
        assert second.returncode == 2, second.stderr
        line = f"error: a supervisor already runs for {gpuctl_home} (pid {proc.pid}, since "
        assert second.stderr.startswith(line), second.stderr

        status = gpuctl("supervise", "--status")
        assert status.returncode == 0, status.stderr
        assert f"(pid {proc.pid}), data dir {gpuctl_home}" in status.stdout
        assert status.stdout.startswith("supervisor: running since ")
        assert "started" in status.stdout  # what it did last

        listed = gpuctl("ls", "--runs", "--cached")
        assert "supervisor: running since " in listed.stdout, listed.stdout
        # The TUI's chip reads the same lock, without waiting on it.
        snap = build_snapshot(Store(gpuctl_home / "state.db"), load(), 0.0)
        assert snap.supervisor.startswith("supervisor: running since ")

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "supervisor: stopped (the runs go on on their machines)" in out
    after = gpuctl("supervise", "--status")
    assert after.stdout.startswith("supervisor: not running"), after.stdout
    assert ": stopped" in after.stdout
    assert "supervisor:" not in gpuctl("ls", "--runs", "--cached").stdout
    assert build_snapshot(Store(gpuctl_home / "state.db"), load(), 0.0).supervisor == ""


def _no_systemctl(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "bin").mkdir()
    return {"HOME": str(home), "PATH": str(tmp_path / "bin")}


def test_install_shows_then_writes_the_user_unit_and_uninstall_removes_it(
    tmp_path: Path, gpuctl_home: Path
) -> None:
    env = _no_systemctl(tmp_path)
    unit = Path(env["HOME"]) / ".config/systemd/user/gpuctl-supervise.service"

    declined = gpuctl("supervise", "--install", env=env, input="n\n")
    assert declined.returncode == 2 and "nothing written" in declined.stdout
    assert "Restart=on-failure" in declined.stdout  # shown before the question
    assert not unit.exists()

    done = gpuctl("supervise", "--install", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    assert done.stdout.index(text.splitlines()[0]) < done.stdout.index(f"wrote {unit}")
    assert f"ExecStart={sys.executable} -m gpuctl supervise" in text
    assert "Restart=on-failure" in text and "WantedBy=default.target" in text
    assert f'Environment="GPUCTL_HOME={gpuctl_home.resolve()}"' in text
    assert "systemctl not found: load it yourself with `systemctl --user daemon-reload;" in (
        done.stdout
    )

    removed = gpuctl("supervise", "--uninstall", "--yes", env=env)
    assert removed.returncode == 0, removed.stderr
    assert f"removed {unit}" in removed.stdout and not unit.exists()
    again = gpuctl("supervise", "--uninstall", "--yes", env=env)
    assert "not installed" in again.stdout


def test_the_macos_agent_restarts_on_failure_and_runs_this_gpuctl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCTL_HOME", str(tmp_path / "data"))
    service = supervisor_service.service_file("darwin", tmp_path)
    assert service.path == tmp_path / "Library/LaunchAgents/dev.gpuctl.supervise.plist"
    plist = plistlib.loads(service.text.encode())
    assert plist["ProgramArguments"] == [sys.executable, "-m", "gpuctl", "supervise"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False} and plist["RunAtLoad"] is True
    assert plist["EnvironmentVariables"] == {"GPUCTL_HOME": str((tmp_path / "data").resolve())}
    assert service.load == (("launchctl", "load", "-w", str(service.path)),)
    assert os.path.basename(service.path) == "dev.gpuctl.supervise.plist"
