"""SIGTERM (a script's `timeout`, a CI runner) and SIGHUP (a closed terminal) during a
launch are handled like Ctrl-C: the droplet just created is destroyed, the run is marked
failed with a reason, and gpuctl exits with 128 + the signal number."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_a_signal_during_the_boot_wait_destroys_the_droplet(
    gpuctl_home: Path, fake: FakeDigitalOcean, sig: signal.Signals, code: int
) -> None:
    fake.active_after = 10**9  # the droplet never comes up: gpuctl sits in its boot wait
    (gpuctl_home / "config.toml").write_text(
        f'providers = ["amd"]\n\n[profiles.amd]\nendpoint = "{fake.url}"\npoll_interval = 0.05\n'
        'ssh_cidr = "203.0.113.7/32"\n'
    )
    proc = subprocess.Popen(
        [GPUCTL, "launch", "validate", "--provider", "amd"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AMD_DEVCLOUD_TOKEN": AMD_TOKEN},
    )
    try:
        deadline = time.monotonic() + 120
        while not fake.droplets and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        (droplet_id,) = fake.droplets  # created, and still booting
        time.sleep(0.3)  # well into the boot wait
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert "interrupted" in err
    assert fake.calls("DELETE", f"/v2/droplets/{droplet_id}"), "no DELETE reached the API"
    assert fake.droplets == {}
    with Store(gpuctl_home / "state.db") as store:
        (run,) = store.list_runs()
    assert run.status.value == "failed", run
    assert "launch interrupted before the trainer started" in run.reason
