"""Which runs the supervisor takes up (in-process, the local provider): only those no live
gpuctl drives, and a `gpuctl resume` of one it drives is refused with who has it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil
import pytest

from gpuctl.errors import ConfigError
from gpuctl.lifecycle import Engine
from gpuctl.models import LaunchSpec, Run, RunStatus
from gpuctl.supervisor import Supervisor


def _add(engine: Engine, run_id: str, status: RunStatus, reason: str = "") -> Run:
    now = time.time()
    spec = LaunchSpec(run_id=run_id, preset="validate", provider="local", managed=True)
    return engine.store.add_run(
        Run(
            run_id,
            "validate",
            "local",
            status,
            now,
            now,
            spec=spec.to_dict(),
            remote_dir="/nowhere",
            reason=reason,
        )  # type: ignore[arg-type]
    )


def _owner(engine: Engine, run_id: str, proc: subprocess.Popen[bytes], what: str) -> None:
    created = psutil.Process(proc.pid).create_time()
    data = {"pid": proc.pid, "host": socket.gethostname(), "created": created, "what": what}
    engine.store.add_event(run_id, "owner", data)


def test_a_run_a_live_gpuctl_drives_is_left_to_it_until_that_gpuctl_is_gone() -> None:
    engine = Engine()
    sup = Supervisor(engine.settings, lambda ev: None, engine=engine)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = _add(engine, "r-open", RunStatus.RUNNING)
        _owner(engine, run.id, other, "launch")  # an open `gpuctl run`
        assert sup.wanted(engine.store.get_run(run.id)) is None
        spot = _add(engine, "r-spot", RunStatus.INTERRUPTED, "spot interruption")
        _owner(engine, spot.id, other, "watch")  # an open gpuctl recovering it
        assert sup.wanted(engine.store.get_run(spot.id)) is None
    finally:
        other.kill()
        other.wait()
    assert sup.wanted(engine.store.get_run("r-open")) == RunStatus.RUNNING
    assert sup.wanted(engine.store.get_run("r-spot")) == RunStatus.INTERRUPTED
    # Interrupted by a person or a limit, not by the cloud: nothing to recover.
    stopped = _add(engine, "r-stopped", RunStatus.INTERRUPTED, "user")
    assert sup.wanted(stopped) is None


def test_resume_of_a_run_the_supervisor_drives_says_so_and_does_nothing() -> None:
    engine = Engine()
    supervisor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run = _add(engine, "r-sup", RunStatus.INTERRUPTED, "spot interruption")
        _owner(engine, run.id, supervisor, "supervise")
        with pytest.raises(ConfigError) as caught:
            list(engine.resume(run.id))
        assert f"driven by the supervisor (pid {supervisor.pid})" in caught.value.message
        assert engine.store.get_run(run.id).status == RunStatus.INTERRUPTED
    finally:
        supervisor.kill()
        supervisor.wait()
