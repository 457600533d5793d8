"""The run state machine: every status change goes through one table, and a run that
ended only ever moves again when it is taken up (resumed, recovered)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl.models import RunStatus
from gpuctl.runs.status import ALLOWED, IllegalTransition, Reason, allowed, transition
from gpuctl.state import Store
from tests.unit.test_state import make_run

S = RunStatus


def test_every_status_has_a_row_and_a_finished_run_never_moves() -> None:
    assert set(ALLOWED) == set(RunStatus)
    assert ALLOWED[S.FINISHED] == {S.FINISHED}
    for ended in (S.FAILED, S.INTERRUPTED, S.LOST, S.STOPPED, S.BUDGET, S.STALLED):
        assert not allowed(ended, S.RUNNING) and not allowed(ended, S.FINISHED)
        assert allowed(ended, S.STARTING) and allowed(ended, S.RECOVERING)
    for active in (S.PROVISIONING, S.RUNNING, S.STOPPING, S.RECOVERING):
        assert allowed(active, S.FINISHED) and allowed(active, S.INTERRUPTED)
        assert not allowed(active, S.PENDING)


def test_the_store_refuses_a_status_change_that_bypasses_the_table(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_run(make_run("r1"))
    with pytest.raises(IllegalTransition):
        store.update_run("r1", status=S.FINISHED)
    assert store.get_run("r1").status == S.RUNNING  # nothing written


def test_a_late_observer_cannot_rewrite_the_end(tmp_path: Path) -> None:
    """A follower saw `finished`; a reconcile that then finds the machine gone must not
    turn the finished run into an interrupted one (the "finished shown as running" bug)."""
    store = Store(tmp_path / "state.db")
    store.add_run(make_run("r1"))
    assert transition(store, "r1", S.FINISHED, "done")
    assert not transition(store, "r1", S.INTERRUPTED, "instance gone: i-1")
    assert not transition(store, "r1", S.RUNNING, "")
    run = store.get_run("r1")
    assert (run.status, run.reason) == (S.FINISHED, "done")


def test_expected_narrows_a_claim_and_only_one_of_two_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_run(make_run("r1", status=S.INTERRUPTED))
    claims = [transition(store, "r1", S.RECOVERING, expected={S.INTERRUPTED}) for _ in range(2)]
    assert claims == [True, False]
    assert not transition(store, "r1", S.STARTING, expected={S.STOPPED})  # not stopped
    assert store.get_run("r1").status == S.RECOVERING


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("stopped by user: instance removed", Reason.USER),
        ("Stopped by user (gpuctl down)", Reason.USER),
        ("budget reached (time limit = budget / price = 30 s)", Reason.BUDGET),
        ("max hours reached (1.00 h)", Reason.MAX_HOURS),
        ("idle for 30 min with no trainer", Reason.IDLE),
        ("stalled: no training progress for 20.0 min", Reason.STALL),
        ("spot interruption", Reason.SPOT),
        ("instance gone: i-0abc (spot capacity reclaimed)", Reason.GONE),
        ("agent got signal 15", Reason.SIGNAL),
        ("the trainer died (exit code 1)", Reason.OTHER),
        ("", Reason.OTHER),
        ("a user asked nothing", Reason.OTHER),  # not "user" anywhere in the text
    ],
)
def test_reason_of_reads_the_leading_words_only(text: str, reason: Reason) -> None:
    assert Reason.of(text) is reason
