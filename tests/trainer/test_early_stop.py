"""A stop that reaches the trainer before it has even imported torch is a graceful stop.

`gpuctl stop` right after `launch` sends SIGTERM while the trainer is still starting.
Here the signal is sent from inside `import torch` itself (an import hook in a wrapper
that then runs `python -m trainer` unchanged), so the timing is exact, not a race.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import PYTHON, clean_env, write_config

SIGTERM_DURING_IMPORT_TORCH = """
import os, runpy, signal, sys

class SignalOnTorch:
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not SignalOnTorch.fired:
            SignalOnTorch.fired = True
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalOnTorch())
sys.argv = ["trainer", *sys.argv[1:]]
runpy.run_module("trainer", run_name="__main__", alter_sys=True)
"""


def test_sigterm_while_torch_imports_ends_interrupted_not_killed(
    tmp_path: Path, trainer_home: Path
) -> None:
    cfg = write_config(tmp_path / "run", epochs=5)
    proc = subprocess.run(
        [PYTHON, "-u", "-c", SIGTERM_DURING_IMPORT_TORCH, "--config", str(cfg)],
        cwd=trainer_home,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr  # not -15: the stop was caught
    status = json.loads((cfg.parent / "status.json").read_text())
    assert status["phase"] == "interrupted" and status["reason"] == "SIGTERM"
    assert status["epochs_done"] == 0
    assert (cfg.parent / "last.pt").is_file()  # --resume has something to continue from
