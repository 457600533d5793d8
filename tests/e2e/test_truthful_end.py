"""A run's recorded end is what its trainer did: the real CLI, agent and trainer, locally.

Unknown is not done: a trainer whose agent died still trains, so its run is running.
A stop is a stop, however early it comes.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.cli import gpuctl, json_lines
from tests.e2e.test_local_cli import run_status, wait_for

pytestmark = pytest.mark.slow

LONG = ["--set", "epochs=40", "--set", "train_samples=1024", "--set", "val_samples=128"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # orphaned, it may sit unreaped as a zombie once it exits
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def test_a_dead_agent_leaves_a_live_trainer_running_and_stop_still_stops_it(
    gpuctl_home: Path,
) -> None:
    run_id = gpuctl("launch", "validate", *LONG).stdout.strip().splitlines()[-1]
    run_dir = gpuctl_home / "local" / "runs" / run_id
    wait_for(lambda: (run_dir / "status.json").exists(), 90, "the trainer's first status")
    agent = json.loads((run_dir / "agent_status.json").read_text())
    os.kill(agent["agent_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(agent["agent_pid"]), 30, "the agent gone")
    assert alive(agent["trainer_pid"])

    status = gpuctl("status", run_id).stdout
    assert "status    running: the agent on the machine died" in status
    assert "no longer enforced" in status and f"gpuctl stop {run_id}" in status
    runs = json_lines(gpuctl("ls", "--runs", "--json").stdout)
    assert [r["status"] for r in runs if r["id"] == run_id] == ["running"]
    assert run_status(gpuctl_home, run_id) == "running"

    stop = gpuctl("stop", run_id)
    assert stop.returncode == 0, stop.stderr
    assert not alive(agent["trainer_pid"])
    assert run_status(gpuctl_home, run_id) == "stopped"
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "interrupted"


def test_a_stop_right_after_launch_is_stopped_not_failed(gpuctl_home: Path) -> None:
    run_id = gpuctl("launch", "validate", *LONG).stdout.strip().splitlines()[-1]
    stop = gpuctl("stop", run_id)  # the trainer is still importing torch
    assert stop.returncode == 0, stop.stderr
    assert run_status(gpuctl_home, run_id) == "stopped"
    assert "status    stopped" in gpuctl("status", run_id).stdout
