"""Continue a recovery whose gpuctl was killed part way (kill -9 of the supervisor).

Such a run is found `recovering` with a dead owner. What the dead process already did is
read back from the provider, never guessed: a machine it launched for the run (tagged
with the run id, and not the machine the recovery replaces) is adopted instead of
launching a second one, and one already running the resumed trainer is simply followed
again. With none, recovery starts over (recovery.recover), which relaunches at most once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from . import cost, recovery
from .errors import GpuctlError
from .events import Failed, Notice, Recovered
from .models import Instance, InstanceState, Run, RunStatus
from .rundir import RunDir
from .runs.status import transition
from .trainer.protocol import AGENT_ACTIVE, TRAIN_LOG_FILE

if TYPE_CHECKING:
    from .ports import EngineOps, Events


def cut_recovery(engine: EngineOps, run_id: str) -> tuple[str | None, int | None] | None:
    """(the machine it replaces, its attempt) when the run's last recovery began and never
    ended (its gpuctl was killed); None when no recovery is under way."""
    kinds = ["recovering", "recovered", "recovery_failed", "recovery_refused"]
    rows = engine.store.events(run_id, kinds=kinds)
    if not rows or rows[-1]["kind"] != "recovering":
        return None
    attempt = rows[-1].get("attempt")
    return rows[-1].get("instance"), attempt if isinstance(attempt, int) else None


def launched_for(engine: EngineOps, run: Run, replaced: str | None) -> list[Instance]:
    """Live machines gpuctl created for the run other than `replaced`, oldest first."""
    listing = engine.provider(run.provider).list_instances()
    found = [
        i
        for i in listing.instances
        if i.run_id == run.id
        and i.id != replaced
        and i.state != InstanceState.TERMINATED
        and engine.created_for(run.launch_spec, i)
    ]
    return sorted(found, key=lambda i: (i.launched_at or 0.0, i.id))


def continue_recovery(engine: EngineOps, run_id: str) -> Events:
    """Recover a run (interrupted, or cut short mid-recovery) without a second machine.

    Returns the log offset to follow from, or None (not recovered; the run says why).
    """
    store = engine.store
    run = store.get_run(run_id)
    cut = cut_recovery(engine, run_id)
    if cut is None or cut[0] is None:
        return (yield from recovery.recover(engine, run_id))
    replaced, attempt = cut
    try:
        spares = launched_for(engine, run, replaced)
    except GpuctlError as exc:  # cannot tell whether a machine was launched: launch none
        yield Notice(run_id, f"cannot list {run.provider}: {exc.one_line()}; retrying", "warning")
        return None
    if not spares:
        return (yield from recovery.recover(engine, run_id))
    keep, extra = spares[-1], spares[:-1]
    for inst in extra:  # more than one: only the newest is kept, none bills for nothing
        yield from recovery.terminate_machine(engine, run, inst)
        recovery.forget(engine, inst)
    began = time.monotonic()
    if not recovery.take_over(store, run_id, {run.status}, RunStatus.RECOVERING, "watch"):
        error = recovery.busy_error(store, run_id, "recovered")
        yield Failed(run_id, error.message, error.hint, error.exit_code)
        return None
    old = store.get_instance(run.provider, replaced) if replaced else None
    if old is not None:
        recovery.forget(engine, old)  # a machine was launched because this one was gone
    store.put_instance(keep)
    cost.record_launch(store, engine.settings, keep, run_id)  # idempotent per machine
    attempt = attempt or run.attempt + 1
    store.update_run(run_id, instance_id=keep.id, attempt=attempt)
    engine.record_event(run_id, "supervisor", {"action": "adopted", "instance": keep.id})
    yield Notice(
        run_id,
        f"{keep.id} was launched for this run by a gpuctl killed mid-recovery: adopted, "
        "no second machine",
    )
    run = store.get_run(run_id)
    offset = _already_running(engine, run, keep)
    if offset is None:
        return (yield from recovery.resume_on(engine, run, keep, False, attempt, began))
    transition(store, run_id, RunStatus.RUNNING, reason="")
    engine.record_event(
        run_id, "recovered", {"attempt": attempt, "instance": keep.id, "same_machine": False}
    )
    yield Recovered(run_id, attempt, keep.id, seconds=round(time.monotonic() - began, 2))
    return offset


def _already_running(engine: EngineOps, run: Run, instance: Instance) -> int | None:
    """The resumed trainer already runs there: the log offset to follow from; else None."""
    if not run.remote_dir:
        return None
    try:
        host = engine.host_for(run, instance)
        rd = RunDir(host, run.id, run.remote_dir)
        if rd.status().get("state") not in AGENT_ACTIVE:
            return None
        return host.file_size(rd.p(TRAIN_LOG_FILE)) or 0
    except GpuctlError:
        return None
