"""A user's own training script, end to end on the `local` provider through the real CLI.

The project is examples/plain-pytorch copied as a user would (its train.py knows nothing
of gpuctl: it prints `Epoch N/M loss ...` lines, saves its checkpoint on SIGTERM and
takes `--resume PATH`), with a gpuctl.toml of test-sized modes. What is asserted is what
the user sees or would lose: epochs and losses as the bundled trainer's, the outputs
downloaded, a stop that checkpoints, a resume that runs no epoch twice, the exit code of
a failing script, secrets that never reach a disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, json_lines

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = "tok-" + "5f3a9c" * 4  # what a wandb key looks like in a test

TOML = """\
[project]
name = "tiny"
exclude = ["data", "checkpoints"]
outputs = ["checkpoints/best.pt", "checkpoints/metrics.json"]
checkpoint = "checkpoints/last.pt"
resume = "--resume {checkpoint}"
grace_seconds = 30
secrets = ["TINY_TOKEN"]

[setup]
commands = ["echo setting up > setup-ran.txt"]
depends = ["requirements.txt"]

[env]
TINY_MODE = "test"

[data.digits]
src = "data/digits"

[modes.validate]
command = "python train.py --data data/digits --epochs 3 --limit 256 --batch-size 64"
epochs = 3

[modes.long]
command = "python train.py --data data/digits --epochs 40 --limit 128 --batch-size 64 --sleep 0.4"
epochs = 40

[modes.secret]
command = "python show_secret.py && python train.py --data data/digits --epochs 1 --limit 64"
epochs = 1

[modes.broken]
command = "python train.py --data data/digits --epochs 1 --limit 64 && python fail.py"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "tiny"
    shutil.copytree(EXAMPLES / "plain-pytorch", root)
    (root / "gpuctl.toml").write_text(TOML)
    (root / "show_secret.py").write_text(
        "import hashlib, os\n"
        "digest = hashlib.sha256(os.environ['TINY_TOKEN'].encode()).hexdigest()\n"
        "print('token', digest, os.environ['TINY_MODE'])\n"
    )
    (root / "fail.py").write_text("import sys\nprint('the end of a bad run')\nsys.exit(3)\n")
    subprocess.run(
        [sys.executable, "make_data.py", "--size", "512"], cwd=root, check=True, timeout=120
    )
    monkeypatch.chdir(root)
    monkeypatch.setenv("TINY_TOKEN", SECRET)
    return root


def gpuctl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GPUCTL, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_a_mode_runs_like_the_bundled_trainer_and_its_outputs_come_home(
    project: Path, gpuctl_home: Path
) -> None:
    proc = gpuctl("run", "validate", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    first_notices = [e["message"] for e in events if e["event"] == "notice"]
    # Its first run: no table knows a user's script, so no made-up estimate.
    assert any(n.startswith("no estimate yet: this mode has not run") for n in first_notices)
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert all(isinstance(e["train_loss"], float) for e in epochs)
    assert all(isinstance(e["val_loss"], float) for e in epochs)
    assert epochs[0]["warmup"] and not epochs[-1]["warmup"]  # the ETA skips the first
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    results = Path(final["results_dir"])
    history = json.loads((results / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert (results / "checkpoints" / "best.pt").is_file()  # the project's outputs
    assert json.loads((results / "checkpoints" / "metrics.json").read_text())
    log = (results / "train.log").read_text()
    assert "Epoch 3/3 loss" in log
    with Store(gpuctl_home / "state.db") as store:
        run = store.get_run(final["run_id"])
        assert run.preset == "validate" and run.epoch == 3 and run.epochs == 3
        assert run.launch_spec.job["command"].startswith("python train.py")
    # The next launch of the mode is estimated from this one, not from a table.
    again = gpuctl("launch", "validate", "--json")
    notices = [e["message"] for e in json_lines(again.stdout) if e["event"] == "notice"]
    assert any("from 1 past run of this mode" in n for n in notices), notices
    gpuctl("down", json_lines(again.stdout)[-1]["run_id"], "--yes")


def test_stop_checkpoints_the_script_and_resume_runs_no_epoch_twice(
    project: Path, gpuctl_home: Path
) -> None:
    launched = gpuctl("launch", "long")
    assert launched.returncode == 0, launched.stderr
    run_id = launched.stdout.strip()

    def epoch() -> int:
        with Store(gpuctl_home / "state.db") as store:
            return store.get_run(run_id).epoch

    follow = subprocess.Popen(
        [GPUCTL, "logs", run_id, "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        from tests.e2e.test_local_cli import wait_for

        wait_for(lambda: epoch() >= 2, 180, "epoch 2")
    finally:
        follow.kill()
        follow.wait()
    stopped = gpuctl("stop", run_id)
    assert stopped.returncode == 0, stopped.stderr
    status = json.loads(gpuctl("status", run_id, "--json").stdout)
    assert status["status"] == "stopped", status
    remote = Path(status["remote_dir"])
    assert (remote / "last.pt").is_file()  # the script's checkpoint, kept beside the run
    assert (remote / "work" / "checkpoints" / "last.pt").is_file()
    done_before = status["epoch"]
    assert 2 <= done_before < 40

    resumed = gpuctl("resume", run_id, "--json", timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = json_lines(resumed.stdout)[-1]
    assert final["status"] == "finished", final
    log = (Path(final["results_dir"]) / "train.log").read_text()
    assert f"Resumed from {remote / 'work' / 'checkpoints' / 'last.pt'}" in log or (
        "Resumed from" in log
    )
    printed = [
        int(line.split()[1].split("/")[0]) for line in log.splitlines() if line.startswith("Epoch ")
    ]
    assert printed == list(range(1, 41)), printed  # every epoch once, across both starts
    history = json.loads((Path(final["results_dir"]) / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 41))


def test_a_failing_script_fails_the_run_with_its_exit_code_and_last_line(
    project: Path,
) -> None:
    proc = gpuctl("run", "broken", "--json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    events = json_lines(proc.stdout)
    final = events[-1]
    assert final["event"] == "failed", final
    assert "exit code 3: the end of a bad run" in final["error"]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]  # it did train
    assert "Traceback" not in proc.stderr
    with Store(Path(os.environ["GPUCTL_HOME"]) / "state.db") as store:
        assert store.get_run(final["run_id"]).status.value == "failed"


def test_secrets_reach_the_script_and_no_disk_and_setup_runs_once_per_machine(
    project: Path, gpuctl_home: Path, tmp_path: Path
) -> None:
    proc = gpuctl("run", "secret", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = json_lines(proc.stdout)
    log = "\n".join(line for e in events if e["event"] == "log" for line in e["lines"])
    assert f"token {hashlib.sha256(SECRET.encode()).hexdigest()} test" in log
    again = gpuctl("run", "secret", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    second_log = "\n".join(
        line for e in json_lines(again.stdout) if e["event"] == "log" for line in e["lines"]
    )
    assert "setup: echo setting up" in log  # the first run on this machine set it up
    assert "setup: echo setting up" not in second_log  # the second found it done
    for path in tmp_path.rglob("*"):  # the laptop's data dir and the "machine" alike
        if path.is_file() and not path.is_symlink():
            assert SECRET.encode() not in path.read_bytes(), path
    for path in gpuctl_home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert os.environ["TINY_TOKEN"] == SECRET


def test_the_reporting_example_runs_as_shipped_with_its_directory_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/with-reporting as a user copies it: epochs and accuracy from its reports
    (not from its log), and its checkpoint directory kept beside the run as one archive."""
    import tarfile

    root = tmp_path / "reporting"
    shutil.copytree(EXAMPLES / "with-reporting", root)
    toml = (root / "gpuctl.toml").read_text()
    # Its setup installs requirements.txt with pip: this venv already has torch, and a
    # test must not depend on the package index.
    (root / "gpuctl.toml").write_text(
        toml.replace('commands = ["python -m pip install -q -r requirements.txt"]', "")
    )
    monkeypatch.chdir(root)
    proc = gpuctl("run", "validate", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    (epoch,) = [e for e in events if e["event"] == "epoch"]
    assert epoch["epoch"] == 1 and epoch["epochs"] == 1
    assert 0.0 <= epoch["metric"] <= 1.0 and epoch["train_loss"] > 0
    final = events[-1]
    assert final["status"] == "finished", final
    results = Path(final["results_dir"])
    assert tarfile.is_tarfile(results / "last.pt")  # checkpoints/last/, as one file
    with tarfile.open(results / "last.pt") as archive:
        assert any(name.endswith("model.pt") for name in archive.getnames())
    assert (results / "checkpoints" / "best.pt").is_file()
    log = (results / "train.log").read_text()
    assert '"gpuctl"' not in log  # the reports went to their own file, not the log
