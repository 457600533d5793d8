"""The real `gpuctl` CLI against the fake API: config.toml profile -> provider -> pydo."""

from __future__ import annotations

from pathlib import Path

from tests.cli import gpuctl, json_lines
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean


def configure(home: Path, fake: FakeDigitalOcean, extra: str = "") -> dict[str, str]:
    (home / "config.toml").write_text(
        f'providers = ["amd"]\n\n[profiles.amd]\nendpoint = "{fake.url}"\n'
        f'poll_interval = 0.05\nssh_cidr = "203.0.113.7/32"\n{extra}'
    )
    return {"AMD_DEVCLOUD_TOKEN": AMD_TOKEN}


def test_offers_for_the_amd_profile(gpuctl_home: Path, fake: FakeDigitalOcean):
    proc = gpuctl("offers", "-p", "amd", "--json", env=configure(gpuctl_home, fake))
    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert [r["instance_type"] for r in rows] == ["gpu-mi300x1-192gb", "gpu-mi300x8-1536gb"]
    assert rows[0]["price_per_hour"] == 1.99 and rows[0]["provider"] == "amd"
    assert fake.calls("GET", "/v2/sizes")


def test_ls_shows_a_powered_off_droplet_as_stopped(gpuctl_home: Path, fake: FakeDigitalOcean):
    fake.seed_droplet("gpuctl-validate-1-a", tags=["gpuctl", "gpuctl-run-validate-1-a"])
    fake.seed_droplet("gpuctl-fast-2-b", tags=["gpuctl", "gpuctl-run-fast-2-b"], status="off")
    fake.seed_droplet("web-1", tags=["web"])
    proc = gpuctl("ls", "--refresh", "--json", env=configure(gpuctl_home, fake))
    assert proc.returncode == 0, proc.stderr
    rows = {r["run_id"]: r for r in json_lines(proc.stdout)}
    assert set(rows) == {"validate-1-a", "fast-2-b"}
    assert rows["fast-2-b"]["state"] == "stopped" and rows["validate-1-a"]["state"] == "running"


def test_missing_token_is_one_clear_line(gpuctl_home: Path, fake: FakeDigitalOcean):
    configure(gpuctl_home, fake)
    proc = gpuctl("offers", "-p", "amd")
    assert proc.returncode == 3
    assert "AMD_DEVCLOUD_TOKEN is not set" in proc.stderr and "Traceback" not in proc.stderr
