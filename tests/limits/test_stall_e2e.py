"""The stall guard end to end on the local provider: the real trainer and agent, a task
whose training step hangs after the first epoch's checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import gpuctl, json_lines

pytestmark = pytest.mark.slow

# Trains normally until last.pt exists (epoch 1 is checkpointed), then one step blocks
# for an hour: a dead data loader or a stuck collective, as the agent sees it.
HANG_TASK = """
import time
from pathlib import Path

import torch

from trainer.tasks.image import make_task


def make(cfg):
    task = make_task(cfg)
    inner = task.loss_fn
    last = Path(cfg.out_dir) / "last.pt"

    def loss(output, target):
        if torch.is_grad_enabled() and last.exists():
            time.sleep(3600)
        return inner(output, target)

    task.loss_fn = loss
    return task
"""


def test_a_hung_trainer_is_stopped_as_stalled_and_its_checkpoint_comes_home(
    gpuctl_home: Path, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "hang_task.py").write_text(HANG_TASK)
    proc = gpuctl(
        "run",
        "custom",
        "--base",
        "validate",
        "--set",
        "task=hang_task:make",
        "--set",
        "epochs=3",
        "--workdir",
        str(work),
        "--stall-minutes",
        "0.1",
        "--json",
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    final = events[-1]
    assert final["event"] == "failed", final
    assert "stalled: no training progress for" in final["error"]
    (run,) = Store(gpuctl_home / "state.db").list_runs()
    assert run.status.value == "stalled"
    results = Path(run.results_dir or "")
    assert (results / "last.pt").is_file()  # the epoch-1 checkpoint was not lost
    assert "Traceback" not in proc.stderr
