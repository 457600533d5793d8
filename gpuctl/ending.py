"""How a run ends: `finish` after the trainer exited, `stop` (the trainer only), `down`
(the machine too, its results downloaded first).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from . import cost, download, filelock, follow, listing, results, runstate, teardown
from .errors import EXIT_RUN_FAILED, GpuctlError, NotFoundError
from .events import Failed, Finished, Notice
from .format import rate
from .models import InstanceState, RunStatus
from .rundir import RunDir
from .runs.status import Reason, transition
from .trainer.protocol import StopReason

# The reason of a run that ended on its own, once `down` dealt with its machine.
AFTER_END = "after it ended"

if TYPE_CHECKING:
    from .ports import EngineOps, Events

log = logging.getLogger("gpuctl")


def finish(engine: EngineOps, run_id: str, status: RunStatus | None) -> Events:
    run = engine.store.get_run(run_id)
    if status is None or status.active:
        return status  # not ended (the link was lost): never tear down a live run
    spec = run.launch_spec
    saved_to: Path | None = None
    save_error: GpuctlError | None = None
    try:
        saved_to = yield from download.download(engine, run_id)
    except GpuctlError as exc:
        save_error = exc
        yield Notice(run_id, f"download failed: {exc.one_line()}", "error")
    except Exception as exc:  # never skip the teardown below: the machine bills
        log.exception("download of %s failed", run_id)
        yield Notice(run_id, f"download failed: {type(exc).__name__}: {exc}", "error")
    policy = spec.teardown
    if status == RunStatus.BUDGET:
        policy = engine.settings.budget.on_exceed
    instance = engine.instance_of(run)
    kept = None
    unsaved = save_error is not None and instance is not None
    if unsaved and results.pending(engine.store, engine.store.get_run(run_id), instance):
        kept = instance  # its results live only there: never end it for a failed copy
        policy = "keep"
    if instance is not None and not engine.created_for(spec, instance):
        yield from teardown.release(engine, run_id, instance)  # never torn down: not gpuctl's
    elif instance is not None and policy != "keep":
        try:
            yield from teardown.teardown(engine, run_id, instance, policy)
        except GpuctlError as exc:
            yield Notice(run_id, f"teardown failed: {exc.one_line()}", "error")
    # The last stretch (trainer exit, download, teardown) may cross a budget line
    # between two ticks: report it now, from the closed ledger.
    # What a kept machine really billed ends where its billing did (local: the trainer's
    # exit), so the total said here is the total `gpuctl cost` says later.
    listing.settle_ended_billing(engine)
    for event in follow.cost_tick(engine, run_id, {"stop"}):
        if isinstance(event, Notice):
            yield event
    spent, _ = cost.spent(engine.store, engine.settings, run_id=run_id)
    run = engine.store.get_run(run_id)
    if kept is not None and save_error is not None:
        price = "" if kept.price_per_hour is None else f", billing {rate(kept.price_per_hour)}"
        yield Failed(
            run_id,
            f"run {run_id} {status.value} but its results could not be saved "
            f"({save_error.message}); {kept.id} is kept with them{price}",
            f"`gpuctl download {run_id} --to DIR` saves them, then `gpuctl down {run_id}` "
            "ends the machine",
            save_error.exit_code,
        )
    elif status in (RunStatus.FAILED, RunStatus.LOST, RunStatus.STALLED):
        yield Failed(
            run_id,
            f"run {run_id} {status.value}: {run.reason}",
            f"see the log in {saved_to}"
            if saved_to
            else f"see `gpuctl logs {run_id}`"
            if instance is not None and policy == "keep"
            else engine.gone_hint(run),
            EXIT_RUN_FAILED,
        )
    else:
        yield Finished(
            run_id,
            status.value,
            str(saved_to) if saved_to else None,
            run.metric,
            run.epoch,
            round(spent, 4),
        )
    return status


def stop(engine: EngineOps, run_id: str, *, reason: str = StopReason.USER) -> Events:
    run = engine.store.get_run(run_id)
    if not run.remote_dir:
        raise NotFoundError(f"run {run.id} never started", hint="nothing to stop")
    run = runstate.sync_run(engine, run)  # a run that already ended is not stopped again
    if run.status.terminal:
        yield Notice(run.id, f"run {run.id} already {run.status.value}: nothing to stop")
        return run.status
    _instance, host = engine.locate(run)
    transition(engine.store, run.id, RunStatus.STOPPING)
    yield Notice(run.id, f"stopping {run.id}: the trainer finishes its step and checkpoints")
    answer = RunDir(host, run.id, run.remote_dir).stop(reason=reason)
    status = follow.final_status(engine, run.id, answer.get("status") or {})
    if status.active:
        yield Notice(
            run.id,
            f"the trainer of {run.id} has not exited yet; it stops after its current "
            f"step (`gpuctl status {run.id}` says when)",
            "warning",
        )
        return status
    yield from teardown.after_stop(engine, run, _instance)
    yield Finished(run.id, status.value, None, engine.store.get_run(run.id).metric)
    return status


def down(
    engine: EngineOps, run_id: str, *, discard_results: bool = False, confirmed: bool = False
) -> Events:
    """Terminate the run's instance (stopping the trainer first if it still runs).

    Results not yet downloaded are downloaded first; if that fails the machine is
    kept (a Failed event says why), unless `discard_results` says to lose them.
    A machine gpuctl did not create for this run is released instead, unless
    `confirmed` (the user typed its name): then it is terminated too.

    Two `down`s of one run at once (two shells, the TUI and a script) take turns: the
    second finds the machine gone instead of downloading and terminating it again.
    """
    run = engine.store.get_run(run_id)
    with filelock.exclusive(engine.settings.home / "locks" / f"down-{run.id}.lock"):
        return (yield from _down(engine, run.id, discard_results, confirmed))


def _down(engine: EngineOps, run_id: str, discard_results: bool, confirmed: bool) -> Events:
    run = engine.store.get_run(run_id)
    instance = engine.instance_of(run)
    if instance is None or instance.state == InstanceState.TERMINATED:
        yield Notice(run.id, f"run {run.id} has no live instance; nothing to remove")
        return None
    run = runstate.sync_run(engine, run)  # a run that already ended keeps its status
    stopped_here = run.status.active
    if stopped_here:
        reason = f"{StopReason.USER} (gpuctl down)"
        try:
            _, host = engine.locate(run)
            answer = RunDir(host, run.id, run.remote_dir).stop(reason=reason, timeout=30)
            follow.final_status(engine, run.id, answer.get("status") or {})
        except GpuctlError:
            pass
        # Recorded before the machine goes, so that a follower that then finds the run
        # directory gone cannot call the run failed: it was stopped, by the user.
        engine.store.end_run(
            run.id,
            RunStatus.STOPPED,
            {"status": RunStatus.STOPPED.value, "reason": reason},
            reason=reason,
            eta_seconds=None,
        )
    mine = engine.created_for(run.launch_spec, instance) or confirmed
    if mine and not discard_results and results.pending(engine.store, engine.store.get_run(run.id)):
        try:
            yield from download.download(engine, run.id)
        except GpuctlError as exc:
            kept = f"{instance.id} kept: its results could not be downloaded"
            ended = engine.store.get_run(run.id)
            if stopped_here:  # the reason says what really happened to the machine
                engine.store.update_run(run.id, reason=f"{StopReason.USER}; {kept}")
            elif not ended.reason or ended.reason.startswith(AFTER_END):
                engine.store.update_run(run.id, reason=f"{AFTER_END}: {kept}")
            yield Failed(
                run.id,
                f"{instance.id} not terminated: the results of {run.id} are only on it "
                f"and could not be downloaded ({exc.message})",
                f"fix that and run `gpuctl down {run.id}` again, or "
                f"`gpuctl down {run.id} --discard-results` to terminate it and lose them",
                exc.exit_code,
            )
            return None
    if mine:
        yield from teardown.teardown(engine, run.id, instance, "terminate", confirmed=confirmed)
    else:
        yield from teardown.release(engine, run.id, instance)
    run = engine.store.get_run(run.id)
    removed = "instance removed" if mine else "machine released"
    if run.status.active:
        transition(engine.store, run.id, RunStatus.STOPPED, reason=removed)
    elif run.status == RunStatus.STOPPED and Reason.of(run.reason) is Reason.USER:
        engine.store.update_run(run.id, reason=f"{StopReason.USER}: {removed}")
    elif not run.reason or run.reason.startswith(AFTER_END):
        # A run that had ended on its own (finished): say where its machine went.
        gone = removed + (" without its results (discarded)" if discard_results else "")
        engine.store.update_run(run.id, reason=f"{AFTER_END}: {gone}")
    return None
