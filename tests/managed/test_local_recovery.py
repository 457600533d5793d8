"""Recovery on the local provider with the real trainer (no cloud, no SSH): a managed run
whose agent and trainer are killed comes back on its own; `gpuctl resume` of a run whose
machine is gone relaunches it from the checkpoint gpuctl holds."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import gpuctl, json_lines

from .conftest import Stream, wait_for

pytestmark = pytest.mark.slow

SHORT = ["--set", "train_samples=512", "--set", "val_samples=64"]


def _history(results: Path) -> list[int]:
    return [h["epoch"] for h in json.loads((results / "history.json").read_text())]


def test_managed_run_recovers_after_its_agent_and_trainer_are_killed(gpuctl_home: Path) -> None:
    run = Stream(["run", "validate", "--managed", "--json", "--set", "epochs=5", *SHORT], {})
    try:
        first = wait_for(lambda: run.first("epoch", epoch=2), 240, "epoch 2")
        status_file = gpuctl_home / "local" / "runs" / first["run_id"] / "agent_status.json"
        pids = json.loads(status_file.read_text())
        os.killpg(pids["trainer_pid"], signal.SIGKILL)  # no checkpoint on the way out
        os.kill(pids["agent_pid"], signal.SIGKILL)
        rc, stderr = run.wait(timeout=300)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 0, stderr[-3000:]
    events = run.events
    (recovered,) = [e for e in events if e["event"] == "recovered"]
    assert recovered["same_machine"] is True and recovered["epoch"] >= 3
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    assert _history(Path(final["results_dir"])) == [1, 2, 3, 4, 5]
    with Store(gpuctl_home / "state.db") as store:
        assert store.get_run(final["run_id"]).attempt == 2
        rows = [e["kind"] for e in store.events(final["run_id"])]
        assert rows.count("recovering") == 1 and rows.count("recovered") == 1
    assert "attempts  2 (recovered 1 time(s))" in gpuctl("status", final["run_id"]).stdout


def test_resume_by_hand_relaunches_when_the_machine_is_gone(gpuctl_home: Path) -> None:
    launched = gpuctl("launch", "validate", "--set", "epochs=5", *SHORT)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    log = gpuctl_home / "local" / "runs" / run_id / "train.log"
    wait_for(lambda: log.exists() and "epoch 2/5 done" in log.read_text(), 240, "epoch 2")
    assert gpuctl("stop", run_id).returncode == 0
    assert gpuctl("download", run_id).returncode == 0  # gpuctl holds the checkpoint
    assert gpuctl("down", run_id).returncode == 0  # ... and the machine is gone
    assert not log.exists()
    resumed = gpuctl("resume", run_id, "--json", timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = json_lines(resumed.stdout)
    steps = [e["step"] for e in events if e["event"] == "recovering"]
    assert "relaunching" in steps and "restoring" in steps, steps
    assert [e["event"] for e in events].count("instance_up") == 1
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    assert _history(Path(final["results_dir"])) == [1, 2, 3, 4, 5]
    text = (Path(final["results_dir"]) / "train.log").read_text()
    assert "resumed from" in text and text.count("epoch 1/5 done") == 1
