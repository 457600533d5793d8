"""kill -9 of `gpuctl run` mid-launch against moto: `gpuctl ls` shows the orphan and
`gpuctl down --orphans --yes` terminates it; nothing gpuctl did not create is touched."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.aws.helpers import boto
from tests.cli import gpuctl, json_lines
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts TCP and never says a word: a machine that is still booting its sshd."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def _state(instance_id: str) -> str:
    found = boto("us-east-1").describe_instances(InstanceIds=[instance_id])
    return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_killed_launch_leaves_an_orphan_that_down_removes(
    aws: str, gpuctl_home: Path, sshd: SshdServer, silent_port: int, tmp_path: Path
) -> None:
    aws_profile(gpuctl_home, aws, silent_port, sshd)
    ec2 = boto("us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    foreign = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    foreign_id = foreign["Instances"][0]["InstanceId"]  # not gpuctl's: must survive
    env = {"GPUCTL_REMOTE_BASE": str(tmp_path / "remote")}
    run = Stream(["run", "validate", "--provider", "aws-test", "--json"], env)
    try:
        created = wait_for(
            lambda: next(
                (
                    e
                    for e in run.events
                    if e["event"] == "provisioning" and "created in" in e["detail"]
                ),
                None,
            ),
            180,
            "the instance to be created",
        )
        os.kill(run.proc.pid, signal.SIGKILL)  # gpuctl dies mid-launch
        rc, _ = run.wait(timeout=30)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == -signal.SIGKILL
    run_id = created["run_id"]
    instance_id = created["detail"].split()[0]
    assert _state(instance_id) in ("pending", "running")

    listed = gpuctl("ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["id"]: r for r in json_lines(listed.stdout) if "id" in r}
    assert rows[instance_id]["orphan"] is True and rows[instance_id]["run_id"] == run_id
    assert foreign_id not in rows  # `ls` shows gpuctl's own unless --all
    text = gpuctl("ls", "--cached")
    assert "(orphan)" in text.stdout, text.stdout
    runs = {r["id"]: r for r in json_lines(gpuctl("ls", "--runs", "--json").stdout)}
    assert runs[run_id]["status"] == "failed"
    assert "killed while launching" in runs[run_id]["reason"], runs[run_id]

    down = gpuctl("down", "--orphans", "--yes", "--json")
    assert down.returncode == 0, down.stderr
    torn = [e for e in json_lines(down.stdout) if e.get("event") == "torn_down"]
    assert [e["instance_id"] for e in torn] == [instance_id]
    assert _state(instance_id) == "terminated"
    assert _state(foreign_id) == "running"
    with Store(gpuctl_home / "state.db") as store:
        compute = [s for s in store.segments(run_id=run_id) if s.kind == "compute"]
        assert [s.instance_id for s in compute] == [instance_id]  # its cost was counted
        assert compute[0].end is not None  # and stopped when it was terminated
        reconciled = [e for e in store.events(run_id) if e["kind"] == "run_reconciled"]
        assert reconciled and reconciled[0]["action"] == "launch_killed"
    again = gpuctl("down", "--orphans", "--yes")
    assert "no orphaned instances" in again.stdout


def test_ctrl_c_during_launch_terminates_what_it_created(
    aws: str, gpuctl_home: Path, sshd: SshdServer, silent_port: int, tmp_path: Path
) -> None:
    """Ctrl-C before the trainer starts: the new machine would never run anything."""
    aws_profile(gpuctl_home, aws, silent_port, sshd)
    env = {"GPUCTL_REMOTE_BASE": str(tmp_path / "remote")}
    run = Stream(["run", "validate", "--provider", "aws-test", "--json"], env)
    try:
        created = wait_for(
            lambda: next(
                (
                    e
                    for e in run.events
                    if e["event"] == "provisioning" and "created in" in e["detail"]
                ),
                None,
            ),
            180,
            "the instance to be created",
        )
        os.kill(run.proc.pid, signal.SIGINT)
        rc, err = run.wait(timeout=120)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert rc == 130, err
    assert "Traceback" not in err
    instance_id = created["detail"].split()[0]
    assert _state(instance_id) in ("shutting-down", "terminated"), err
    runs = {r["id"]: r for r in json_lines(gpuctl("ls", "--runs", "--json").stdout)}
    run_row = runs[created["run_id"]]
    assert run_row["status"] == "failed"
    assert "launch interrupted before the trainer started" in run_row["reason"]
    assert "no orphaned instances" in gpuctl("down", "--orphans", "--yes").stdout
