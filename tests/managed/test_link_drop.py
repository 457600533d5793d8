"""A dropped SSH link during follow: gpuctl reconnects, says so, and the log it streamed
equals the file on the machine byte for byte (no lost or doubled line)."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from tests.fixtures.sshd import SshdServer

from .conftest import Stream, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]


def _links(pid: int, port: int) -> list[int]:
    """Client ports of the process's own SSH connections to the server (paramiko's)."""
    try:
        conns = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return []
    return [c.laddr.port for c in conns if c.raddr and c.raddr.port == port]


def test_follow_reconnects_and_the_log_is_byte_for_byte(sshd: SshdServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    env = {
        "GPUCTL_REMOTE_BASE": str(remote),
        "GPUCTL_REMOTE_PYTHON": sys.executable,
        "GPUCTL_SSH_CONFIG": "/dev/null",
    }
    argv = ["run", "validate", "--provider", "ssh", "--host", sshd.spec]
    argv += ["--identity", str(sshd.key_path), "--json", "--set", "epochs=3"]
    argv += ["--set", "train_samples=1024", "--set", "val_samples=128"]
    run = Stream(argv, env)
    killed = 0
    try:
        wait_for(lambda: len([e for e in run.events if e["event"] == "log"]) >= 3, 180, "logs")
        for port in _links(run.proc.pid, sshd.port):
            killed += sshd.kill_connection(port)  # the sshd child serving gpuctl dies
        rc, stderr = run.wait(timeout=300)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert killed >= 1
    assert rc == 0, stderr[-3000:]
    events = run.events
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "finished"
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert any("reconnected" in m for m in notices), notices
    streamed = "".join(line + "\n" for e in events if e["event"] == "log" for line in e["lines"])
    on_machine = (remote / "runs" / events[-1]["run_id"] / "train.log").read_bytes()
    assert streamed.encode() == on_machine
    assert "Traceback" not in stderr
