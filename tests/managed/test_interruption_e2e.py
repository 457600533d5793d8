"""End to end: a managed spot run survives an interruption (moto + real sshd + IMDS).

The instance is moto's; SSH goes to the real test sshd on 127.0.0.1 (every "instance" is
this machine), and the agent reads its spot notice from the IMDS emulator. The test
switches the notice on mid-run, then, once gpuctl says the checkpoint is safe, terminates
the instance in moto AND deletes its run directory (the lost disk), so the checkpoint can
only come back through gpuctl. The run must finish on a second instance, every epoch
exactly once, with both instances on its bill.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from gpuctl.state import Store
from tests.aws.helpers import boto
from tests.fakes.imds import FakeImds
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]

EPOCHS = 6
BUCKET = "gpuctl-ckpt"


def test_spot_interruption_relaunches_and_finishes_every_epoch_once(
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
    remote = tmp_path / "remote"
    env = {"GPUCTL_REMOTE_BASE": str(remote), "GPUCTL_REMOTE_PYTHON": sys.executable}
    argv = ["run", "validate", "--provider", "aws-test", "--spot", "--json"]
    argv += ["--set", f"epochs={EPOCHS}", "--set", "train_samples=512", "--set", "val_samples=64"]
    argv += ["--idle-minutes", "0", "--checkpoint-bucket", BUCKET]
    run = Stream(argv, env)
    try:
        wait_for(lambda: run.first("epoch", epoch=2), 240, "epoch 2")
        imds.notice()
        saved = wait_for(lambda: run.first("recovering", step="checkpoint"), 120, "checkpoint")
        # gpuctl holds a valid checkpoint now; the cloud takes the machine and its disk.
        first = run.first("instance_up")
        assert first is not None and "saved at" in saved["detail"], saved
        local = Path(saved["detail"].split("saved at ", 1)[1])
        assert zipfile.is_zipfile(local)
        imds.clear()  # the next instance gets no notice
        boto("us-east-1").terminate_instances(InstanceIds=[first["instance_id"]])
        shutil.rmtree(remote / "runs" / first["run_id"])
        rc, stderr = run.wait(timeout=400)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    events = run.events
    assert rc == 0, stderr[-3000:] + json.dumps(events[-5:])
    kinds = [e["event"] for e in events]
    steps = [e["step"] for e in events if e["event"] == "recovering"]
    assert steps[:2] == ["notice", "checkpoint"] and "relaunching" in steps, steps
    assert "restoring" in steps, steps
    ups = [e for e in events if e["event"] == "instance_up"]
    assert len(ups) == 2 and ups[0]["instance_id"] != ups[1]["instance_id"]
    assert ups[1]["market"] == "spot" and ups[1]["instance_type"] == ups[0]["instance_type"]
    (recovered,) = [e for e in events if e["event"] == "recovered"]
    assert recovered["instance_id"] == ups[1]["instance_id"] and not recovered["same_machine"]
    assert kinds.index("recovered") < len(kinds) - 1
    notices = " ".join(e["message"] for e in events if e["event"] == "notice")
    assert "spot interruption notice" in notices
    assert "fetched from s3" not in notices  # gpuctl pulled the same checkpoint itself

    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    results = Path(final["results_dir"])
    history = json.loads((results / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    log = (results / "train.log").read_text()
    assert f"resumed from epoch {recovered['epoch']}" in log, log[-2000:]
    assert recovered["epoch"] >= 3  # the notice came after epoch 2: nothing before it redone
    assert log.count("finished 6 epochs") == 1

    ec2 = boto("us-east-1")
    for up in ups:
        state = ec2.describe_instances(InstanceIds=[up["instance_id"]])
        assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    with Store(gpuctl_home / "state.db") as store:
        stored = store.get_run(final["run_id"])
        assert stored.attempt == 2 and stored.status.value == "finished"
        compute = [s for s in store.segments(run_id=stored.id) if s.kind == "compute"]
        assert {s.instance_id for s in compute} == {u["instance_id"] for u in ups}
        assert all(s.end is not None for s in compute)
        history_rows = [e["kind"] for e in store.events(stored.id)]
        assert "recovering" in history_rows and "recovered" in history_rows
    import boto3

    pushed = boto3.client("s3", region_name="us-east-1").head_object(
        Bucket=BUCKET, Key=f"gpuctl/{final['run_id']}/last.pt"
    )
    assert pushed["ContentLength"] > 0  # the agent also pushed the checkpoint at the notice
    for path in [*gpuctl_home.rglob("*"), *remote.rglob("*")]:
        if path.is_file():
            assert b"X-Amz-Signature" not in path.read_bytes(), path
