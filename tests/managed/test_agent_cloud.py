"""The agent's cloud side: spot notice (IMDSv2 emulator), checkpoint push to a presigned
S3 URL (moto), DigitalOcean self-destroy (fake DO API). Secrets live in env only."""

from __future__ import annotations

import os
import sys
import urllib.request
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gpuctl.agent.agent import Supervisor
from gpuctl.agent.cloud import CHECKPOINT_URL_ENV, SpotWatch
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean
from tests.fakes.imds import TOKEN_PATH, FakeImds

from .conftest import Machine, wait_for

BUCKET = "ckpts"


def _s3(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4")
    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, config=config)


def test_spot_watch_speaks_imdsv2(imds: FakeImds) -> None:
    watch = SpotWatch(imds.url, poll_seconds=0.1)
    assert watch.poll(0.0) == (None, None)  # 404 twice: no notice, no rebalance
    imds.rebalance()
    _notice, rebalance = watch.poll(1.0)
    assert rebalance and "noticeTime" in rebalance
    expected = imds.notice()
    notice, again = watch.poll(2.0)
    assert notice == expected and again is None  # the recommendation is reported once
    assert not watch.due(10.0)  # after a notice there is nothing more to poll
    assert imds.count(TOKEN_PATH, "PUT") == 1  # the session token is reused
    assert all(status != 401 for _, _, status in imds.requests)


def test_notice_checkpoints_pushes_to_the_bucket_and_keeps_secrets_off_disk(
    imds: FakeImds, machine: Machine, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    ).read()
    s3 = _s3(moto_server)
    s3.create_bucket(Bucket=BUCKET)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": "gpuctl/r1/last.pt"}, ExpiresIn=600
    )
    machine.configure(metadata_url=imds.url, spot_poll_seconds=0.1)
    env = {**os.environ, CHECKPOINT_URL_ENV: url}
    machine.agent("start", env=env)
    wait_for(lambda: machine.trainer_status().get("phase") == "training", what="training")
    imds.rebalance()
    wait_for(lambda: machine.status().get("rebalance"), what="the rebalance warning")
    assert machine.status()["state"] == "running"  # a warning only
    imds.notice()
    status = wait_for(
        lambda: (s := machine.status()).get("spot", {}).get("uploaded_at") and s,
        what="checkpoint pushed",
    )
    assert status["state"] == "exited" and status["reason"] == "spot interruption"
    spot = status["spot"]
    assert spot["action"] == "terminate" and spot["checkpoint_at"] >= spot["noticed_at"] - 1
    last = machine.run_dir / "last.pt"
    assert zipfile.is_zipfile(last)
    trainer = machine.trainer_status()
    assert trainer["phase"] == "interrupted" and trainer["secrets_seen"] == []
    pushed = s3.get_object(Bucket=BUCKET, Key="gpuctl/r1/last.pt")["Body"].read()
    assert pushed == last.read_bytes()
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0].encode()
    for path in machine.run_dir.rglob("*"):
        if path.is_file():
            assert signature not in path.read_bytes(), path.name


JOB_SCRIPT = """
import signal, time
from pathlib import Path
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
Path("started").write_text("")
while not stop:
    time.sleep(0.05)
time.sleep(0.5)
Path("ckpt").mkdir(exist_ok=True)
Path("ckpt/model.pt").write_bytes(b"weights at the notice")
"""


def test_a_notice_mirrors_a_commands_checkpoint_and_pushes_it(
    imds: FakeImds, machine: Machine, moto_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's command: its own checkpoint becomes last.pt before the push, so the spot
    path sends the project's checkpoint off the machine as it does the trainer's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    urllib.request.urlopen(
        urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    ).read()
    s3 = _s3(moto_server)
    s3.create_bucket(Bucket=BUCKET)
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": BUCKET, "Key": "gpuctl/r1/last.pt"}, ExpiresIn=600
    )
    cwd = machine.root / "project"
    cwd.mkdir()
    (cwd / "train.py").write_text(JOB_SCRIPT)
    job = {"kind": "command", "command": f"{sys.executable} train.py; true", "cwd": str(cwd)}
    job["checkpoint"] = "ckpt/model.pt"
    machine.configure(metadata_url=imds.url, spot_poll_seconds=0.1, job=job)
    machine.agent("start", env={**os.environ, CHECKPOINT_URL_ENV: url})
    wait_for(lambda: (cwd / "started").exists(), 90, what="the command to start")
    imds.notice()
    status = wait_for(
        lambda: (s := machine.status()).get("spot", {}).get("uploaded_at") and s,
        what="checkpoint pushed",
    )
    assert status["reason"] == "spot interruption"
    pushed = s3.get_object(Bucket=BUCKET, Key="gpuctl/r1/last.pt")["Body"].read()
    assert pushed == b"weights at the notice"
    assert status["checkpoint"]["kind"] == "file"
    assert machine.trainer_status()["phase"] == "interrupted"


def _droplet_agent(machine: Machine, fake: FakeDigitalOcean, marker: Path) -> tuple[int, Any]:
    droplet = fake.seed_droplet("gpuctl-r1", tags=["gpuctl"])
    machine.configure(
        shutdown={
            "action": "destroy",
            "api": fake.url,
            "droplet_id": str(droplet["id"]),
            "token_env": "AMD_DEVCLOUD_TOKEN",
            "command": ["touch", str(marker)],
        }
    )
    return int(droplet["id"]), Supervisor(machine.run_dir)


@pytest.mark.parametrize("token", [AMD_TOKEN, "amddev_wrong"])
def test_destroy_action_deletes_its_droplet_or_powers_off(
    machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    fake = FakeDigitalOcean(token=AMD_TOKEN, name="amd").start()
    try:
        marker = tmp_path / "powered-off"
        droplet_id, supervisor = _droplet_agent(machine, fake, marker)
        monkeypatch.setenv("AMD_DEVCLOUD_TOKEN", token)
        supervisor.shutdown("max hours reached (1.00 h)")
        (delete,) = fake.calls("DELETE", f"/v2/droplets/{droplet_id}")
        assert delete.authorization == f"Bearer {token}"
        if token == AMD_TOKEN:
            assert droplet_id not in fake.droplets and not marker.exists()
            assert machine.status()["destroy"]["ok"] is True
        else:  # 401: the poweroff command still stops the work (and gpuctl destroys later)
            assert droplet_id in fake.droplets and marker.exists()
            assert machine.status()["destroy"]["error"] == "HTTP 401 from the API"
        for path in machine.run_dir.iterdir():
            assert token.encode() not in path.read_bytes(), path.name
    finally:
        fake.close()
