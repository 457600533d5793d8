"""Continue a stopped, interrupted or failed run from its last checkpoint, attached."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import cost, ending, follow, recovery, results, runstate, start
from .errors import ConfigError, GpuctlError, NotFoundError
from .events import Failed
from .models import RunStatus
from .rundir import RunDir
from .runs.status import transition
from .trainer.protocol import LAST_CHECKPOINT_FILE

if TYPE_CHECKING:
    from .ports import EngineOps, Events


def resume(engine: EngineOps, run_id: str) -> Events:
    """Continue a stopped/interrupted/failed run from its last checkpoint, attached."""
    run = runstate.sync_run(engine, engine.store.get_run(run_id))  # the machine's word
    if recovery.supervised(engine.store, run.id):  # `gpuctl supervise` recovers it
        raise recovery.busy_error(engine.store, run.id)
    if run.status.active:
        if recovery.owner_alive(engine.store, run.id):
            raise recovery.busy_error(engine.store, run.id)  # another gpuctl has it now
        raise ConfigError(
            f"run {run.id} is {run.status.value}",
            hint=f"it is still going; `gpuctl logs {run.id} -f` follows it",
        )
    if run.status == RunStatus.FINISHED:
        saved = results.saved_dir(run)
        raise ConfigError(
            f"run {run.id} already finished" + (f"; its results are in {saved}" if saved else ""),
            hint=f"`gpuctl run {run.preset}` starts a new run",
        )
    # Compare-and-set: of two resumes at once (two shells, the TUI and the CLI) exactly
    # one goes on; the other is told who has the run, and creates nothing.
    previous = run.status
    if not recovery.take_over(
        engine.store, run.id, recovery.RESUMABLE, RunStatus.STARTING, "resume"
    ):
        raise recovery.busy_error(engine.store, run.id)
    ready = False
    try:
        try:
            instance, host = engine.locate(run)
        except NotFoundError:  # the machine is gone: a new one, with our checkpoint
            return (yield from recovery.resume_elsewhere(engine, run.id))
        rd = RunDir(host, run.id, run.remote_dir)
        job = run.launch_spec.job
        if job.get("command") and not job.get("checkpoint"):
            raise ConfigError(
                f"run {run.id} runs your command, and its gpuctl.toml names no checkpoint "
                "to resume from",
                hint="add checkpoint = ... and resume = ... under [project], then run it again",
            )
        if host.file_size(rd.p(LAST_CHECKPOINT_FILE)) is None and not (
            yield from recovery.restore(engine, run, rd)
        ):
            raise ConfigError(
                f"run {run.id} has no checkpoint to resume from: no last.pt on "
                f"{instance.id} and none here ({results.what_is_saved(run)})",
                hint=f"`gpuctl run {run.preset}` starts it over",
            )
        ready = True
    finally:
        if not ready:  # not resumed after all: the run is as it was, for the next try
            engine.store.transition_run(run.id, {RunStatus.STARTING}, previous)
    spec = run.launch_spec
    engine.store.update_run(run.id, attempt=run.attempt + 1)
    cost.open_compute(engine.store, instance, run.id)
    try:
        yield from start.start_on(engine, instance, spec, resume=True)
    except GpuctlError as exc:
        transition(engine.store, run.id, RunStatus.FAILED, reason=exc.message)
        yield Failed(run.id, exc.message, exc.hint, exc.exit_code)
        return RunStatus.FAILED
    status = yield from follow.follow(engine, run.id, from_start=False, tail_lines=0)
    status = yield from recovery.supervise(engine, run.id, status)
    return (yield from ending.finish(engine, run.id, status))
