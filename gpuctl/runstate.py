"""A run's own state on its machine, brought into the store: one place for every reader.

The store's copy of a detached run moves only when someone looks. Every command that
reaches the machine (`status`, `logs`, `stop`, `down`, `resume`, `ls`), every follow and
the control center read the agent's status (with the trainer's status.json) through
sync_run, so a run that finished says `finished` in the very next command, and its
progress is the trainer's, not the last value a follower happened to write. The end is
recorded once, by whoever sees it first: Store.end_run is a compare-and-set on the
status, in one transaction with the "ended" event.

Progress means completed epochs everywhere (epoch_text): the trainer's `epochs_done`,
never the epoch in progress.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import GpuctlError
from .models import Run, RunStatus
from .rundir import RunDir
from .runs.status import Reason
from .tail import last_lines
from .trainer.protocol import AGENT_ENDED, TRAIN_LOG_FILE, AgentState, Phase, StopReason

if TYPE_CHECKING:
    from .ports import EngineOps

log = logging.getLogger("gpuctl.runstate")

LIVE = frozenset({RunStatus.RUNNING, RunStatus.STOPPING})  # a trainer was started
# How a trainer killed by the stop's SIGTERM exits: -15 from Popen, 143 through a shell.
STOP_SIGNAL_CODES = frozenset({-signal.SIGTERM, 128 + signal.SIGTERM})
LOG_LINES = 5  # last log lines quoted in the reason of a run that died unwatched


def epoch_text(done: int | None, total: int | None) -> str:
    """Completed epochs of all, the same words in the CLI and the control center."""
    if not total:
        return "-"
    return f"{done or 0}/{total}"


def epochs_done(run: Run, trainer: Mapping[str, Any]) -> int:
    """Epochs the trainer has completed: its own count, else what the store knows."""
    done = trainer.get("epochs_done")
    if isinstance(done, int) and not isinstance(done, bool) and done >= 0:
        return done
    if trainer.get("phase") == Phase.FINISHED and isinstance(trainer.get("epochs"), int):
        return int(trainer["epochs"])
    return run.epoch  # an older trainer: its `epoch` is the one in progress, not done


def outcome(run: Run, agent: Mapping[str, Any]) -> tuple[RunStatus, str]:
    """The final status and reason an ended agent's status means for this run."""
    trainer = agent.get("trainer") or {}
    phase = trainer.get("phase")
    code = agent.get("exit_code")
    reason = str(agent.get("reason") or trainer.get("reason") or "")
    why = Reason.of(reason)
    if phase == Phase.FINISHED and code in (0, None):
        # Every epoch done: a stop (budget, max hours, idle, stall, user) that raced the
        # last step came too late to matter. None: the agent died, the trainer did not.
        late = f"all epochs done before the stop ({reason}) took effect" if reason else ""
        return RunStatus.FINISHED, late
    if Reason.of(run.reason) is Reason.BUDGET or why is Reason.BUDGET:
        return RunStatus.BUDGET, reason
    if why is Reason.STALL:  # the agent's stall guard stopped it
        return RunStatus.STALLED, reason
    if phase == Phase.FINISHED:
        return RunStatus.FINISHED, reason
    asked = why is Reason.USER or run.status == RunStatus.STOPPING
    if phase == Phase.INTERRUPTED:
        return (RunStatus.STOPPED if asked else RunStatus.INTERRUPTED), reason
    if asked and code in STOP_SIGNAL_CODES:
        # The stop's SIGTERM came before the trainer could catch it (interpreter start,
        # imports): it did what the user asked, it did not fail.
        return RunStatus.STOPPED, reason or StopReason.USER.value
    if not agent:
        return RunStatus.LOST, "the run's directory is gone from its machine"
    if agent.get("state") == AgentState.LOST:
        return RunStatus.LOST, reason or "the agent on the machine died"
    why = str(trainer.get("reason") or reason)
    return RunStatus.FAILED, why or (f"exit code {code}" if code is not None else "ended")


def record_end(
    engine: EngineOps, run_id: str, agent: Mapping[str, Any], *, explain: Any = None
) -> tuple[RunStatus, bool]:
    """Record that the run's trainer ended, once: (the run's status now, whether this
    call recorded it).

    An agent or a trainer that still runs (a stop that timed out, a trainer whose agent
    died) ends nothing: the run keeps its status. `explain(status, reason)` may rewrite
    the reason of a failed run first.
    """
    store = engine.store
    run = store.get_run(run_id)
    if agent and (agent.get("state") not in AGENT_ENDED or agent.get("trainer_alive")):
        return run.status, False  # a trainer still runs: nothing has ended
    status, reason = outcome(run, agent)
    if explain is not None and status in (RunStatus.FAILED, RunStatus.LOST):
        status, reason = explain(status, reason)
    trainer = agent.get("trainer") or {}
    metric = trainer.get("best_metric")
    changes: dict[str, Any] = {
        "reason": reason[:2000],
        "epoch": epochs_done(run, trainer),
        "metric": metric if isinstance(metric, int | float) else run.metric,
        "eta_seconds": None,
    }
    if isinstance(trainer.get("epochs"), int) and trainer["epochs"] > 0:
        changes["epochs"] = trainer["epochs"]
    event: dict[str, Any] = {"status": status.value, "reason": reason[:2000]}
    if agent.get("notified"):  # the agent POSTed these itself (gpuctl.notify sends the rest)
        event["agent_notified"] = list(agent["notified"])
    if isinstance(agent.get("checkpoint_at"), int | float):
        event["checkpoint_at"] = agent["checkpoint_at"]
    if store.end_run(run_id, status, event, **changes):
        return status, True
    return store.get_run(run_id).status, False  # someone else saw it first: theirs stands


def sync_run(engine: EngineOps, run: Run, agent: Mapping[str, Any] | None = None) -> Run:
    """The run as its machine says it is now (the store updated); unreachable: unchanged."""
    return check(engine, run, agent)[0]


def sync_runs(engine: EngineOps, runs: Iterable[Run]) -> list[Run]:
    """sync_run for several runs at once (each may need its own SSH round trip)."""
    runs = list(runs)
    todo = [r for r in runs if r.status in LIVE and r.remote_dir]
    if not todo:
        return runs
    with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:
        fresh = {r.id: r for r in pool.map(lambda r: sync_run(engine, r), todo)}
    return [fresh.get(r.id, r) for r in runs]


def check(engine: EngineOps, run: Run, agent: Mapping[str, Any] | None = None) -> tuple[Run, bool]:
    """(the run now, whether this call recorded its end)."""
    if run.status not in LIVE or not run.remote_dir:
        return run, False
    host = None
    try:
        _instance, host = engine.locate(run)
        rd = RunDir(host, run.id, run.remote_dir)
        if agent is None:
            agent = rd.status()
    except GpuctlError as exc:  # unknown is not done: the run keeps what it has
        log.info("run %s not reachable: %s", run.id, exc.one_line())
        return run, False
    if not agent or agent.get("error") or not _this_attempt(engine, run, agent):
        return run, False
    trainer = agent.get("trainer") or {}
    if agent.get("state") not in AGENT_ENDED or agent.get("trainer_alive"):
        # A live trainer is never shown as ended, whatever became of its agent.
        _progress(engine, run, trainer)
        if agent.get("agent_alive") is False or agent.get("state") == AgentState.LOST:
            _agent_gone(engine, run)
        return engine.store.get_run(run.id), False

    def explain(status: RunStatus, reason: str) -> tuple[RunStatus, str]:
        try:
            lines, _ = last_lines(host, rd.p(TRAIN_LOG_FILE), LOG_LINES)
        except GpuctlError:
            lines = []
        said = " | ".join(ln.strip() for ln in lines if ln.strip())
        what = "the agent died" if agent.get("state") == AgentState.LOST else "the trainer died"
        return RunStatus.FAILED, f"{what} ({reason})" + (f"; last log: {said}" if said else "")

    _status, recorded = record_end(engine, run.id, agent, explain=explain)
    return engine.store.get_run(run.id), recorded


AGENT_GONE_EVENT = "agent_gone"


def agent_gone_text(run_id: str) -> str:
    """What a user is told once when the supervisor died under a trainer that still runs."""
    return (
        "the agent on the machine died; the trainer still trains, but its limits (max hours, "
        f"idle stop, budget) are no longer enforced there; `gpuctl stop {run_id}` still stops it"
    )


def _agent_gone(engine: EngineOps, run: Run) -> None:
    """Say it once: an event and the run's reason (what `status` shows next to running)."""
    if engine.store.events(run.id, kinds=[AGENT_GONE_EVENT]):
        return
    text = agent_gone_text(run.id)
    log.warning("run %s: %s", run.id, text)
    engine.store.add_event(run.id, AGENT_GONE_EVENT, {"message": text})
    engine.store.update_run(run.id, reason=text)


def _this_attempt(engine: EngineOps, run: Run, agent: Mapping[str, Any]) -> bool:
    """The agent status belongs to the run's latest start (not a resumed run's old one)."""
    started = engine.store.events(run.id, kinds=["started"])
    expected = started[-1].get("agent_pid") if started else None
    found = agent.get("agent_pid")
    return expected is None or found is None or expected == found


def _progress(engine: EngineOps, run: Run, trainer: Mapping[str, Any]) -> None:
    """Completed epochs, best metric and ETA of a trainer that still runs."""
    changes: dict[str, Any] = {}
    done = epochs_done(run, trainer)
    if done != run.epoch:
        changes["epoch"] = done
    total = trainer.get("epochs")
    if isinstance(total, int) and total > 0 and total != run.epochs:
        changes["epochs"] = total
    metric = trainer.get("best_metric")
    if isinstance(metric, int | float) and metric != run.metric:
        changes["metric"] = metric
    eta = trainer.get("eta_seconds")
    if isinstance(eta, int | float) and eta != run.eta_seconds:
        changes["eta_seconds"] = eta
    if changes:
        engine.store.update_run(run.id, **changes)
