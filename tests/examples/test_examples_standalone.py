"""The example projects in examples/, run on CPU the way gpuctl's agent runs them.

Each test copies an example into a fresh directory and runs a mode's command from its
gpuctl.toml there (a few flags appended to keep it to seconds: the last of a repeated flag
wins), with `resume` formatted and appended as gpuctl does on a resume.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

EXAMPLES = REPO / "examples"
HELPER = REPO / "gpuctl" / "agent" / "helper"
MODES = {"validate", "fast", "standard", "full"}
SMALL = "--batch-size 64"  # with the validate modes' 1,024 images: 16 steps an epoch
EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+) loss (\S+) val_loss (\S+) acc (\S+)$", re.M)


@dataclass(frozen=True)
class Output:
    """What one run of an example printed, and how it ended."""

    rc: int
    text: str

    def epochs(self) -> list[int]:
        return [int(m[0]) for m in EPOCH_LINE.findall(self.text)]

    def losses(self) -> list[float]:
        return [float(m[2]) for m in EPOCH_LINE.findall(self.text)]


@dataclass(frozen=True)
class Project:
    """A copy of one example, as gpuctl uploads it to a machine."""

    root: Path
    config: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.root / self.config["project"]["checkpoint"]

    def command(self, mode: str, extra: str, *, resume: bool = False) -> list[str]:
        """The mode's command line + `extra`, + the resume arguments gpuctl would append."""
        line = f"{self.config['modes'][mode]['command']} {extra}"
        if resume:
            quoted = shlex.quote(str(self.checkpoint))
            line += " " + self.config["project"]["resume"].format(checkpoint=quoted)
        argv = shlex.split(line)
        assert argv[0] == "python", line
        return [sys.executable, *argv[1:]]

    def env(self, **extra: str) -> dict[str, str]:
        """A bare environment (no PYTHONPATH, nothing of gpuctl's unless given) + [env]."""
        env = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        return env | self.config.get("env", {}) | extra

    def run(self, mode: str, extra: str, *, resume: bool = False, **env: str) -> Output:
        proc = subprocess.run(
            self.command(mode, extra, resume=resume),
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
        )
        return Output(proc.returncode, proc.stdout)


def _config(name: str) -> dict[str, Any]:
    return tomllib.loads((EXAMPLES / name / "gpuctl.toml").read_text())


@pytest.fixture(params=["plain-pytorch", "with-reporting"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Project:
    root = tmp_path / request.param
    shutil.copytree(EXAMPLES / request.param, root, ignore=shutil.ignore_patterns("__pycache__"))
    config = _config(request.param)
    if "data" in config:  # a user runs make_data.py once before the first `gpuctl run`
        made = subprocess.run(
            [sys.executable, "make_data.py", "--size", "1024"],
            cwd=root,
            env={"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        for table in config["data"].values():
            assert (root / table["src"]).is_dir()
    return Project(root, config)


@pytest.mark.parametrize("name", ["plain-pytorch", "with-reporting"])
def test_gpuctl_toml_declares_the_four_modes(name: str) -> None:
    """What `gpuctl run MODE` reads: four modes, each a command whose --epochs is the
    mode's `epochs` (gpuctl's estimate before the script reports), and a way to resume."""
    config = _config(name)
    project = config["project"]
    assert project["name"] == name and re.fullmatch(r"[a-z0-9-]+", name)
    assert "{checkpoint}" in project["resume"]
    assert project["outputs"] and project["grace_seconds"] > 0
    assert set(config["modes"]) == MODES
    for mode, table in config["modes"].items():
        assert table["description"] and table["max_hours"] > 0 and table["budget"] > 0, mode
        epochs = re.search(r"--epochs (\d+)", table["command"])
        assert epochs and int(epochs[1]) == table["epochs"], mode
        assert table["command"].startswith("python train.py"), mode
    assert set(config["setup"]["depends"]) <= {p.name for p in (EXAMPLES / name).iterdir()}


def test_trains_to_the_end_and_the_loss_goes_down(project: Project) -> None:
    out = project.run("validate", f"--epochs 2 {SMALL}")
    assert out.rc == 0, out.text
    assert out.epochs() == [1, 2]
    first, second = out.losses()
    assert second < first * 0.8, out.text
    for path in project.config["project"]["outputs"]:
        assert (project.root / path).is_file(), path
    assert project.checkpoint.exists()
    metrics = json.loads((project.root / "checkpoints" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]


def test_sigterm_checkpoints_and_resume_continues_at_the_next_epoch(project: Project) -> None:
    """gpuctl stop / a spot notice: SIGTERM after the first epoch's line -> the script
    saves its checkpoint and exits 0; the resume runs each remaining epoch once."""
    proc = subprocess.Popen(
        project.command("validate", f"--epochs 3 {SMALL} --sleep 2"),
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Epoch 1/3"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    stopped = Output(proc.returncode, "".join(seen) + rest)
    assert stopped.rc == 0, stopped.text
    assert "Stopped by SIGTERM" in stopped.text
    assert stopped.epochs() and stopped.epochs()[-1] < 3, stopped.text
    kind = "dir" if project.checkpoint.is_dir() else "file"
    assert kind == ("dir" if project.root.name == "with-reporting" else "file")

    resumed = project.run("validate", f"--epochs 3 {SMALL}", resume=True)
    assert resumed.rc == 0, resumed.text
    assert sorted(stopped.epochs() + resumed.epochs()) == [1, 2, 3]
    assert resumed.epochs()[0] == stopped.epochs()[-1] + 1
    # the model came back too: its first epoch beats a fresh model's first epoch clearly
    assert resumed.losses()[0] < stopped.losses()[0] * 0.8, stopped.text + resumed.text
    metrics = json.loads((project.root / "checkpoints" / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == [1, 2, 3]


def test_with_reporting_writes_json_lines_for_gpuctl(tmp_path: Path) -> None:
    """Under gpuctl the helper is on PYTHONPATH and GPUCTL_EVENTS names the file gpuctl
    reads: each epoch and each checkpoint is one JSON line there."""
    root = tmp_path / "with-reporting"
    shutil.copytree(EXAMPLES / "with-reporting", root)
    project = Project(root, _config("with-reporting"))
    events = tmp_path / "reports.jsonl"
    out = project.run(
        "validate",
        f"--epochs 2 {SMALL}",
        GPUCTL_EVENTS=str(events),
        GPUCTL_CHECKPOINT=str(project.checkpoint),
        PYTHONPATH=f"{HELPER}:{root}",
    )
    assert out.rc == 0, out.text
    assert out.epochs() == [1, 2]
    assert (project.checkpoint / "model.pt").is_file()
    assert json.loads((project.checkpoint / "state.json").read_text())["epoch"] == 2
    if not (HELPER / "gpuctl_report.py").is_file():
        pytest.skip("gpuctl/agent/helper/gpuctl_report.py is not in this tree yet")
    lines = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
    reported = [line for line in lines if line.get("gpuctl") == "epoch"]
    assert [line["epoch"] for line in reported] == [1, 2]
    for line in reported:
        assert line["epochs"] == 2
        assert {"loss", "val_loss", "metric"} <= set(line)
        assert 0 <= line["metric"] <= 1
    saved = [line for line in lines if line.get("gpuctl") == "checkpoint"]
    assert len(saved) == 2
    assert all(Path(line["path"]) == project.checkpoint for line in saved)
