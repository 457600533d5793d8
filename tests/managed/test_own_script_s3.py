"""An s3:// dataset of a user's project (moto in server mode on 127.0.0.1): the laptop
presigns, the machine downloads through the URLs with no credential of its own, once; the
second run finds it cached. Neither a key nor a presigned URL is ever written to disk."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli import GPUCTL, json_lines

from .conftest import aws  # noqa: F401 - the moto fixture

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUCKET = "team-datasets"
SECRET_KEY = "moto-secret-key-3c9d1e7f"
TOML = f"""\
[project]
name = "from-s3"
exclude = ["data", "checkpoints"]

[data.digits]
src = "s3://{BUCKET}/digits/v1"
target = "data/digits"

[modes.validate]
command = "python train.py --data data/digits --epochs 1 --limit 64"
epochs = 1
"""


def test_an_s3_dataset_is_fetched_once_through_presigned_urls_only(
    aws: str,  # noqa: F811
    gpuctl_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    project = tmp_path / "from-s3"
    shutil.copytree(EXAMPLES / "plain-pytorch", project)
    (project / "gpuctl.toml").write_text(TOML)
    made = tmp_path / "made"
    subprocess.run(
        [sys.executable, "make_data.py", "--size", "256", "--out", str(made)],
        cwd=project,
        check=True,
        timeout=120,
    )
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    for path in made.iterdir():
        s3.upload_file(str(path), BUCKET, f"digits/v1/{path.name}")
    monkeypatch.chdir(project)

    def run() -> dict:
        proc = subprocess.run(
            [GPUCTL, "run", "validate", "--provider", "local", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        final = json_lines(proc.stdout)[-1]
        assert final["status"] == "finished", final
        return final

    first, second = run(), run()
    fetched = []
    for final in (first, second):
        agent = json.loads((Path(final["results_dir"]) / "agent_status.json").read_text())
        fetched.append(agent["data"]["digits"])
        log = (Path(final["results_dir"]) / "train.log").read_text()
        assert "Epoch 1/1 loss" in log  # the script trained on what came from the bucket
    size = sum(p.stat().st_size for p in made.iterdir())
    assert fetched[0]["fetched"] == 2 and fetched[0]["bytes"] == size, fetched
    assert fetched[1]["fetched"] == 0 and fetched[1]["bytes"] == 0, fetched  # cached
    cache = gpuctl_home / "local" / "data" / "from-s3" / "digits"
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in made.iterdir()
    )
    for path in [*gpuctl_home.rglob("*"), *project.rglob("*")]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data, path
            assert b"X-Amz-Signature" not in data, path  # a presigned URL is a credential
