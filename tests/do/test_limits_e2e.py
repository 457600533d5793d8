"""A limit on a droplet ends the bill: DigitalOcean and AMD bill a powered-off droplet.

`gpuctl launch` against the fake DO API with the trainer on the real test sshd. Limits
are scaled down (agent_time_scale) so the agent's max-hours stop fires within seconds;
its poweroff command is `touch MARKER`, and the test then powers the droplet off in the
fake API as the real command would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cli import gpuctl, json_lines
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean
from tests.fixtures.sshd import SshdServer
from tests.managed.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]

SCOPED = "dop_v1_" + "5c0bed" * 8  # a custom-scoped token: droplet:read + droplet:delete


def _config(home: Path, fake: FakeDigitalOcean, sshd: SshdServer, marker: Path) -> None:
    (home / "config.toml").write_text(
        f"""providers = ["amd"]

[profiles.amd]
endpoint = "{fake.url}"
ssh_cidr = "203.0.113.7/32"
ssh_host = "{sshd.host}"
ssh_port = {sshd.port}
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key_path}"
shutdown_command = ["touch", "{marker}"]
python = "{sys.executable}"
poll_interval = 0.05
agent_time_scale = 0.001
"""
    )


def _launch(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    base = {
        "AMD_DEVCLOUD_TOKEN": AMD_TOKEN,
        "GPUCTL_REMOTE_BASE": str(tmp_path / "remote"),
        "GPUCTL_REMOTE_PYTHON": sys.executable,
        **(env or {}),
    }
    proc = gpuctl("launch", "validate", "--provider", "amd", "--json", *extra, env=base)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    events = json_lines(proc.stdout)
    up = next(e for e in events if e["event"] == "instance_up")
    warnings = [e["message"] for e in events if e.get("level") == "warning"]
    run_dir = tmp_path / "remote" / "runs" / up["run_id"]
    return {
        "run_id": up["run_id"],
        "droplet": int(up["instance_id"]),
        "warnings": warnings,
        "run_dir": run_dir,
        "env": base,
    }


def _agent_shutdown(run_dir: Path) -> dict[str, Any]:
    def read() -> dict[str, Any] | None:
        try:
            return json.loads((run_dir / "agent_status.json").read_text()).get("shutdown")
        except (OSError, ValueError):
            return None

    return wait_for(read, 120, "the agent's limit")


def test_a_droplet_a_limit_powered_off_is_destroyed_at_the_next_listing(
    gpuctl_home: Path, fake: FakeDigitalOcean, sshd: SshdServer, tmp_path: Path
) -> None:
    marker = tmp_path / "powered-off"
    _config(gpuctl_home, fake, sshd, marker)
    run = _launch(tmp_path)
    # Said up front: no delete-capable token here, so a limit can only power it off.
    assert any("still bills it off ($1.990/h)" in w for w in run["warnings"]), run["warnings"]
    assert any("AMD_DEVCLOUD_AGENT_TOKEN" in w for w in run["warnings"])
    # The test sshd never ran cloud-init: the boot guard is missing and the agent arms it.
    assert any(w.startswith("no boot guard on") for w in run["warnings"]), run["warnings"]
    config = json.loads((run["run_dir"] / "agent.json").read_text())
    assert config["guard_seconds"] == pytest.approx(65 * 60 * 0.001)
    assert config["guard_command"] == ["touch", str(marker)]
    shutdown = _agent_shutdown(run["run_dir"])
    assert shutdown["action"] == "poweroff"  # max hours or idle, whichever came first
    wait_for(marker.exists, 30, "the poweroff command")
    fake.power_off(run["droplet"])

    listed = gpuctl("ls", "--refresh", env=run["env"])
    assert listed.returncode == 0, listed.stderr
    assert f"{run['droplet']} was powered off by a limit on the machine" in listed.stderr
    assert "destroyed" in listed.stderr
    assert run["droplet"] not in fake.droplets  # the bill has ended
    runs = {r["id"]: r for r in json_lines(gpuctl("ls", "--runs", "--json").stdout)}
    assert runs[run["run_id"]]["status"] == "stopped"


def test_with_teardown_stop_an_off_droplet_is_kept_and_shown_still_billing(
    gpuctl_home: Path, fake: FakeDigitalOcean, sshd: SshdServer, tmp_path: Path
) -> None:
    marker = tmp_path / "powered-off"
    _config(gpuctl_home, fake, sshd, marker)
    run = _launch(tmp_path, "--teardown", "stop")
    assert any(w.startswith("--teardown stop: a limit powers") for w in run["warnings"])
    assert _agent_shutdown(run["run_dir"])["action"] == "poweroff"
    fake.power_off(run["droplet"])

    listed = gpuctl("ls", "--refresh", env=run["env"])
    assert listed.returncode == 0, listed.stderr
    assert "off, still billing $1.990/h" in listed.stdout, listed.stdout
    assert run["droplet"] in fake.droplets  # the user asked to keep it (stopped)


def test_a_droplet_scoped_agent_token_lets_the_machine_destroy_itself(
    gpuctl_home: Path, fake: FakeDigitalOcean, sshd: SshdServer, tmp_path: Path
) -> None:
    fake.droplet_delete_tokens.add(SCOPED)
    marker = tmp_path / "powered-off"
    _config(gpuctl_home, fake, sshd, marker)
    run = _launch(tmp_path, env={"AMD_DEVCLOUD_AGENT_TOKEN": SCOPED})
    assert not any("still bills" in w for w in run["warnings"]), run["warnings"]
    assert _agent_shutdown(run["run_dir"])["action"] == "destroy"
    wait_for(lambda: run["droplet"] not in fake.droplets, 60, "the droplet to destroy itself")
    (delete,) = fake.calls("DELETE", f"/v2/droplets/{run['droplet']}")
    assert delete.authorization == f"Bearer {SCOPED}"  # never the full-access token
    # Neither token on the machine's disk, nor in anything gpuctl keeps on the laptop
    # (gpuctl.log, the state store, the config, cached listings).
    assert (gpuctl_home / "gpuctl.log").is_file()
    for root in (tmp_path / "remote", gpuctl_home):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert SCOPED.encode() not in data and AMD_TOKEN.encode() not in data, path


def test_the_full_access_token_is_never_handed_to_the_machine(
    gpuctl_home: Path, fake: FakeDigitalOcean, sshd: SshdServer, tmp_path: Path
) -> None:
    marker = tmp_path / "powered-off"
    _config(gpuctl_home, fake, sshd, marker)
    run = _launch(tmp_path, env={"AMD_DEVCLOUD_AGENT_TOKEN": AMD_TOKEN})
    assert any("holds the full-access token" in w for w in run["warnings"]), run["warnings"]
    assert _agent_shutdown(run["run_dir"])["action"] == "poweroff"
    assert fake.calls("DELETE") == []
