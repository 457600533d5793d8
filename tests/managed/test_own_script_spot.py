"""A spot interruption of a user's own script on the AWS emulator path: the script gets
SIGTERM and saves its checkpoint, gpuctl takes it off the machine, the machine and its disk
are lost, and a new machine resumes the script with the project's resume arguments.
No epoch runs twice and the result is complete (moto + real sshd + IMDS emulator)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuctl.state import Store
from tests.aws.helpers import boto
from tests.fakes.imds import FakeImds
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]

EPOCHS = 8
BUCKET = "gpuctl-ckpt"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOML = f"""\
[project]
name = "spotty"
exclude = ["data", "checkpoints"]
outputs = ["checkpoints/best.pt"]
checkpoint = "checkpoints/last.pt"
resume = "--resume {{checkpoint}}"
grace_seconds = 60

[modes.spotty]
command = "python train.py --epochs {EPOCHS} --size 256 --batch-size 64 --sleep 0.5"
epochs = {EPOCHS}
"""


def test_a_spot_notice_resumes_the_users_script_on_a_new_machine_with_no_epoch_twice(
    aws: str,
    spot_prices: Any,
    gpuctl_home: Path,
    sshd: SshdServer,
    imds: FakeImds,
    tmp_path: Path,
) -> None:
    spot_prices[("us-east-1", "g4dn.xlarge", "us-east-1a")] = 0.21
    aws_profile(
        gpuctl_home,
        aws,
        sshd.port,
        sshd,
        metadata_url=imds.url,
        spot_poll_seconds=0.2,
        spot_grace_seconds=120,
        recovery_poll_seconds=0.2,
    )
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    project = tmp_path / "spotty"
    shutil.copytree(EXAMPLES / "plain-pytorch", project)
    (project / "gpuctl.toml").write_text(TOML)
    remote = tmp_path / "remote"
    env = {"GPUCTL_REMOTE_BASE": str(remote), "GPUCTL_REMOTE_PYTHON": sys.executable}
    argv = ["run", "spotty", "--workdir", str(project), "--provider", "aws-test", "--spot"]
    argv += ["--json", "--idle-minutes", "0", "--checkpoint-bucket", BUCKET]
    run = Stream(argv, env)
    try:
        wait_for(lambda: run.first("epoch", epoch=2), 240, "epoch 2")
        imds.notice()
        saved = wait_for(lambda: run.first("recovering", step="checkpoint"), 120, "checkpoint")
        first = run.first("instance_up")
        assert first is not None and "saved at" in saved["detail"], saved
        imds.clear()  # the next machine gets no notice
        boto("us-east-1").terminate_instances(InstanceIds=[first["instance_id"]])
        shutil.rmtree(remote / "runs" / first["run_id"])  # the lost disk
        rc, stderr = run.wait(timeout=400)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    events = run.events
    assert rc == 0, stderr[-3000:] + json.dumps(events[-5:])
    ups = [e for e in events if e["event"] == "instance_up"]
    assert len(ups) == 2 and ups[0]["instance_id"] != ups[1]["instance_id"]
    (recovered,) = [e for e in events if e["event"] == "recovered"]
    assert recovered["epoch"] >= 2  # what was done before the notice is not redone
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    results = Path(final["results_dir"])
    log = (results / "train.log").read_text()
    printed = [
        int(line.split()[1].split("/")[0]) for line in log.splitlines() if line.startswith("Epoch ")
    ]
    assert printed == list(range(1, EPOCHS + 1)), printed  # every epoch once, two machines
    assert "Resumed from" in log and "Stopped by" in log
    history = json.loads((results / "history.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, EPOCHS + 1))
    assert (results / "checkpoints" / "best.pt").is_file()
    pushed = boto3.client("s3", region_name="us-east-1").head_object(
        Bucket=BUCKET, Key=f"gpuctl/{final['run_id']}/last.pt"
    )
    assert pushed["ContentLength"] > 0  # the agent pushed the script's checkpoint at the notice
    with Store(gpuctl_home / "state.db") as store:
        stored = store.get_run(final["run_id"])
        assert stored.attempt == 2 and stored.status.value == "finished"
    for up in ups:
        state = boto("us-east-1").describe_instances(InstanceIds=[up["instance_id"]])
        assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
