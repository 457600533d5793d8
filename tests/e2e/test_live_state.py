"""What gpuctl shows is what is happening: a detached run's state, live, in every command.

The real CLI, trainer, agent and state store on the local provider. Nobody follows a
detached run, so each command must read the run's own state on its machine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, gpuctl, json_lines
from tests.e2e.test_local_cli import SLOW, wait_for

pytestmark = pytest.mark.slow


def launch(*args: str) -> str:
    proc = gpuctl("launch", "validate", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def trainer_status(home: Path, run_id: str) -> dict:
    path = home / "local" / "runs" / run_id / "status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def epochs_in_history(home: Path, run_id: str) -> int:
    """Epochs the trainer completed, from its history.json."""
    try:
        return len(json.loads((home / "local" / "runs" / run_id / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def agent_state(home: Path, run_id: str) -> str | None:
    path = home / "local" / "runs" / run_id / "agent_status.json"
    try:
        return json.loads(path.read_text()).get("state")
    except (OSError, ValueError):
        return None


def ended_events(home: Path, run_id: str) -> list[dict]:
    with Store(home / "state.db") as store:
        return store.events(run_id, kinds=["ended"])


def progress(status_text: str) -> tuple[int, int]:
    line = next(ln for ln in status_text.splitlines() if ln.startswith("progress"))
    done, total = line.split("epoch ")[1].split(",")[0].split("/")
    return int(done), int(total)


def test_status_follows_a_detached_run_and_its_end_is_recorded_once(gpuctl_home: Path) -> None:
    run_id = launch(*SLOW)
    wait_for(lambda: epochs_in_history(gpuctl_home, run_id) >= 2, 120, "two epochs")
    # Nobody follows the run: the store's copy is what the launch left (epoch 0).
    with Store(gpuctl_home / "state.db") as store:
        assert store.get_run(run_id).epoch == 0
    mid = gpuctl("status", run_id)
    assert mid.returncode == 0, mid.stderr
    assert "status    running" in mid.stdout
    done, total = progress(mid.stdout)
    assert done >= 2 and total == 12, mid.stdout  # the trainer's count, not the store's 0

    wait_for(lambda: agent_state(gpuctl_home, run_id) == "exited", 240, "the trainer to exit")
    assert trainer_status(gpuctl_home, run_id)["phase"] == "finished"
    end = gpuctl("status", run_id)
    assert "status    finished" in end.stdout, end.stdout
    assert progress(end.stdout) == (12, 12)
    runs = json_lines(gpuctl("ls", "--runs", "--json", "--cached").stdout)
    assert [(r["id"], r["status"], r["epoch"]) for r in runs] == [(run_id, "finished", 12)]
    resume = gpuctl("resume", run_id)
    assert resume.returncode == 2 and "already finished" in resume.stderr  # not "is running"
    # Every later look sees the same end; it is recorded once.
    for _ in range(2):
        follow = gpuctl("logs", run_id, "-f")
        assert follow.returncode == 0, follow.stderr
    assert gpuctl("status", run_id).returncode == 0
    assert gpuctl("ls", "--refresh").returncode == 0
    assert [e["status"] for e in ended_events(gpuctl_home, run_id)] == ["finished"]


def test_a_stopped_run_counts_completed_epochs(gpuctl_home: Path) -> None:
    """The CLI shows the epochs the trainer completed, as the control center does."""
    run_id = launch(*SLOW)
    wait_for(lambda: epochs_in_history(gpuctl_home, run_id) >= 2, 120, "two epochs")
    stop = gpuctl("stop", run_id)
    assert stop.returncode == 0, stop.stderr
    completed = epochs_in_history(gpuctl_home, run_id)
    assert trainer_status(gpuctl_home, run_id)["epoch"] == completed + 1  # the one it was in
    status = gpuctl("status", run_id)
    assert "status    stopped" in status.stdout
    assert progress(status.stdout) == (completed, 12), status.stdout
    runs = json_lines(gpuctl("ls", "--runs", "--json", "--cached").stdout)
    assert runs[0]["epoch"] == completed
    again = gpuctl("stop", run_id)  # nothing left to stop: said so, the record untouched
    assert again.returncode == 0 and "already stopped" in again.stdout, again.stderr
    assert [e["status"] for e in ended_events(gpuctl_home, run_id)] == ["stopped"]


def test_down_while_another_gpuctl_follows_records_stopped_by_the_user(
    gpuctl_home: Path,
) -> None:
    """The follower finds the run directory gone: that is not a failure of the run."""
    run_id = launch(*SLOW)
    follower = subprocess.Popen(
        [GPUCTL, "logs", run_id, "-f", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: epochs_in_history(gpuctl_home, run_id) >= 1, 120, "one epoch")
        down = gpuctl("down", run_id)
        assert down.returncode == 0, down.stderr
        assert "terminated" in down.stdout
        follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
    runs = json_lines(gpuctl("ls", "--runs", "--json", "--cached").stdout)
    assert (runs[0]["status"], runs[0]["reason"]) == (
        "stopped",
        "stopped by user: instance removed",
    )
    assert [e["status"] for e in ended_events(gpuctl_home, run_id)] == ["stopped"]
