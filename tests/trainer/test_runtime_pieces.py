"""Checkpoint files, run-dir outputs, stop requests, and the import contract."""

from __future__ import annotations

import ast
import json
import os
import random
import signal
import sys
from pathlib import Path

import pytest
import torch

from trainer import checkpoint
from trainer.outputs import Outputs, write_json_atomic
from trainer.stop import DUPLICATE_SECONDS, StopRequest

from .conftest import REPO


def test_atomic_save_round_trip_and_no_temp_left(tmp_path: Path) -> None:
    state = {"format": checkpoint.FORMAT, "w": torch.arange(4.0), "history": [{"epoch": 1}]}
    path = tmp_path / "last.pt"
    checkpoint.atomic_save(state, path)
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["w"], state["w"]) and loaded["history"] == [{"epoch": 1}]
    checkpoint.atomic_copy(path, tmp_path / "best.pt")
    assert (tmp_path / "best.pt").read_bytes() == path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_load_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"model": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a trainer checkpoint"):
        checkpoint.load(tmp_path / "x.pt")


def test_rng_state_round_trip() -> None:
    device = torch.device("cpu")
    state = checkpoint.rng_state(device)
    a = (random.random(), torch.rand(3))
    checkpoint.set_rng_state(state, device)
    b = (random.random(), torch.rand(3))
    assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_outputs_write_the_contract_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = Outputs(tmp_path, enabled=True, fresh=True)
    out.log("hello")
    out.event("start", run_id="r")
    out.status(phase="training", epoch=1, step=3)
    out.history([{"epoch": 1}])
    out.close()
    assert "hello" in capsys.readouterr().out
    assert (tmp_path / "train.log").read_text().strip().endswith("hello")
    event = json.loads((tmp_path / "events.jsonl").read_text())
    assert event["event"] == "start" and isinstance(event["time"], float)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["phase"] == "training" and status["pid"] == os.getpid()
    assert set(status) == {
        "phase",
        "epoch",
        "epochs",
        "step",
        "steps_per_epoch",
        "eta_seconds",
        "updated_at",
        "pid",
        "best_metric",
        "reason",
        "epochs_done",
    }
    assert json.loads((tmp_path / "history.json").read_text()) == [{"epoch": 1}]
    again = Outputs(tmp_path, enabled=True, fresh=False)  # resume appends
    again.event("start", run_id="r")
    again.close()
    assert len((tmp_path / "events.jsonl").read_text().splitlines()) == 2


def test_status_is_throttled_unless_forced(tmp_path: Path) -> None:
    out = Outputs(tmp_path, enabled=True)
    out.status(phase="warmup", step=1)
    out.status(force=False, phase="warmup", step=2)
    assert json.loads((tmp_path / "status.json").read_text())["step"] == 1
    out.status(phase="training", step=3)
    assert json.loads((tmp_path / "status.json").read_text())["step"] == 3
    out.close()


def test_disabled_outputs_write_nothing(tmp_path: Path) -> None:
    out = Outputs(tmp_path / "rank1", enabled=False)
    out.log("x")
    out.event("start")
    out.status(phase="training")
    out.history([])
    out.close()
    assert not (tmp_path / "rank1").exists()


def test_write_json_atomic_replaces(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"v": 1})
    write_json_atomic(tmp_path / "a.json", {"v": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_stop_file_is_honoured_and_consumed(tmp_path: Path) -> None:
    stop = StopRequest(tmp_path / "STOP")
    assert not stop.requested()
    (tmp_path / "STOP").touch()
    stop._next_file_check = 0.0  # skip the twice-a-second rate limit
    assert stop.requested() and stop.reason == "STOP file"
    assert not (tmp_path / "STOP").exists()


def test_signals_set_a_flag_then_force(tmp_path: Path) -> None:
    stop = StopRequest(None)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested() and stop.reason == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # the same request delivered twice: ignored
        assert stop.reason == "SIGTERM"
        stop._first_signal -= DUPLICATE_SECONDS + 1  # as if the first came a while ago
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.uninstall()
    assert signal.getsignal(signal.SIGTERM) is not stop._handle


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level))
    return found


def test_trainer_imports_only_torch_stdlib_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"torch", "PIL"}  # PIL: optional, lazily
    for path in sorted((REPO / "trainer").rglob("*.py")):
        for module, level in _imports(path):
            if level:
                continue  # relative import
            assert module.split(".")[0] in allowed, f"{path.name} imports {module}"
            assert not module.startswith(("trainer", "gpuctl")), f"{path.name}: use relative"


def test_light_modules_do_not_import_torch() -> None:
    for name in ("__init__.py", "config.py", "errors.py", "cli.py"):
        modules = {m.split(".")[0] for m, level in _imports(REPO / "trainer" / name) if not level}
        assert "torch" not in modules, name
