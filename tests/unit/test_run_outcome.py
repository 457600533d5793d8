"""How an ended trainer's run is recorded: what it did wins over a stop that raced it.

The agent's status dicts here are what `agent.py status` answers; the store is the real
one, so each test reads the status a user's next `gpuctl status` shows.
"""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpuctl.models import RunStatus
from gpuctl.runs.status import transition
from gpuctl.runstate import record_end
from gpuctl.state import Store
from tests.unit.test_state import make_run

RUN = "validate-261203-b0d9"
FINISHED = {"phase": "finished", "epochs": 3, "epochs_done": 3, "best_metric": 0.91}


def ended(
    tmp_path: Path, agent: dict[str, Any], *, stopping: bool = False, reason: str = ""
) -> tuple[RunStatus, str]:
    store = Store(tmp_path / "state.db")
    store.add_run(make_run(RUN, reason=reason))
    if stopping:
        transition(store, RUN, RunStatus.STOPPING)
    status, recorded = record_end(SimpleNamespace(store=store), RUN, agent)
    assert recorded
    run = store.get_run(RUN)
    assert run.status == status
    return status, run.reason


@pytest.mark.parametrize(
    "why",
    [
        "budget reached (time limit = budget / price = 30 s)",
        "max hours reached (1.00 h)",
        "stalled: no training progress for 5.0 min",
        "stopped by user",
    ],
)
def test_a_trainer_that_finished_every_epoch_is_finished_whatever_stop_raced_it(
    tmp_path: Path, why: str
) -> None:
    agent = {"state": "exited", "exit_code": 0, "reason": why, "trainer": FINISHED}
    status, reason = ended(tmp_path, agent)
    assert status == RunStatus.FINISHED
    assert why in reason  # what raced it is still told, as too late to matter


def test_gpuctls_own_budget_stop_does_not_undo_a_finished_run(tmp_path: Path) -> None:
    agent = {"state": "exited", "exit_code": 0, "reason": "", "trainer": FINISHED}
    status, _ = ended(tmp_path, agent, stopping=True, reason="budget")
    assert status == RunStatus.FINISHED


def test_a_budget_stop_before_the_last_epoch_is_still_budget(tmp_path: Path) -> None:
    trainer = {"phase": "interrupted", "epochs": 3, "epochs_done": 1, "reason": "SIGTERM"}
    agent = {"state": "exited", "exit_code": 0, "reason": "budget reached", "trainer": trainer}
    assert ended(tmp_path, agent)[0] == RunStatus.BUDGET


def test_a_finished_phase_with_a_crash_after_it_is_not_called_clean(tmp_path: Path) -> None:
    agent = {"state": "exited", "exit_code": 1, "reason": "budget reached", "trainer": FINISHED}
    assert ended(tmp_path, agent)[0] == RunStatus.BUDGET


@pytest.mark.parametrize("code", [-signal.SIGTERM, 128 + signal.SIGTERM])
def test_a_stop_that_killed_the_trainer_before_its_handler_is_stopped(
    tmp_path: Path, code: int
) -> None:
    """SIGTERM while the trainer still imported torch: exit -15, no phase written yet."""
    agent = {"state": "exited", "exit_code": code, "reason": "stopped by user", "trainer": {}}
    status, reason = ended(tmp_path, agent, stopping=True)
    assert (status, reason) == (RunStatus.STOPPED, "stopped by user")


def test_a_sigterm_nobody_asked_for_is_still_a_failure(tmp_path: Path) -> None:
    agent = {"state": "exited", "exit_code": -signal.SIGTERM, "reason": "", "trainer": {}}
    assert ended(tmp_path, agent)[0] == RunStatus.FAILED


def test_a_trainer_that_outlived_its_agent_and_finished_is_finished(tmp_path: Path) -> None:
    agent = {"state": "lost", "exit_code": None, "trainer_alive": False, "trainer": FINISHED}
    assert ended(tmp_path, agent)[0] == RunStatus.FINISHED


def test_a_trainer_that_still_runs_ends_nothing_whatever_its_agent_says(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_run(make_run(RUN))
    agent = {"state": "lost", "trainer_alive": True, "trainer": {"phase": "training"}}
    assert record_end(SimpleNamespace(store=store), RUN, agent) == (RunStatus.RUNNING, False)
    assert store.get_run(RUN).status == RunStatus.RUNNING
