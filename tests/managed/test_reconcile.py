"""Reconcile on refresh (local provider, in-process): killed launches, vanished machines,
tagged strangers, dead trainers. Each is fixed in the store and kept in the run's history."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, InstanceState, LaunchSpec, Market, Run, RunStatus
from gpuctl.reconcile import is_orphan
from gpuctl.recovery import claim
from gpuctl.rundir import code_bundle


@pytest.fixture
def engine() -> Engine:
    return Engine()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _add(engine: Engine, run_id: str, status: RunStatus, **fields: object) -> Run:
    now = time.time()
    spec = LaunchSpec(run_id=run_id, preset="validate", provider="local").to_dict()
    return engine.store.add_run(
        Run(run_id, "validate", "local", status, now, now, spec=spec, **fields)  # type: ignore[arg-type]
    )


def _code_dir(engine: Engine) -> str:
    """The code gpuctl uploads (agent/ next to trainer/), here on this machine."""
    return str(code_bundle(engine.settings.cache_dir)[0])


def _dead_owner(engine: Engine, run_id: str) -> None:
    owner = {"pid": _dead_pid(), "host": socket.gethostname(), "created": 0.0}
    engine.store.add_event(run_id, "owner", owner)


def _local_dir(engine: Engine, run_id: str) -> Path:
    path = engine.settings.home / "local" / "runs" / run_id
    path.mkdir(parents=True)
    (path / ".launched").write_text(str(time.time() - 120))
    return path


def test_killed_launch_is_failed_and_its_machine_is_an_orphan(engine: Engine) -> None:
    _add(engine, "r-killed", RunStatus.PROVISIONING)
    _dead_owner(engine, "r-killed")
    _local_dir(engine, "r-killed")
    _add(engine, "r-live", RunStatus.PROVISIONING)
    claim(engine.store, "r-live", "launch")  # this process: still launching it
    _local_dir(engine, "r-live")
    engine.refresh(["local"])
    killed = engine.store.get_run("r-killed")
    assert killed.status == RunStatus.FAILED and killed.instance_id == "local-r-killed"
    assert "killed while launching" in killed.reason and "down --orphans" in killed.reason
    inst = engine.store.get_instance("local", "local-r-killed")
    mine = engine.settings.installation_id
    assert inst is not None and is_orphan(inst, killed, installation=mine)
    segs = engine.store.segments(run_id="r-killed")
    assert segs and segs[0].start == pytest.approx(inst.launched_at, abs=1)  # cost from launch
    assert engine.store.get_run("r-live").status == RunStatus.PROVISIONING
    engine.refresh(["local"])  # said once
    assert len(engine.store.events("r-killed", kinds=["run_reconciled"])) == 1


@pytest.mark.parametrize("market", [Market.SPOT, Market.ON_DEMAND])
def test_vanished_machine_marks_the_run(engine: Engine, market: Market) -> None:
    _add(engine, "r-gone", RunStatus.RUNNING, instance_id="local-r-gone", remote_dir="/x")
    _dead_owner(engine, "r-gone")
    engine.store.put_instance(
        Instance("local", "local-r-gone", "r-gone", "local", "local", InstanceState.RUNNING,
                 market=market, run_id="r-gone", managed=True)
    )  # fmt: skip
    engine.refresh(["local"])
    run = engine.store.get_run("r-gone")
    expected = RunStatus.INTERRUPTED if market == Market.SPOT else RunStatus.LOST
    assert run.status == expected and run.reason.startswith("instance gone: local-r-gone")
    (found,) = engine.store.events("r-gone", kinds=["run_reconciled"])
    assert found["action"] == "vanished"


def test_tagged_machine_without_a_run_is_adopted_as_an_orphan(engine: Engine) -> None:
    _local_dir(engine, "r-stranger")
    engine.refresh(["local"])
    (found,) = engine.store.events("r-stranger", kinds=["run_reconciled"])
    assert found["action"] == "orphan"
    inst = engine.store.get_instance("local", "local-r-stranger")
    assert inst is not None and is_orphan(inst, None, installation=engine.settings.installation_id)
    assert engine.store.segments(instance_id="local-r-stranger")  # metered


def test_dead_trainer_fails_the_run_with_its_last_log_lines(engine: Engine) -> None:
    run_dir = _local_dir(engine, "r-died")
    cfg = {"code_dir": _code_dir(engine), "python": sys.executable}
    (run_dir / "agent.json").write_text(json.dumps(cfg))
    dead = _dead_pid()
    status = {"state": "running", "agent_pid": dead, "trainer_pid": dead}
    (run_dir / "agent_status.json").write_text(json.dumps(status))
    (run_dir / "train.log").write_text("epoch 1/3 step 4\nRuntimeError: CUDA out of memory\n")
    _add(
        engine,
        "r-died",
        RunStatus.RUNNING,
        instance_id="local-r-died",
        remote_dir=str(run_dir),
    )
    engine.refresh(["local"])
    run = engine.store.get_run("r-died")
    assert run.status == RunStatus.FAILED
    assert "agent died" in run.reason and "CUDA out of memory" in run.reason


def test_killed_just_after_start_adopts_the_running_trainer(engine: Engine) -> None:
    run_dir = _local_dir(engine, "r-started")
    cfg = {"code_dir": _code_dir(engine), "python": sys.executable}
    (run_dir / "agent.json").write_text(json.dumps(cfg))
    alive = {"state": "running", "agent_pid": os.getpid(), "trainer_pid": os.getpid()}
    (run_dir / "agent_status.json").write_text(json.dumps(alive))
    _add(
        engine,
        "r-started",
        RunStatus.STARTING,
        instance_id="local-r-started",
        remote_dir=str(run_dir),
    )
    _dead_owner(engine, "r-started")
    engine.refresh(["local"])
    assert engine.store.get_run("r-started").status == RunStatus.RUNNING
    (found,) = engine.store.events("r-started", kinds=["run_reconciled"])
    assert found["action"] == "adopted"


def test_killed_just_after_start_a_trainer_that_already_finished_is_finished(
    engine: Engine,
) -> None:
    """gpuctl died after starting the trainer, which then trained to the end unwatched:
    the run is finished, as its machine says, not failed for gpuctl's death."""
    run_dir = _local_dir(engine, "r-done")
    cfg = {"code_dir": _code_dir(engine), "python": sys.executable}
    (run_dir / "agent.json").write_text(json.dumps(cfg))
    dead = _dead_pid()
    ended = {"state": "exited", "exit_code": 0, "agent_pid": dead, "trainer_pid": dead}
    (run_dir / "agent_status.json").write_text(json.dumps(ended))
    (run_dir / "status.json").write_text(json.dumps({"phase": "finished", "epochs": 2}))
    _add(
        engine,
        "r-done",
        RunStatus.STARTING,
        instance_id="local-r-done",
        remote_dir=str(run_dir),
    )
    _dead_owner(engine, "r-done")
    engine.refresh(["local"])
    run = engine.store.get_run("r-done")
    assert run.status == RunStatus.FINISHED, (run.status, run.reason)
    (found,) = engine.store.events("r-done", kinds=["run_reconciled"])
    assert found["action"] == "adopted" and "had finished" in found["message"]
