"""Two `gpuctl resume RUN` at once (two shells, or the TUI and the CLI): exactly one
resumes the run; the other says who has it, exits 2 and starts nothing."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, gpuctl, json_lines

pytestmark = pytest.mark.slow

SLOW = ["--set", "epochs=12", "--set", "train_samples=1024", "--set", "val_samples=128"]


def _epochs_done(run_dir: Path) -> int:
    try:
        return len(json.loads((run_dir / "history.json").read_text() or "[]"))
    except (OSError, ValueError):
        return 0


def _launched_one_epoch(home: Path) -> str:
    """A detached local run that has finished its first epoch: its id."""
    launched = gpuctl("launch", "validate", *SLOW)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    run_dir = home / "local" / "runs" / run_id
    deadline = time.monotonic() + 180
    while _epochs_done(run_dir) < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    return run_id


def test_two_resumes_at_once_exactly_one_relaunches(gpuctl_home: Path) -> None:
    run_id = _launched_one_epoch(gpuctl_home)
    assert gpuctl("stop", run_id).returncode == 0
    with Store(gpuctl_home / "state.db") as store:
        assert store.get_run(run_id).status.value == "stopped"
        starts_before = len(store.events(run_id, kinds=["started"]))

    procs = [
        subprocess.Popen(
            [GPUCTL, "resume", run_id, "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        outcomes = [(p, *p.communicate(timeout=400)) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = sorted(p.returncode for p, _, _ in outcomes)
    assert codes == [0, 2], [(p.returncode, err[-1500:]) for p, _, err in outcomes]
    (winner,) = [(p, out) for p, out, _ in outcomes if p.returncode == 0]
    (loser,) = [(out, err) for p, out, err in outcomes if p.returncode == 2]
    message = json_lines(loser[0])[-1]
    assert message["error"] == (
        f"run {run_id} is being resumed by another gpuctl (pid {winner[0].pid})"
    ), message
    assert "Traceback" not in loser[1]
    events = json_lines(winner[1])
    assert [e["event"] for e in events].count("trainer_started") == 1
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "finished"
    with Store(gpuctl_home / "state.db") as store:
        assert len(store.events(run_id, kinds=["started"])) == starts_before + 1
        assert store.get_run(run_id).attempt == 2  # resumed once, not twice


def test_two_downs_at_once_take_turns_and_end_the_machine_once(gpuctl_home: Path) -> None:
    """Two `gpuctl down RUN` at once: one downloads and terminates; the other then finds
    nothing to remove (before, both downloaded into one directory and both terminated)."""
    run_id = _launched_one_epoch(gpuctl_home)
    downs = [
        subprocess.Popen(
            [GPUCTL, "down", run_id],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(2)
    ]
    said = [d.communicate(timeout=300) for d in downs]
    assert [d.returncode for d in downs] == [0, 0], said
    text = [out + err for out, err in said]
    assert sum("terminated" in t for t in text) == 1, text
    assert sum("nothing to remove" in t for t in text) == 1, text
    with Store(gpuctl_home / "state.db") as store:
        assert len(store.events(run_id, kinds=["teardown"])) == 1
        assert store.get_run(run_id).status.value == "stopped"
