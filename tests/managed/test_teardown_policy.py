"""`--teardown keep|stop` reaches the machine: a limit on it never does more than the
policy allows. Against moto, with the trainer on the real test sshd; the agent's
poweroff command is `touch MARKER` and limits are scaled down to fractions of a second,
so a limit fires while the validate trainer still runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.aws.helpers import boto
from tests.cli import gpuctl, json_lines
from tests.fixtures.sshd import SshdServer

from .conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]


def _profile(home: Path, endpoint: str, sshd: SshdServer, marker: Path) -> None:
    (home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["us-east-1"]
endpoint_url = "{endpoint}"
ssh_cidr = "203.0.113.7/32"
ssh_host = "{sshd.host}"
ssh_port = {sshd.port}
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key_path}"
shutdown_command = ["touch", "{marker}"]
python = "{sys.executable}"
poll_seconds = 0.05
agent_time_scale = 0.0001
"""
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize(("policy", "action"), [("keep", "none"), ("stop", "poweroff")])
def test_a_limit_on_the_machine_follows_the_teardown_policy(
    aws: str, gpuctl_home: Path, sshd: SshdServer, tmp_path: Path, policy: str, action: str
) -> None:
    marker = tmp_path / "powered-off"
    _profile(gpuctl_home, aws, sshd, marker)
    env = {"GPUCTL_REMOTE_BASE": str(tmp_path / "remote")}
    proc = gpuctl(
        "launch", "validate", "--provider", "aws-test", "--teardown", policy, "--json", env=env
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    up = next(e for e in json_lines(proc.stdout) if e["event"] == "instance_up")
    run_dir = tmp_path / "remote" / "runs" / up["run_id"]
    config = _read(run_dir / "agent.json") or {}
    assert config["shutdown"]["action"] == action  # what reached the machine
    status = wait_for(
        lambda: (s := _read(run_dir / "agent_status.json") or {}).get("shutdown") and s,
        120,
        "the agent's limit",
    )
    assert status["shutdown"]["action"] == action  # what the agent did when it fired
    # The limit fired, while the trainer ran (1 h scaled to 0.36 s), not the idle rule after.
    assert status["shutdown"]["reason"].startswith("max hours reached"), status["shutdown"]
    # Its poweroff can only stop the instance: the disk and its results survive.
    behaviour = boto("us-east-1").describe_instance_attribute(
        InstanceId=up["instance_id"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
