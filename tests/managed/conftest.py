"""Fixtures for managed runs: the IMDS emulator, moto, and a machine layout with a fake
trainer (stdlib only) so agent tests run in well under a second, without torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.aws.conftest import (  # noqa: F401  (fixtures)
    aws,
    moto_server,
    register_ami,
    spot_market,
    spot_prices,
)
from tests.cli import GPUCTL
from tests.fakes.imds import FakeImds
from tests.fixtures.sshd import SshdServer

REPO = Path(__file__).resolve().parents[2]

# Stands in for `python -m trainer`: trains "steps" until SIGTERM or a STOP file, then
# writes last.pt (a zip, like torch.save) atomically and exits 0 with status interrupted.
FAKE_TRAINER = """
import json, os, signal, sys, time, zipfile
from pathlib import Path

cfg = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
out = Path(cfg["out_dir"])
stop = {"reason": None}
signal.signal(signal.SIGTERM, lambda *_: stop.update(reason="SIGTERM"))
secrets = sorted(k for k in os.environ if k.startswith("GPUCTL_CHECKPOINT") or k.endswith("TOKEN"))

def status(**kw):
    tmp = out / ".status.tmp"
    tmp.write_text(json.dumps({"secrets_seen": secrets, **kw}))
    os.replace(tmp, out / "status.json")

step = 0
with open(out / "train.log", "a") as log:
    while stop["reason"] is None and not (out / "STOP").exists():
        step += 1
        log.write(f"step {step}\\n")
        log.flush()
        status(phase="training", epoch=1, step=step)
        time.sleep(0.05)
    tmp = out / ".last.pt.tmp"
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("data.pkl", json.dumps({"step": step}) * 200)
    os.replace(tmp, out / "last.pt")
    status(phase="interrupted", epoch=1, step=step, reason=stop["reason"] or "STOP file")
"""


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    with FakeImds() as server:
        yield server


class Machine:
    """A run dir laid out as on a machine: code/agent (the real agent), code/trainer."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.code = root / "code"
        # agent/ as the code bundle ships it: its modules and helper/ (for a job's command)
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(REPO / "gpuctl" / "agent", self.code / "agent", ignore=skip)
        (self.code / "trainer").mkdir()
        (self.code / "trainer" / "__main__.py").write_text(FAKE_TRAINER)
        # The agent reads the names it shares with the trainer from trainer/protocol.py.
        shutil.copy2(REPO / "trainer" / "protocol.py", self.code / "trainer" / "protocol.py")
        self.run_dir = root / "runs" / "r1"
        self.run_dir.mkdir(parents=True)

    def configure(self, **agent: Any) -> None:
        (self.run_dir / "run.json").write_text(json.dumps({"out_dir": str(self.run_dir)}))
        cfg = {"python": sys.executable, "code_dir": str(self.code), "poll_seconds": 0.1}
        cfg.update(agent)
        (self.run_dir / "agent.json").write_text(json.dumps(cfg))

    def agent(self, command: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run the agent as gpuctl does on a machine: a script, with its own env."""
        argv = [sys.executable, str(self.code / "agent" / "agent.py"), command]
        proc = subprocess.run(
            [*argv, "--run-dir", str(self.run_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def status(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "agent_status.json").read_text())
        except (OSError, ValueError):
            return {}

    def trainer_status(self) -> dict[str, Any]:
        try:
            return json.loads((self.run_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "machine")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def aws_profile(home: Path, endpoint: str, port: int, sshd: SshdServer, **extra: Any) -> None:
    """An `aws-test` profile on moto whose instances are reached at 127.0.0.1:port."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra.items())
    (home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["us-east-1"]
endpoint_url = "{endpoint}"
ssh_cidr = "203.0.113.7/32"
ssh_host = "{sshd.host}"
ssh_port = {port}
ssh_user = "{sshd.user}"
ssh_key = "{sshd.key_path}"
shutdown_command = ["true"]
python = "{sys.executable}"
poll_seconds = 0.05
{lines}"""
    )


class Stream:
    """`gpuctl ... --json` in the background; its events collected as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            [GPUCTL, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.append(json.loads(line))

    def first(self, event: str, **match: Any) -> dict[str, Any] | None:
        for ev in list(self.events):
            if ev["event"] == event and all(ev.get(k) == v for k, v in match.items()):
                return ev
        return None

    def wait(self, timeout: float) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(10)
        return rc, self.proc.stderr.read() if self.proc.stderr else ""
