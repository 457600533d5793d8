"""The agent dies under a trainer that still trains: the run is not over.

The real agent runs as a script beside the stdlib stand-in trainer; the supervisor is
killed with SIGKILL (the OOM killer, a stray `kill -9`), the trainer lives on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .conftest import Machine, wait_for


def test_a_live_trainer_outlives_its_dead_agent_and_stop_still_stops_it(
    machine: Machine,
) -> None:
    machine.configure()
    started = machine.agent("start")
    wait_for(lambda: machine.trainer_status().get("step", 0) >= 3, what="training")
    os.kill(started["agent_pid"], signal.SIGKILL)
    wait_for(lambda: not machine.agent("status")["agent_alive"], what="the agent gone")

    status = machine.agent("status")
    assert status["state"] == "running"  # not lost: the trainer trains on
    assert status["trainer_alive"] is True
    agent = machine.code / "agent" / "agent.py"
    again = subprocess.run(  # a resume must not start a second trainer in its files
        [sys.executable, str(agent), "start", "--run-dir", str(machine.run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 3 and "already running" in again.stdout

    stopped = machine.agent("stop")
    assert stopped["status"]["state"] == "exited"
    assert stopped["status"]["reason"] == "stopped by user"
    assert stopped["status"]["trainer_alive"] is False
    assert stopped["status"]["trainer"]["phase"] == "interrupted"  # it checkpointed
    assert (machine.run_dir / "last.pt").is_file()
    assert machine.agent("status")["state"] == "exited"  # every later reader agrees


def test_only_when_the_trainer_is_gone_too_is_the_agent_lost(machine: Machine) -> None:
    machine.configure()
    started = machine.agent("start")
    wait_for(lambda: machine.trainer_status().get("step", 0) >= 1, what="training")
    os.kill(started["agent_pid"], signal.SIGKILL)
    os.killpg(started["trainer_pid"], signal.SIGKILL)
    status = wait_for(lambda: (s := machine.agent("status"))["state"] == "lost" and s, what="lost")
    assert status["trainer_alive"] is False and status["agent_alive"] is False
