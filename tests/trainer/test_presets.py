"""gpuctl's bundled presets (presets/*.toml [train]) against the trainer's schema."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from trainer.config import validate

from .conftest import REPO

PRESETS = sorted((REPO / "presets").glob("*.toml"))


def preset_train(path: Path) -> dict:
    return tomllib.loads(path.read_text())["train"]


@pytest.mark.skipif(not PRESETS, reason="no presets/*.toml in this checkout")
@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_validates(path: Path) -> None:
    cfg = validate({**preset_train(path), "preset": path.stem})
    assert cfg.epochs >= 1 and cfg.preset == path.stem


@pytest.mark.skipif(not (REPO / "presets" / "validate.toml").exists(), reason="no validate preset")
@pytest.mark.timeout(120)
def test_validate_preset_runs_to_the_end_on_cpu(tmp_path: Path, run_trainer) -> None:
    (tmp_path / "run.json").write_text(
        json.dumps({**preset_train(REPO / "presets" / "validate.toml"), "preset": "validate"})
    )
    run = run_trainer(tmp_path / "run.json")
    assert run.rc == 0, run.stderr
    assert run.status()["phase"] == "finished"
    for name in ("train.log", "events.jsonl", "history.json", "status.json", "last.pt", "best.pt"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.skipif(not PRESETS, reason="no presets/*.toml in this checkout")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_first_epoch_starts(tmp_path: Path, path: Path, run_inprocess) -> None:
    """Each preset's model and data, one step, then a STOP file ends it (CPU-sized batch).

    compile is turned off: inductor on a 2-core CPU would spend minutes compiling.
    """
    raw = {**preset_train(path), "preset": path.stem, "batch_size": 1, "compile": False}
    (tmp_path / "run.json").write_text(json.dumps(raw))
    (tmp_path / "STOP").touch()
    run = run_inprocess(tmp_path / "run.json")
    assert run.rc == 0, run.stderr
    status = run.status()
    assert (status["phase"], status["epoch"], status["step"]) == ("interrupted", 1, 1)
    start = run.events()[0]
    assert start["event"] == "start" and start["config"]["image_size"] == raw["image_size"]
