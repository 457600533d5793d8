"""What gpuctl may end on AWS: its own instances, never one it did not create.

Against moto through the real CLI. Instances "created outside gpuctl" are made with plain
boto3 run_instances, as a user or a colleague's gpuctl would; SSH goes only to 127.0.0.1
(a closed port, or the test sshd) through the profile's ssh_* overrides.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuctl.ownership import installation_id
from tests.cli import gpuctl, json_lines
from tests.fixtures.sshd import SshdServer

from .conftest import ACCOUNT, register_ami
from .helpers import boto

REGION = "us-east-1"
COLLEAGUE = "0123456789abcdef"  # another gpuctl installation on the same account


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(home: Path, endpoint: str, ssh: str) -> None:
    (home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["{REGION}"]
endpoint_url = "{endpoint}"
ssh_cidr = "203.0.113.7/32"
shutdown_command = ["true"]
python = "{sys.executable}"
poll_seconds = 0.05
boot_wait = 0
max_attempts = 1
{ssh}
"""
    )


def run_outside_gpuctl(tags: dict[str, str] | None = None) -> str:
    """An instance made with plain boto3: not by this gpuctl."""
    ami = register_ami(REGION, "my own image", owner=ACCOUNT)
    kwargs: dict[str, Any] = {}
    if tags:
        spec = [{"Key": k, "Value": v} for k, v in tags.items()]
        kwargs["TagSpecifications"] = [{"ResourceType": "instance", "Tags": spec}]
    made = boto(REGION).run_instances(
        ImageId=ami, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1, **kwargs
    )
    return str(made["Instances"][0]["InstanceId"])


def state_of(instance_id: str) -> str:
    found = boto(REGION).describe_instances(InstanceIds=[instance_id])
    return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_down_after_a_failed_launch_on_an_instance_not_ours_leaves_it_running(
    aws: str, gpuctl_home: Path
) -> None:
    theirs = run_outside_gpuctl({"Name": "my-box"})
    configure(gpuctl_home, aws, f'ssh_host = "127.0.0.1"\nssh_port = {closed_port()}')
    launch = gpuctl("launch", "validate", "--provider", "aws-test", "--instance", theirs)
    assert launch.returncode == 3, launch.stdout + launch.stderr  # SSH refused
    (run,) = json_lines(gpuctl("ls", "--runs", "--json").stdout)
    assert run["status"] == "failed" and run["instance_id"] == theirs

    down = gpuctl("down", run["id"], "--yes")
    assert down.returncode == 0, down.stderr
    assert "released" in down.stdout and "terminated" not in down.stdout
    assert f"gpuctl down {theirs}" in down.stdout  # how to end it, with its name typed
    assert state_of(theirs) == "running"

    refused = gpuctl("down", theirs, "--yes")  # by instance id, no terminal: refused
    assert refused.returncode == 2 and "NOT created by gpuctl" in refused.stderr
    assert state_of(theirs) == "running"


@pytest.mark.parametrize("tagged_owner", [True, False], ids=["colleague", "older-gpuctl"])
def test_down_orphans_leaves_another_installations_instance_running(
    aws: str, spot_prices: Any, gpuctl_home: Path, tagged_owner: bool
) -> None:
    tags = {"gpuctl:run": "fast-260101-beef", "gpuctl:managed": "true", "Name": "colleague"}
    if tagged_owner:
        tags["gpuctl:installation"] = COLLEAGUE
    theirs = run_outside_gpuctl(tags)
    # One of ours with no run (a lost state file): a real orphan, ended in the same sweep.
    mine = run_outside_gpuctl(
        {
            "gpuctl:run": "fast-260101-cafe",
            "gpuctl:managed": "true",
            "gpuctl:installation": installation_id(gpuctl_home),
        }
    )
    configure(gpuctl_home, aws, "")

    listed = gpuctl("ls", "--refresh")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if theirs in line)
    assert "(foreign)" in row and "(orphan)" not in row
    assert (COLLEAGUE if tagged_owner else "unknown") in row
    assert "OWNER" in listed.stdout.splitlines()[0]
    rows = {r["id"]: r for r in json_lines(gpuctl("ls", "--json").stdout)}
    assert rows[theirs]["foreign"] and not rows[theirs]["orphan"]
    assert rows[theirs]["owner"] == (COLLEAGUE if tagged_owner else None)
    assert rows[mine]["orphan"] and not rows[mine]["foreign"]

    down = gpuctl("down", "--orphans", "--yes")
    assert down.returncode == 0, down.stderr
    foreign = next(line for line in down.stdout.splitlines() if line.startswith("foreign:"))
    assert theirs in foreign and (f"owner={COLLEAGUE}" if tagged_owner else "owner=unknown")
    assert state_of(theirs) == "running"
    assert state_of(mine) in ("shutting-down", "terminated")

    refused = gpuctl("down", theirs, "--yes")  # by its id: only with its name typed
    assert refused.returncode == 2, refused.stderr
    why = "another gpuctl installation" if tagged_owner else "no run this installation knows"
    assert why in refused.stderr and "Traceback" not in refused.stderr
    assert state_of(theirs) == "running"


def test_run_id_and_installation_round_trip_through_aws_tags(
    make_provider: Any, settings: Any, spot_prices: Any
) -> None:
    from .test_launch import drive, spec

    provider = make_provider(regions=[REGION])
    run_id = "bert-base-260101-0a1b"
    instance, _ = drive(provider.launch(spec(run_id=run_id)))
    (listed,) = provider.list_instances().instances
    assert (listed.run_id, listed.owner) == (run_id, settings.installation_id)
    assert instance.owner == settings.installation_id
    ec2 = boto(REGION)
    volumes = ec2.describe_volumes(
        Filters=[{"Name": "tag:gpuctl:installation", "Values": [settings.installation_id]}]
    )["Volumes"]
    assert volumes, "the root volume carries the installation id"
    (pair,) = ec2.describe_key_pairs()["KeyPairs"]
    assert {"Key": "gpuctl:installation", "Value": settings.installation_id} in pair["Tags"]
    (group,) = ec2.describe_security_groups(GroupNames=["gpuctl-ssh"])["SecurityGroups"]
    assert {"Key": "gpuctl:installation", "Value": settings.installation_id} in group["Tags"]
    (rule,) = [r for p in group["IpPermissions"] for r in p.get("IpRanges", [])]
    assert settings.installation_id in rule["Description"], "the SSH rule names who added it"


@pytest.mark.slow
def test_limits_on_an_attached_instance_stop_the_trainer_only(
    aws: str, gpuctl_home: Path, sshd: SshdServer, tmp_path: Path
) -> None:
    theirs = run_outside_gpuctl({"Name": "my-box"})
    configure(
        gpuctl_home,
        aws,
        f'ssh_host = "{sshd.host}"\nssh_port = {sshd.port}\nssh_user = "{sshd.user}"\n'
        f'ssh_key = "{sshd.key_path}"',
    )
    env = {"GPUCTL_REMOTE_BASE": str(tmp_path / "remote"), "GPUCTL_REMOTE_PYTHON": sys.executable}
    launch = gpuctl(
        "launch", "validate", "--provider", "aws-test", "--instance", theirs, env=env, timeout=300
    )
    assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-2000:]
    run_id = launch.stdout.strip().splitlines()[-1]
    agent = json.loads((tmp_path / "remote" / "runs" / run_id / "agent.json").read_text())
    assert agent["shutdown"]["action"] == "none" and agent["owned"] is False
    assert agent["max_seconds"]  # the limits still hold: they stop the trainer

    down = gpuctl("down", run_id, "--yes", env=env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "released" in down.stdout
    assert state_of(theirs) == "running"
    (run,) = json_lines(gpuctl("ls", "--runs", "--json").stdout)
    assert run["status"] != "running"
    cost = json.loads(gpuctl("status", run_id, "--json").stdout)
    assert cost["burn_per_hour"] == 0  # the run's meter is closed: it no longer uses it
