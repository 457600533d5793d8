"""The agent's limits on the machine: the stall guard, the teardown policy, the secrets it
holds, the host rule for its destroy call and the max-hours shutdown it arms itself.

The real agent runs as a script beside a stdlib stand-in for the trainer; the shutdown
command is `touch MARKER`, so what the agent would do to the machine is a file.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path

import pytest

from gpuctl.agent.agent import Supervisor
from gpuctl.agent.cloud import token_allowed
from tests.do.util import AMD_TOKEN
from tests.fakes.do_api import FakeDigitalOcean, Redirector

from .conftest import Machine, wait_for

# Trains 5 steps, then hangs without a word (a dead data loader, a stuck collective)
# while still honouring SIGTERM: it writes last.pt and exits like the real trainer.
HANGING_TRAINER = """
import json, os, signal, sys, time, zipfile
from pathlib import Path

cfg = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
out = Path(cfg["out_dir"])
stop = {"reason": None}
signal.signal(signal.SIGTERM, lambda *_: stop.update(reason="SIGTERM"))

def status(**kw):
    (out / ".status.tmp").write_text(json.dumps(kw))
    os.replace(out / ".status.tmp", out / "status.json")

step = 0
with open(out / "train.log", "a") as log:
    while stop["reason"] is None:
        if step < 5:
            step += 1
            log.write(f"step {step}\\n")
            log.flush()
            status(phase="training", epoch=1, step=step, updated_at=time.time())
        time.sleep(0.05)
with zipfile.ZipFile(out / "last.pt", "w") as zf:
    zf.writestr("data.pkl", json.dumps({"step": step}))
status(phase="interrupted", epoch=1, step=step, reason=stop["reason"])
"""


def _marker_command(path: Path) -> list[str]:
    return ["touch", str(path)]


def test_a_trainer_that_makes_no_progress_is_checkpoint_stopped_as_stalled(
    machine: Machine, tmp_path: Path
) -> None:
    (machine.code / "trainer" / "__main__.py").write_text(HANGING_TRAINER)
    marker = tmp_path / "powered-off"
    machine.configure(
        stall_seconds=1.0,
        shutdown={"action": "poweroff", "command": _marker_command(marker), "policy": "terminate"},
    )
    machine.agent("start")
    status = wait_for(
        lambda: (s := machine.status()).get("state") == "exited" and s, what="the stall stop"
    )
    assert status["reason"].startswith("stalled: no training progress for")
    assert zipfile.is_zipfile(machine.run_dir / "last.pt")  # checkpointed, not killed
    assert machine.trainer_status()["phase"] == "interrupted"
    # No idle rule configured: the teardown policy's action follows at once.
    wait_for(marker.exists, what="the shutdown command")
    assert machine.status()["shutdown"]["reason"] == status["reason"]


def test_a_stall_with_a_busy_gpu_says_so(machine: Machine, tmp_path: Path) -> None:
    """A deadlocked collective spins the GPU: busy gets more time, not a pass."""
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"  # answers as nvidia-smi does for two GPUs, 97% and 95% busy
    smi.write_text("#!/bin/sh\nprintf '97\\n95\\n'\n")
    smi.chmod(0o755)
    (machine.code / "trainer" / "__main__.py").write_text(HANGING_TRAINER)
    machine.configure(stall_seconds=0.5, shutdown={"action": "none", "policy": "keep"})
    machine.agent("start", env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"})
    status = wait_for(
        lambda: (s := machine.status()).get("state") == "exited" and s, what="the stall stop"
    )
    assert status["reason"].startswith("stalled: no training progress for")
    assert status["reason"].endswith("GPU 96% busy")


def test_a_budget_stop_uses_the_budget_policy_not_keep(machine: Machine, tmp_path: Path) -> None:
    marker = tmp_path / "powered-off"
    machine.configure(
        budget_seconds=0.5,
        shutdown={"action": "none", "policy": "keep"},
        budget_shutdown={"action": "poweroff", "command": _marker_command(marker)},
    )
    assert Supervisor(machine.run_dir).run() == 0
    assert machine.status()["reason"].startswith("budget reached")
    assert marker.exists()  # over budget, the machine must not keep billing


SCOPED = "dop_v1_droplet_delete_only"


def _destroy_config(machine: Machine, fake: FakeDigitalOcean, api: str, marker: Path) -> int:
    droplet = fake.seed_droplet("gpuctl-r1", tags=["gpuctl"])
    machine.configure(
        max_seconds=1.0,
        shutdown={
            "action": "destroy",
            "api": api,
            "droplet_id": str(droplet["id"]),
            "token_env": "AMD_DEVCLOUD_AGENT_TOKEN",
            "command": _marker_command(marker),
            "policy": "terminate",
        },
    )
    return int(droplet["id"])


def test_the_destroy_token_never_sits_in_a_process_environment(
    machine: Machine, tmp_path: Path
) -> None:
    fake = FakeDigitalOcean(token=AMD_TOKEN, name="amd").start()
    fake.droplet_delete_tokens.add(SCOPED)
    try:
        marker = tmp_path / "powered-off"
        droplet_id = _destroy_config(machine, fake, fake.url, marker)
        started = machine.agent("start", env={**os.environ, "AMD_DEVCLOUD_AGENT_TOKEN": SCOPED})
        for pid in (started["agent_pid"], started["trainer_pid"]):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue  # already gone: nothing to read
            assert SCOPED.encode() not in environ, pid
        wait_for(lambda: machine.status().get("destroy"), what="the destroy call")
        assert machine.status()["destroy"]["ok"] is True  # it had the token all the same
        assert droplet_id not in fake.droplets and not marker.exists()
        for path in machine.run_dir.iterdir():
            assert SCOPED.encode() not in path.read_bytes(), path.name
    finally:
        fake.close()


def test_destroy_sends_no_token_to_a_host_it_was_redirected_to(
    machine: Machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeDigitalOcean(token=AMD_TOKEN, name="amd").start()
    port = fake.url.rsplit(":", 1)[1]
    elsewhere = Redirector(f"http://localhost:{port}", status=307).start()  # another host
    try:
        marker = tmp_path / "powered-off"
        droplet_id = _destroy_config(machine, fake, elsewhere.url, marker)
        monkeypatch.setenv("AMD_DEVCLOUD_AGENT_TOKEN", AMD_TOKEN)
        Supervisor(machine.run_dir).shutdown("max hours reached (1.00 h)")
        assert elsewhere.hits == 1
        assert fake.calls("DELETE") == []  # the token never reached the other host
        assert droplet_id in fake.droplets and marker.exists()  # powered off instead
        assert machine.status()["destroy"]["error"].startswith("refused to send the API token")
    finally:
        elsewhere.close()
        fake.close()


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.digitalocean.com/v2/droplets/1", True),
        ("http://api.digitalocean.com/v2/droplets/1", False),  # plain http: never
        ("https://api.devcloud.amd.com/v2/droplets/1", True),  # a known API host
        ("https://evil.example/v2/droplets/1", False),
        ("http://127.0.0.1:8080/v2/droplets/1", False),  # loopback, but not the endpoint
    ],
)
def test_destroy_host_and_scheme_rule(url: str, allowed: bool) -> None:
    assert token_allowed(url, "https://api.digitalocean.com") is allowed


def test_loopback_endpoint_over_http_is_allowed_for_emulators() -> None:
    assert token_allowed("http://127.0.0.1:8080/v2/droplets/1", "http://127.0.0.1:8080")


def test_without_a_boot_guard_the_agent_arms_the_max_hours_shutdown(
    machine: Machine, tmp_path: Path
) -> None:
    marker = tmp_path / "guard-fired"
    machine.configure(guard_seconds=1, guard_command=_marker_command(marker))
    started = machine.agent("start")
    guard = wait_for(lambda: machine.status().get("guard"), what="the guard")
    assert guard["seconds"] == 1.0
    machine.agent("stop")  # the guard outlives the run, as the boot guard would
    wait_for(marker.exists, what="the armed shutdown")
    assert started["agent_pid"] != guard["pid"]


if sys.platform != "linux":  # /proc/<pid>/environ
    pytestmark = pytest.mark.skip("linux only")
