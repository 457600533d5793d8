"""End to end: `gpuctl run validate --provider aws-test` against moto.

The instance is moto's; SSH goes to the real test sshd on 127.0.0.1 through the
profile's ssh_* overrides, so the trainer really runs, results really download, and
the instance must be terminated (and verified terminated) at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import gpuctl, json_lines
from tests.fixtures.sshd import SshdServer

from .helpers import boto

pytestmark = pytest.mark.slow


def test_run_validate_on_aws_emulator(
    aws: str, spot_prices: Any, gpuctl_home: Path, sshd: SshdServer, tmp_path: Path
) -> None:
    # The subprocess reaches this process's moto over HTTP; seeded data lives server-side.
    spot_prices[("us-east-1", "g4dn.xlarge", "us-east-1a")] = 0.21
    (gpuctl_home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["us-east-1"]
endpoint_url = "{aws}"
ssh_cidr = "203.0.113.7/32"
ssh_host = "{sshd.host}"
ssh_port = {sshd.port}
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key_path}"
shutdown_command = ["true"]
python = "{sys.executable}"
poll_seconds = 0.05
"""
    )
    env = {
        "GPUCTL_REMOTE_BASE": str(tmp_path / "remote"),
        "GPUCTL_REMOTE_PYTHON": sys.executable,
    }
    proc = gpuctl(
        "run", "validate", "--provider", "aws-test", "--spot", "--json", env=env, timeout=400
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    kinds = [e["event"] for e in events]
    for expected in ("provisioning", "attempt", "instance_up", "trainer_started", "epoch"):
        assert expected in kinds, kinds
    up = next(e for e in events if e["event"] == "instance_up")
    assert up["instance_type"] == "g4dn.xlarge" and up["market"] == "spot"
    assert up["price_per_hour"] == pytest.approx(0.21)
    attempt = next(e for e in events if e["event"] == "attempt")
    assert attempt["ok"] and attempt["where"] == "us-east-1a spot"
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    results = Path(final["results_dir"])
    for name in ("best.pt", "last.pt", "history.json", "train.log"):
        assert (results / name).is_file(), name

    item = boto("us-east-1").describe_instances(InstanceIds=[up["instance_id"]])
    instance = item["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "terminated", "the instance must be terminated"
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["gpuctl:run"] == final["run_id"] and tags["gpuctl:preset"] == "validate"
    assert "Traceback" not in proc.stderr
