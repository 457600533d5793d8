"""A user's own script through `--provider ssh` against the real sshd: the dataset goes up
once and is cached on the machine, the second run uploads none of it (measured)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.sshd import SshdServer

from .test_e2e_ssh import GPUCTL, json_lines, on

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_mode(project: Path, sshd: SshdServer) -> list[dict]:
    proc = subprocess.run(
        [GPUCTL, "run", "validate", *on(sshd), "--json", "--workdir", str(project)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json_lines(proc.stdout)


def test_the_dataset_is_uploaded_once_and_the_script_reads_it_from_the_cache(
    sshd: SshdServer,
    remote: Path,
    tmp_path: Path,
) -> None:
    project = tmp_path / "plain"
    shutil.copytree(EXAMPLES / "plain-pytorch", project)
    subprocess.run(
        [sys.executable, "make_data.py", "--size", "512"], cwd=project, check=True, timeout=120
    )
    toml = (project / "gpuctl.toml").read_text()
    # The example's own file, with its setup (pip) left out: this machine has no index.
    toml = toml.replace('commands = ["python -m pip install -q -r requirements.txt"]', "")
    (project / "gpuctl.toml").write_text(toml)
    data_bytes = sum(p.stat().st_size for p in (project / "data" / "digits").rglob("*"))

    first = run_mode(project, sshd)
    second = run_mode(project, sshd)

    def dataset_sync(events: list[dict]) -> dict:
        (synced,) = [e for e in events if e["event"] == "synced" and e["what"] == "dataset digits"]
        return synced

    up1, up2 = dataset_sync(first), dataset_sync(second)
    print(
        f"dataset {data_bytes / 1e6:.2f} MB: first run sent {up1['bytes'] / 1e6:.2f} MB in "
        f"{up1['seconds']:.2f}s, second run {up2['bytes'] / 1e6:.2f} MB in {up2['seconds']:.2f}s"
    )
    assert up1["files"] >= 2 and up1["bytes"] >= data_bytes * 0.9
    assert up2["files"] == 0 and up2["bytes"] == 0 and up2["skipped"] == up1["files"]
    # The code upload left the dataset out (exclude and [data]): it went to the cache only.
    code = [e for e in first if e["event"] == "synced" and not e["what"]]
    assert code and code[0]["bytes"] < data_bytes / 2
    for events in (first, second):
        final = events[-1]
        assert final["status"] == "finished", final
        assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]
        history = json.loads((Path(final["results_dir"]) / "history.json").read_text())
        assert len(history) == 1 and history[0]["val_loss"] > 0
    cached = list((remote / "data" / "plain-pytorch" / "digits").iterdir())
    assert cached, "the dataset lives in the machine's cache"
    run_dirs = list((remote / "runs").iterdir())
    assert len(run_dirs) == 2
    for run_dir in run_dirs:  # each run sees the dataset through a link, not a copy
        assert (run_dir / "work" / "data" / "digits").is_symlink()
