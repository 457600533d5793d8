"""End to end through the real CLI with `--provider ssh` against a real sshd.

The "remote" machine is this one: its gpuctl dir is a temp dir (GPUCTL_REMOTE_BASE) and
its python is the project venv (GPUCTL_REMOTE_PYTHON, torch CPU), so the whole path a
cloud run takes (connect, pin, probe, rsync, agent start, tail, download) runs for real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gpuctl.state import Store
from tests.fixtures.sshd import SshdServer, free_port

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

GPUCTL = str(Path(sys.executable).parent / "gpuctl")
# About a second an epoch here: long enough to act on mid-run, short enough for CI.
RUN = ["--set", "epochs=8", "--set", "train_samples=1024", "--set", "val_samples=128"]
# Fast epochs, many of them: a stop or a watchdog always lands mid-run.
LONG = ["--set", "train_samples=256", "--set", "val_samples=64"]


def gpuctl(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GPUCTL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def on(sshd: SshdServer, key: Path | None = None) -> list[str]:
    return ["--provider", "ssh", "--host", sshd.spec, "--identity", str(key or sshd.key_path)]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_streams_logs_through_a_dropped_link_and_downloads_results(
    sshd: SshdServer, remote: Path
) -> None:
    proc = subprocess.Popen(
        [GPUCTL, "run", "validate", *on(sshd), *RUN, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    killed = 0
    try:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            events.append(json.loads(line))
            logged = [e for e in events if e["event"] == "log"]
            if not killed and len(logged) >= 3:
                killed = sshd.kill_all_connections()  # every link of this gpuctl drops
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert rc == 0, stderr
    assert killed >= 1
    kinds = [e["event"] for e in events]
    assert kinds[0] == "resolved" and kinds[-1] == "finished", kinds
    for expected in ("ssh_ready", "trainer_started", "log", "epoch", "gpu", "downloaded"):
        assert expected in kinds, expected
    assert events[-1]["status"] == "finished" and events[-1]["epochs"] == 8
    results = Path(events[-1]["results_dir"])
    for name in ("best.pt", "last.pt", "history.json", "train.log", "events.jsonl"):
        assert (results / name).is_file(), name
    # Every log line arrived once, in order, across the reconnect.
    streamed = [ln for e in events if e["event"] == "log" for ln in e["lines"]]
    assert streamed == (results / "train.log").read_text().splitlines()
    run_dir = remote / "runs" / events[-1]["run_id"]
    assert (run_dir / "train.log").read_bytes() == (results / "train.log").read_bytes()
    assert "Traceback" not in stderr and "Socket exception" not in stderr


def test_stop_checkpoints_and_resume_continues(sshd: SshdServer, remote: Path) -> None:
    launched = gpuctl("launch", "validate", *on(sshd), *LONG, "--set", "epochs=30")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    log = remote / "runs" / run_id / "train.log"
    wait_for(lambda: log.exists() and "epoch 2/" in log.read_text(), 90, "epoch 2")
    stopped = gpuctl("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert (remote / "runs" / run_id / "last.pt").is_file()
    home = Path(os.environ["GPUCTL_HOME"])
    with Store(home / "state.db") as store:
        assert store.get_run(run_id).status.value == "stopped"
    resumed = gpuctl("resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    events = json_lines(resumed.stdout)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "finished"
    text = log.read_text()
    assert "resumed from epoch" in text and "finished 30 epochs" in text
    history = json.loads((remote / "runs" / run_id / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 31))


def test_agent_max_hours_stops_the_trainer_with_a_checkpoint(
    sshd: SshdServer, remote: Path
) -> None:
    home = Path(os.environ["GPUCTL_HOME"])
    (home / "config.toml").write_text("[profiles.ssh]\nagent_time_scale = 0.001\n")
    # 2 "hours" x 0.001 = 7.2 s on the machine, far less than 500 epochs take.
    proc = gpuctl(
        "run", "validate", *on(sshd), *LONG, "--set", "epochs=500", "--max-hours", "2", "--json"
    )
    events = json_lines(proc.stdout)
    assert events[-1]["event"] == "finished", proc.stderr
    assert events[-1]["status"] == "interrupted"
    run_id = events[-1]["run_id"]
    assert (remote / "runs" / run_id / "last.pt").is_file()
    with Store(home / "state.db") as store:
        assert "max" in store.get_run(run_id).reason.lower()


@pytest.mark.parametrize("fault", ["wrong key", "closed port"])
def test_unreachable_box_is_one_clear_line_exit_3(
    sshd: SshdServer, remote: Path, fault: str
) -> None:
    args = on(sshd, sshd.unauthorized_key())
    if fault == "closed port":
        args = ["--provider", "ssh", "--host", f"{sshd.user}@127.0.0.1:{free_port()}"]
        args += ["--identity", str(sshd.key_path)]
    started = time.monotonic()
    proc = gpuctl("run", "validate", *args, timeout=60)
    assert time.monotonic() - started < 15
    assert proc.returncode == 3, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1
    assert ("authentication failed" if fault == "wrong key" else "refused") in errors[0]
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_stop_on_an_ssh_box_ends_the_runs_meter_and_leaves_the_box(
    sshd: SshdServer, remote: Path
) -> None:
    """The box is the user's: once the trainer stopped, the run no longer runs up its bill."""
    home = Path(os.environ["GPUCTL_HOME"])
    (home / "config.toml").write_text(
        f"""[profiles.box]
provider = "ssh"
host = "{sshd.spec}"
identity = "{sshd.key_path}"
price_per_hour = 2.0
"""
    )
    launched = gpuctl("launch", "validate", "--provider", "box", *LONG, "--set", "epochs=30")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    log = remote / "runs" / run_id / "train.log"
    wait_for(lambda: log.exists() and "epoch 2/" in log.read_text(), 90, "epoch 2")
    with Store(home / "state.db") as store:
        assert [s.end for s in store.segments(run_id=run_id)] == [None]  # metered while used
    stopped = gpuctl("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    assert "the meter of" in stopped.stdout + stopped.stderr
    with Store(home / "state.db") as store:
        segments = store.segments(run_id=run_id)
    assert segments and all(s.end is not None for s in segments)
    meter = json.loads(gpuctl("cost", "--json").stdout)
    assert meter["total"]["burn_per_hour"] == 0
    assert (remote / "runs" / run_id / "last.pt").is_file()  # the box and its files stay


def test_an_unreadable_agent_status_is_not_the_end_of_a_run(
    sshd: SshdServer, remote: Path, tmp_path: Path
) -> None:
    """Unknown is not done: a follow that cannot read the agent's config keeps following,
    and the run finishes as finished once it can be read again."""
    launched = gpuctl("launch", "validate", *on(sshd), *LONG, "--set", "epochs=12")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip().splitlines()[-1]
    run_dir = remote / "runs" / run_id
    log = run_dir / "train.log"
    wait_for(lambda: log.exists() and "epoch 1/" in log.read_text(), 90, "epoch 1")
    config = run_dir / "agent.json"
    saved = config.read_bytes()
    config.write_bytes(b"")  # what a reader sees of a file that is being rewritten, or lost
    out = tmp_path / "follow.out"
    with out.open("w") as sink:
        follow = subprocess.Popen(
            [GPUCTL, "logs", run_id, "-f"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    try:
        wait_for(lambda: "cannot read the agent's status" in out.read_text(), 60, "the warning")
        assert follow.poll() is None, out.read_text()  # still following, nothing declared
        with Store(Path(os.environ["GPUCTL_HOME"]) / "state.db") as store:
            assert store.get_run(run_id).status.value == "running"
        config.write_bytes(saved)
        assert follow.wait(timeout=180) == 0, out.read_text()
    finally:
        if follow.poll() is None:
            follow.kill()
    with Store(Path(os.environ["GPUCTL_HOME"]) / "state.db") as store:
        assert store.get_run(run_id).status.value == "finished"
    assert "Traceback" not in out.read_text()
