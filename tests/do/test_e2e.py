"""End to end: `gpuctl run validate --provider amd` against the fake DO API.

The droplet is the fake's; SSH goes to the real test sshd on 127.0.0.1 through the
profile's ssh_* overrides, so the trainer really runs, results really download, and
the droplet must be destroyed (and verified gone) at the end.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from tests.cli import gpuctl, json_lines
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean
from tests.fixtures.sshd import SshdServer

pytestmark = pytest.mark.slow


def _needs_remote_integration() -> None:
    probe = importlib.import_module("gpuctl.remote.probe")
    if not hasattr(probe, "prepare_python"):
        pytest.skip("lifecycle <-> remote integration (gpuctl.remote.probe.prepare_python) missing")


def test_run_validate_on_amd(
    gpuctl_home: Path, fake: FakeDigitalOcean, sshd: SshdServer, tmp_path: Path
) -> None:
    _needs_remote_integration()
    (gpuctl_home / "config.toml").write_text(
        f"""providers = ["amd"]

[profiles.amd]
endpoint = "{fake.url}"
ssh_cidr = "203.0.113.7/32"
ssh_host = "{sshd.host}"
ssh_port = {sshd.port}
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key_path}"
shutdown_command = ["true"]
python = "{sys.executable}"
poll_interval = 0.05
"""
    )
    env = {
        "AMD_DEVCLOUD_TOKEN": AMD_TOKEN,
        "GPUCTL_REMOTE_BASE": str(tmp_path / "remote"),
        "GPUCTL_REMOTE_PYTHON": sys.executable,
    }
    proc = gpuctl("run", "validate", "--provider", "amd", "--json", env=env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    kinds = [e["event"] for e in events]
    for expected in ("provisioning", "attempt", "instance_up", "trainer_started", "epoch"):
        assert expected in kinds, kinds
    up = next(e for e in events if e["event"] == "instance_up")
    assert up["price_per_hour"] == 1.99 and up["instance_type"] == "gpu-mi300x1-192gb"
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "finished", final
    results = Path(final["results_dir"])
    for name in ("best.pt", "last.pt", "history.json", "train.log"):
        assert (results / name).is_file(), name

    (create,) = fake.calls("POST", "/v2/droplets")
    assert create.body["tags"][0] == "gpuctl" and create.body["user_data"].startswith("#!/bin/sh")
    droplet_id = str(up["instance_id"])
    assert fake.droplets == {}, "the droplet must be destroyed at the end"
    path = f"/v2/droplets/{droplet_id}"
    order = [(r.method, r.path) for r in fake.requests]
    deleted = order.index(("DELETE", path))
    assert ("GET", path) in order[deleted:], "destroy must be verified by a GET (404)"

    assert AMD_TOKEN not in proc.stdout + proc.stderr
    for path in gpuctl_home.rglob("*"):
        if path.is_file():
            assert AMD_TOKEN.encode() not in path.read_bytes(), path
