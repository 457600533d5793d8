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


def _launch_in_boot_wait(
    home: Path, fake: FakeDigitalOcean, *, hup: signal.Handlers
) -> subprocess.Popen[str]:
    """`gpuctl launch` on the fake API, returned once its droplet exists and it waits for
    the boot. `hup`: the SIGHUP disposition it starts with (a terminal's default, or
    ignored as under nohup), whatever the test runner itself was started with."""
    fake.active_after = 10**9  # the droplet never comes up: gpuctl sits in its boot wait
    (home / "config.toml").write_text(
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
        preexec_fn=lambda: signal.signal(signal.SIGHUP, hup),
    )
    deadline = time.monotonic() + 120
    while not fake.droplets and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # well into the boot wait
    return proc


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"]
)
def test_a_signal_during_the_boot_wait_destroys_the_droplet(
    gpuctl_home: Path, fake: FakeDigitalOcean, sig: signal.Signals, code: int
) -> None:
    proc = _launch_in_boot_wait(gpuctl_home, fake, hup=signal.SIG_DFL)
    try:
        (droplet_id,) = fake.droplets  # created, and still booting
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


def test_under_nohup_a_hangup_is_ignored_and_sigterm_still_cleans_up(
    gpuctl_home: Path, fake: FakeDigitalOcean
) -> None:
    """`nohup gpuctl launch ...` chose to survive a closed terminal: the launch goes on."""
    proc = _launch_in_boot_wait(gpuctl_home, fake, hup=signal.SIG_IGN)
    try:
        (droplet_id,) = fake.droplets
        proc.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=2)  # still waiting for its droplet
        assert droplet_id in fake.droplets
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert fake.droplets == {} and "Traceback" not in err
