"""Failures around a real local run: one line, a documented exit code, no traceback."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli import GPUCTL, gpuctl, json_lines
from tests.unit.test_broken_env import Mounts

pytestmark = pytest.mark.slow

DOCUMENTED = {0, 1, 2, 3, 4}
SLOW = ["--set", "epochs=30", "--set", "train_samples=1024", "--set", "val_samples=128"]


@pytest.fixture
def mounts():  # type: ignore[no-untyped-def]
    m = Mounts()
    yield m
    m.undo()


def test_ctrl_c_in_logs_follow_does_not_claim_a_launch_was_undone(gpuctl_home: Path) -> None:
    launched = gpuctl("launch", "validate", *SLOW)
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    try:
        follow = subprocess.Popen(
            [GPUCTL, "logs", run_id, "-f"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert follow.stdout is not None
        first = follow.stdout.readline()  # following: a line of the log arrived
        assert first, "no log line while following"
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=120)
        assert follow.returncode == 130, err
        assert "Traceback" not in err
        assert "cut short" not in err and "undone" not in err
        assert "keep going on their machines" in err
        status = json.loads(gpuctl("status", run_id, "--json").stdout)
        assert status["status"] in ("running", "finished")  # Ctrl-C left the run alone
    finally:
        gpuctl("down", run_id)


def test_results_dir_read_only_is_one_line_and_no_machine_is_left(
    gpuctl_home: Path, tmp_path: Path, mounts: Mounts
) -> None:
    source = tmp_path / "results-source"
    source.mkdir()
    results = mounts.read_only(source, tmp_path / "results")
    (gpuctl_home / "config.toml").write_text(f'results_dir = "{results}"\n')
    done = gpuctl("run", "validate", timeout=400)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output
    assert done.returncode in DOCUMENTED, output
    assert str(results) in output  # which directory could not take the results
    live = [
        i
        for i in json_lines(gpuctl("ls", "--json").stdout)
        if i.get("state") not in (None, "terminated")
    ]
    assert live == [], live


def test_a_launch_whose_reader_left_says_nothing_false_and_the_run_goes_on(
    gpuctl_home: Path,
) -> None:
    """`gpuctl launch validate | head -0`: the run exists, so exit 141 (the reader went
    away), never exit 2 "nothing was created", and no traceback in the log."""
    proc = subprocess.Popen(
        [GPUCTL, "launch", "validate", *SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the run id is printed
    err = proc.stderr.read()
    rc = proc.wait(timeout=300)
    runs = json_lines(gpuctl("ls", "--runs", "--json").stdout)
    try:
        assert rc == 141, (rc, err)
        assert "Traceback" not in err and "nothing was created" not in err, err
        assert "Traceback" not in (gpuctl_home / "gpuctl.log").read_text()
        assert [r["status"] for r in runs] in (["running"], ["finished"]), runs
    finally:
        for r in runs:
            gpuctl("down", r["id"], "--discard-results")
