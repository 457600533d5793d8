"""`--require-gpu` on the local provider: this machine is probed like a rented one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import gpuctl

HAS_GPU_TOOL = any(shutil.which(t) for t in ("nvidia-smi", "amd-smi", "rocm-smi"))


@pytest.mark.skipif(HAS_GPU_TOOL, reason="this machine has a GPU tool: it would train on it")
def test_require_gpu_on_a_cpu_only_local_machine_is_refused(gpuctl_home: Path) -> None:
    proc = gpuctl("launch", "validate", "--provider", "local", "--require-gpu")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: this machine has no GPU (no nvidia-smi, amd-smi or rocm-smi answered)"
    ]
    assert "Traceback" not in proc.stderr
    store = Store(gpuctl_home / "state.db")
    (run,) = store.list_runs()
    assert run.status.value == "failed"
    # Nothing trains: no trainer was started and the local instance is gone with its dir.
    assert not (gpuctl_home / "local" / "runs" / run.id).exists()
