"""The run state machine: which status may follow which, and why a run is where it is.

Every status change goes through `transition` (the store refuses any other way), and the
move is a compare-and-set against this table: a run only moves from a status the table
allows, in one transaction. So a follower, a reconcile and the control center that see
the same end cannot overwrite each other, and nothing turns a finished run into a
running or an interrupted one.

Reasons stay readable text for people; what code decides on is `Reason.of(text)`, one
classifier instead of substring tests spread over the modules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Protocol

from gpuctl.models import ACTIVE_RUN_STATUSES, RunStatus
from gpuctl.trainer.protocol import StopReason

S = RunStatus

# A run that ended can only be taken up again: resumed (starting), recovered, or found to
# have ended because its machine went away (a failure that was an interruption).
_TAKEN_UP = frozenset({S.STARTING, S.RECOVERING, S.INTERRUPTED})
_ENDED_RESUMABLE = (S.FAILED, S.INTERRUPTED, S.LOST, S.STOPPED, S.BUDGET, S.STALLED)

ALLOWED: Mapping[RunStatus, frozenset[RunStatus]] = {
    # Active: on to any later step or any end (an end is seen from wherever the run was),
    # or back to where it was when a resume or a recovery did not go ahead.
    **{s: frozenset(RunStatus) - {S.PENDING} for s in ACTIVE_RUN_STATUSES},
    **{s: _TAKEN_UP | {s} for s in _ENDED_RESUMABLE},
    S.FINISHED: frozenset({S.FINISHED}),  # final: nothing follows a finished run
}


class RunStore(Protocol):
    """What `transition` needs of the store; a protocol so this table sits below state."""

    def transition_run(
        self,
        run_id: str,
        expected: Iterable[RunStatus],
        to: RunStatus,
        *,
        event: tuple[str, Mapping[str, Any]] | None = None,
        **fields: Any,
    ) -> bool: ...


class IllegalTransition(ValueError):
    """A status change that bypasses the state machine: a bug in gpuctl, not user input."""


def allowed(current: RunStatus, to: RunStatus) -> bool:
    return RunStatus(to) in ALLOWED[RunStatus(current)]


def sources(to: RunStatus, among: Iterable[RunStatus] | None = None) -> frozenset[RunStatus]:
    """The statuses a run may move to `to` from (limited to `among`, when given)."""
    to = RunStatus(to)
    found = frozenset(s for s, nxt in ALLOWED.items() if to in nxt)
    return found if among is None else found & frozenset(RunStatus(s) for s in among)


def transition(
    store: RunStore,
    run_id: str,
    to: RunStatus,
    reason: str | None = None,
    *,
    expected: Iterable[RunStatus] | None = None,
    event: tuple[str, Mapping[str, Any]] | None = None,
    **fields: Any,
) -> bool:
    """Move the run to `to` (with `reason` and `fields`), if its status now allows it.

    `expected` narrows the statuses it may come from (a claim: "only if still
    interrupted"). False when the run was not in one of them: someone else moved it
    first, or the move is not in the table; either way nothing was written.
    """
    if reason is not None:
        fields["reason"] = reason[:2000]
    return store.transition_run(run_id, sources(to, expected), to, event=event, **fields)


class Reason(StrEnum):
    """Why a run stopped, as code decides on it; the stored reason text keeps the detail."""

    USER = StopReason.USER.value
    BUDGET = StopReason.BUDGET.value
    MAX_HOURS = StopReason.MAX_HOURS.value
    IDLE = "idle"
    STALL = StopReason.STALL.value
    SPOT = StopReason.SPOT.value
    GONE = "instance gone"  # gpuctl's own: the provider says the machine no longer exists
    SIGNAL = StopReason.SIGNAL.value  # the machine is shutting down under the agent
    OTHER = ""

    @classmethod
    def of(cls, text: str | None) -> Reason:
        """The reason a stored text states (its leading words; case does not matter)."""
        low = (text or "").strip().lower()
        for reason in cls:
            if reason is not cls.OTHER and low.startswith(reason.value):
                return reason
        return cls.OTHER
