"""`gpuctl run` that loses its machine for longer than `link_lost_seconds` (a laptop that
slept, an IP change the firewall no longer matches) while the provider still reports the
machine running: unknown is not done. The machine is not torn down, the run stays
`running`, and the user is told how to reattach and how to end it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from gpuctl.state import Store
from tests.aws.helpers import boto
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd, pytest.mark.timeout(900)]


def test_a_lost_link_never_tears_down_a_machine_that_may_still_train(
    aws: str, gpuctl_home: Path, private_sshd: SshdServer, tmp_path: Path
) -> None:
    aws_profile(gpuctl_home, aws, private_sshd.port, private_sshd, link_lost_seconds=5)
    remote = tmp_path / "remote"
    argv = ["run", "validate", "--provider", "aws-test", "--json", "--set", "epochs=500"]
    argv += ["--set", "train_samples=256", "--set", "val_samples=64"]
    run = Stream(argv, {"GPUCTL_REMOTE_BASE": str(remote)})
    trainer_pid = None
    try:
        wait_for(lambda: run.first("epoch", epoch=1), 300, "epoch 1")
        up = run.first("instance_up")
        assert up is not None
        run_dir = remote / "runs" / up["run_id"]
        trainer_pid = json.loads((run_dir / "agent_status.json").read_text())["trainer_pid"]
        private_sshd.stop()  # the link is gone; the machine (and its trainer) is not
        rc, stderr = run.wait(timeout=240)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    try:
        assert rc == 3, stderr[-3000:]
        assert "Traceback" not in stderr
        failed = [e for e in run.events if e["event"] == "failed"]
        assert failed, [e["event"] for e in run.events]
        assert "may still be training, so nothing was torn down" in failed[-1]["error"]
        assert f"gpuctl logs {up['run_id']} -f" in failed[-1]["hint"]
        assert f"gpuctl down {up['run_id']}" in failed[-1]["hint"]
        assert not [e for e in run.events if e["event"] == "torn_down"]
        found = boto("us-east-1").describe_instances(InstanceIds=[up["instance_id"]])
        assert found["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
        assert psutil.pid_exists(trainer_pid)  # still training on its machine
        with Store(gpuctl_home / "state.db") as store:
            assert store.get_run(up["run_id"]).status.value == "running"
    finally:
        if trainer_pid and psutil.pid_exists(trainer_pid):
            os.killpg(trainer_pid, signal.SIGKILL)
            time.sleep(0.2)
