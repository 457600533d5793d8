"""Helpers to run the trainer the way gpuctl does: `python -u -m trainer --config run.json`.

The trainer folder is copied into a fresh directory first and run from there with a
clean PYTHONPATH, which also proves it is self-contained (no gpuctl imports).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

# small enough for a few seconds on two CPU cores, big enough to learn something
TINY: dict[str, Any] = {
    "run_id": "test",
    "preset": "validate",
    "train_samples": 256,
    "val_samples": 64,
    "image_size": 16,
    "width": 8,
    "depth": 2,
    "epochs": 2,
    "batch_size": 32,
}


@dataclass
class Run:
    """A finished trainer process and its run dir."""

    rc: int
    stdout: str
    stderr: str
    out_dir: Path

    def events(self) -> list[dict[str, Any]]:
        path = self.out_dir / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def status(self) -> dict[str, Any]:
        return json.loads((self.out_dir / "status.json").read_text())

    def history(self) -> list[dict[str, Any]]:
        return json.loads((self.out_dir / "history.json").read_text())

    def log(self) -> str:
        return (self.out_dir / "train.log").read_text()


@pytest.fixture(scope="session")
def trainer_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding only a copy of trainer/, as uploaded to a GPU machine."""
    home = tmp_path_factory.mktemp("upload")
    shutil.copytree(
        REPO / "trainer", home / "trainer", ignore=shutil.ignore_patterns("__pycache__")
    )
    return home


def pytest_configure(config: pytest.Config) -> None:
    """The CPU torch wheel warns about numpy on import; the trainer never uses numpy."""
    config.addinivalue_line("filterwarnings", "ignore:Failed to initialize NumPy")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE")}
    env.update({"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "2", **extra})
    return env


def write_config(out_dir: Path, **overrides: Any) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "run.json"
    path.write_text(json.dumps({**TINY, **overrides}))
    return path


@pytest.fixture
def run_trainer(trainer_home: Path) -> Callable[..., Run]:
    """run_trainer(config_path, *args, env=None, timeout=100) -> Run (waits for exit)."""

    def _run(config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 100):
        proc = subprocess.run(
            [PYTHON, "-u", "-m", "trainer", "--config", str(config), *args],
            cwd=trainer_home,
            env=env or clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(proc.returncode, proc.stdout, proc.stderr, config.parent)

    return _run


@pytest.fixture
def run_inprocess(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """The same CLI entry, called in this process: no torch import per run, so it is fast."""
    from trainer.cli import main

    def _run(config: Path, *args: str) -> Run:
        saved_path = sys.path[:]
        try:
            rc = main(["--config", str(config), *args])
        finally:
            sys.path[:] = saved_path  # a user task puts its workdir on sys.path
        captured = capsys.readouterr()
        return Run(rc, captured.out, captured.err, config.parent)

    return _run


@pytest.fixture
def start_trainer(trainer_home: Path) -> Callable[..., subprocess.Popen[str]]:
    """Start the trainer without waiting (for signal tests)."""

    def _start(config: Path, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [PYTHON, "-u", "-m", "trainer", "--config", str(config), *args],
            cwd=trainer_home,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return _start


def wait_for_status(
    path: Path, ready: Callable[[dict[str, Any]], bool], proc: subprocess.Popen[str], limit: float
) -> dict[str, Any]:
    """Poll status.json until `ready(status)`; fail if the process ends first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _out, err = proc.communicate()
            raise AssertionError(f"trainer exited early ({proc.returncode}): {err[-2000:]}")
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = {}
        if status and ready(status):
            return status
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"status never became ready: {path}")
