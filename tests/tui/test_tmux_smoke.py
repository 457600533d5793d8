"""The real `gpuctl` console script in a real terminal (tmux): open, launch, watch, quit.

Keys go in with send-keys and the screen comes back with capture-pane, so this covers
what pilot tests cannot: the entry point, the terminal driver, and quitting cleanly
while nothing is left running in the app.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cli import GPUCTL

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.session = "gpuctl"

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def wait(self, check: Callable[[str], bool], what: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.screen()
            if check(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")


@pytest.fixture
def tmux(gpuctl_home: Path, tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(f"gpuctl-test-{os.getpid()}")
    shell = tmp_path / "shell.sh"  # stands in for the user's $SHELL behind `o`
    shell.write_text(f"#!/bin/sh\npwd > {tmp_path / 'shell-cwd'}\necho IN-THE-SHELL\nsleep 1\n")
    shell.chmod(0o755)
    env = (
        f"GPUCTL_HOME={shlex.quote(str(gpuctl_home))} TERM=xterm-256color "
        f"SHELL={shlex.quote(str(shell))}"
    )
    command = f"env -u COLUMNS -u LINES {env} {shlex.quote(GPUCTL)}; echo EXITED:$?; sleep 60"
    t.run("new-session", "-d", "-x", "120", "-y", "36", "-s", t.session, command)
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)


def test_open_launch_validate_watch_it_finish_and_quit(tmux: Tmux, tmp_path: Path) -> None:
    tmux.wait(lambda s: "providers" in s and "Launch" in s, "the main screen", timeout=30)
    tmux.keys("l")
    tmux.wait(lambda s: "Launch a run" in s and "offer from local" in s, "the launch modal")
    tmux.keys("C-s")
    screen = tmux.wait(lambda s: "validate-" in s and "Launch a run" not in s, "the new row")
    assert any(w in screen for w in ("provisioning", "syncing", "up ", "training"))
    tmux.wait(lambda s: "training" in s, "training", timeout=60)
    tmux.keys("o")  # a shell on the machine (here: this one), in the run's directory
    tmux.wait(lambda s: "IN-THE-SHELL" in s, "the shell", timeout=20)
    tmux.wait(lambda s: "NAME / RUN" in s, "the app back after the shell", timeout=20)
    cwd = (tmp_path / "shell-cwd").read_text().strip()
    assert "/local/runs/validate-" in cwd
    tmux.keys("Enter")  # the new row is selected: open its run screen
    tmux.wait(lambda s: "epoch 1/2 step" in s, "log lines in the run screen", timeout=90)
    tmux.wait(lambda s: "finished" in s and "epoch 2/2" in s, "the finished run", timeout=90)
    tmux.keys("Escape")
    screen = tmux.wait(lambda s: "NAME / RUN" in s and "finished" in s, "the finished row")
    assert "2/2" in screen
    tmux.keys("q")
    screen = tmux.wait(lambda s: "EXITED:" in s, "gpuctl to exit", timeout=30)
    assert "EXITED:0" in screen
    assert "Traceback" not in screen


def test_a_hung_up_terminal_ends_the_app_instead_of_spinning(gpuctl_home: Path) -> None:
    """The terminal vanishes and no hangup signal arrives (ignored, as under nohup, or the
    app was not in the foreground group): it must quit, not burn a core for ever."""
    import psutil

    t = Tmux(f"gpuctl-hup-{os.getpid()}")
    command = (
        f"trap '' HUP; exec env GPUCTL_HOME={shlex.quote(str(gpuctl_home))} {shlex.quote(GPUCTL)}"
    )
    t.run("new-session", "-d", "-x", "100", "-y", "30", "-s", t.session, command)
    try:
        t.wait(lambda s: "providers" in s and "Launch" in s, "the main screen", timeout=30)
        server_pid = int(t.run("display-message", "-p", "#{pid}").strip())
        apps = [
            p
            for p in psutil.Process(server_pid).children(recursive=True)
            if GPUCTL in " ".join(p.cmdline())
        ]
        assert apps, "the gpuctl process under tmux"
        psutil.Process(server_pid).kill()  # the terminal vanishes with no SIGHUP delivered
        _gone, alive = psutil.wait_procs(apps, timeout=30)
        for proc in alive:
            proc.kill()
        assert alive == [], "gpuctl kept running on a dead terminal"
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)
