"""`gpuctl supervise`: what an open `gpuctl run` does, for every run, with no terminal open.

One process per data directory (gpuctl/supervisor_state.py holds the lock). Each tick it
takes up every run nobody else drives (its launching or following gpuctl exited, or
was killed) and gives it a worker thread that does what `gpuctl run` does after the
launch: follow it (log, meter, budget stops across runs), recover it when the cloud
interrupts it (gpuctl/recovery.py; a recovery cut short by kill -9 is continued by
gpuctl/recovery_restart.py, never relaunched twice), and end it (results home, the
teardown policy). Then it refreshes the listings, which reconciles the store with the
providers and meters what bills. A run another live gpuctl drives (`gpuctl run`, the
TUI) is left to it; other gpuctl processes see the supervisor's claim and leave
recovery to it. Stopping the supervisor stops following, never a run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, ClassVar

from . import recovery, recovery_restart, supervisor_state
from .events import Event
from .lifecycle import Engine
from .models import Run, RunStatus
from .settings import Settings

log = logging.getLogger("gpuctl.supervisor")

KIND = "supervisor"  # the kind of the events it records: {"action": ...}
DEFAULT_INTERVAL = 30.0
JOIN_SECONDS = 60.0  # how long a stop waits for workers to let go of their runs
_TAKEN = (RunStatus.INTERRUPTED, RunStatus.LOST)


@dataclass(frozen=True)
class Supervised(Event):
    """What the supervisor did: took up a run, left it, started, stopped."""

    kind: ClassVar[str] = KIND
    action: str
    detail: str = ""

    def text(self) -> str:
        who = f"run {self.run_id}: " if self.run_id else ""
        return f"supervisor: {who}{self.action}" + (f" ({self.detail})" if self.detail else "")


def record(engine: Any, run_id: str | None, action: str, **data: Any) -> None:
    engine.record_event(run_id, KIND, {"action": action, **data})


def last_actions(engine: Any, count: int = 5) -> list[dict[str, Any]]:
    """The supervisor's last few records, newest last (`gpuctl supervise --status`)."""
    return engine.store.events(kinds=[KIND])[-count:]


class Supervisor:
    """The loop; `run` returns once `stop` was called (or raises out of a signal)."""

    def __init__(
        self,
        settings: Settings,
        emit: Callable[[Event], None],
        *,
        interval: float = DEFAULT_INTERVAL,
        engine: Engine | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine or Engine(settings)
        self.interval = interval
        self._emit = emit
        self._emit_lock = threading.Lock()
        self.workers: dict[str, threading.Thread] = {}
        self.stopping = threading.Event()

    def emit(self, ev: Event) -> None:
        with self._emit_lock:
            try:
                self._emit(ev)
            except Exception:  # a reader gone away never stops a recovery
                log.exception("could not print %s", ev.kind)

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        """Hold the lock (AlreadyRunning if another has it), then tick until stopped."""
        held = supervisor_state.hold(self.settings.home)
        record(self.engine, None, "started", pid=os.getpid(), data_dir=str(self.settings.home))
        self.emit(Supervised("", "started", f"pid {os.getpid()}, {self.settings.home}"))
        try:
            while not self.stopping.is_set():
                self.tick()
                self.stopping.wait(self.interval)
        finally:
            self.stopping.set()
            followed = sorted(r for r, t in self.workers.items() if t.is_alive())
            until = time.monotonic() + JOIN_SECONDS
            for thread in list(self.workers.values()):
                thread.join(max(0.0, until - time.monotonic()))
            record(self.engine, None, "stopped", runs=followed)
            self.emit(Supervised("", "stopped", "the runs go on on their machines"))
            held.release()

    # -- one pass ------------------------------------------------------------------------

    def tick(self) -> None:
        """Take up the runs nobody drives, then refresh (reconcile, the ledger)."""
        try:
            for run in self.engine.store.list_runs():
                self._take_up(run)
            self.engine.refresh()
            self.engine.settle_ended_billing()
        except Exception as exc:  # a tick that failed is retried at the next one
            log.exception("supervisor tick failed")
            record(self.engine, None, "error", error=f"{type(exc).__name__}: {exc}")

    def wanted(self, run: Run) -> RunStatus | None:
        """The status to claim the run in when it is the supervisor's to drive, else None."""
        if run.status == RunStatus.RUNNING and run.remote_dir:
            to = RunStatus.RUNNING
        elif run.status == RunStatus.RECOVERING:
            to = RunStatus.INTERRUPTED  # its recovering gpuctl died: continued here
        elif (
            run.status in _TAKEN
            and run.launch_spec.managed
            and recovery.needs_recovery(run, run.status)
            and run.attempt <= recovery.MAX_RECOVERIES
        ):
            to = run.status
        else:
            return None
        claims = self.engine.store.events(run.id, kinds=["owner"])
        if not claims:
            return to
        mine = claims[-1].get("pid") == os.getpid()
        alive = recovery.owner_alive(self.engine.store, run.id)
        if mine or alive is False:
            return to  # ours with its worker gone, or its gpuctl exited / was killed
        return None  # driven by a live gpuctl here, or by one on another machine

    def _take_up(self, run: Run) -> None:
        worker = self.workers.get(run.id)
        if worker is not None and worker.is_alive():
            return
        to = self.wanted(run)
        if to is None:
            return
        store = self.engine.store
        if not recovery.take_over(store, run.id, {run.status}, to, recovery.SUPERVISE):
            return  # someone else moved it first
        action = "following" if to == RunStatus.RUNNING else "recovering"
        detail = f"was {run.status.value}" + (f": {run.reason}" if run.reason else "")
        record(self.engine, run.id, action, was=run.status.value, pid=os.getpid())
        self.emit(Supervised(run.id, action, detail))
        thread = threading.Thread(
            target=self._work, args=(run.id,), name=f"supervise-{run.id}", daemon=True
        )
        self.workers[run.id] = thread
        thread.start()

    # -- one run -------------------------------------------------------------------------

    def _work(self, run_id: str) -> None:
        # Its own drivers, SSH links and meter; the one store handle (thread-safe): a second
        # connection opened in this process could drop the others' sqlite file locks.
        engine = Engine(self.settings, self.engine.store)
        events = drive(engine, run_id)
        try:
            for ev in events:
                self.emit(ev)
                if self.stopping.is_set() and _only_following(engine, run_id):
                    break  # a recovery or an ending under way is let finish first
        except Exception as exc:  # the next tick takes the run up again
            log.exception("supervising %s failed", run_id)
            record(engine, run_id, "error", error=f"{type(exc).__name__}: {exc}")
        finally:
            events.close()
            _put_back(engine, run_id)
        run = engine.store.get_run(run_id)
        record(engine, run_id, "left", status=run.status.value)
        self.emit(Supervised(run_id, "left", run.status.value))
        engine.release_hosts(run.provider, run.instance_id)


def _only_following(engine: Engine, run_id: str) -> bool:
    """The run trains and is only being followed: a stop may let go of it right now."""
    return engine.store.get_run(run_id).status == RunStatus.RUNNING


def drive(engine: Engine, run_id: str) -> Generator[Event, None, Any]:
    """What `gpuctl run` does once its trainer started: follow, recover, end."""
    run = engine.store.get_run(run_id)
    if run.status == RunStatus.RUNNING:
        status = yield from engine.follow(run_id, tail_lines=0)
    else:  # interrupted by the cloud, or a recovery its gpuctl did not live to end
        offset = yield from recovery_restart.continue_recovery(engine, run_id)
        run = engine.store.get_run(run_id)
        if offset is None:
            if recovery.needs_recovery(run, run.status):
                return run.status  # could not tell what to do: the next tick retries
            status = run.status
        else:
            status = yield from engine.follow(
                run_id, from_start=False, tail_lines=0, log_offset=offset
            )
    status = yield from recovery.supervise(engine, run_id, status)
    return (yield from engine.finish(run_id, status))


def _put_back(engine: Engine, run_id: str) -> None:
    """A recovery this process gave up part way (a stop) is left for the next supervisor
    or `gpuctl resume`: interrupted again, with its reason."""
    store = engine.store
    run = store.get_run(run_id)
    if run.status == RunStatus.RECOVERING:
        claims = store.events(run_id, kinds=["owner"])
        if claims and claims[-1].get("pid") == os.getpid():
            store.transition_run(run_id, {RunStatus.RECOVERING}, RunStatus.INTERRUPTED)
