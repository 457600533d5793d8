"""Follow a running trainer: log lines, epochs, GPU samples and the cost meter, until it ends.

Unknown is not done: a link that drops or a status that cannot be read keeps the run
as it is; only the machine's own word (or the provider's) ends it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from . import billed_price, cost, recovery, runstate
from .errors import EXIT_BUDGET, EXIT_RUN_FAILED, GpuctlError, RemoteError
from .events import CostTick, EpochDone, Event, Failed, GpuSampled, LogLines, Notice
from .host import Host
from .models import RunStatus
from .rundir import RunDir
from .tail import Tail, last_lines
from .trainer.protocol import AGENT_ENDED, EVENTS_FILE, TRAIN_LOG_FILE, StopReason, TrainerEvent

log = logging.getLogger("gpuctl")

if TYPE_CHECKING:
    from .ports import EngineOps, Events


SHOWN_LINE_MOST = 10_000  # characters of one log line on a screen; train.log keeps it all


def shown(line: str) -> str:
    """A log line as the run's screen shows it: a script that prints 10 MB without a
    newline must not flood the terminal (`gpuctl logs` still prints it whole)."""
    if len(line) <= SHOWN_LINE_MOST:
        return line
    more = len(line) - SHOWN_LINE_MOST
    return f"{line[:SHOWN_LINE_MOST]} ... [{more:,} more characters in train.log]"


def follow(
    engine: EngineOps,
    run_id: str,
    *,
    from_start: bool = False,
    tail_lines: int = 20,
    stop_when_done: bool = True,
    log_offset: int | None = None,
) -> Events:
    """Stream log lines, epochs, GPU samples and cost until the trainer ends.

    `log_offset`: follow train.log from there (a resumed run's log continues).
    """
    run = engine.store.get_run(run_id)
    run_id = run.id
    engine.attached.append(run_id)
    try:
        _instance, host = engine.locate(run)
    except GpuctlError as exc:
        yield Failed(run_id, exc.message, exc.hint, exc.exit_code)
        return run.status
    rd = RunDir(host, run_id, run.remote_dir)
    if log_offset is not None:
        log_tail = Tail(host, rd.p(TRAIN_LOG_FILE), log_offset)
    elif from_start:
        log_tail = Tail(host, rd.p(TRAIN_LOG_FILE))
    else:
        lines, offset = last_lines(host, rd.p(TRAIN_LOG_FILE), tail_lines)
        if lines:
            yield LogLines(run_id, tuple(shown(line) for line in lines))
        log_tail = Tail(host, rd.p(TRAIN_LOG_FILE), offset)
    events_tail = Tail(host, rd.p(EVENTS_FILE))
    seen_epochs = EpochClock(() if from_start else range(1, run.epoch + 1))
    next_status = next_gpu = next_cost = 0.0
    final: dict[str, Any] = {}
    link_down_since: float | None = None
    lost_after = float(engine.settings.profile(run.provider).value("link_lost_seconds"))
    warned: set[str] = set()
    while True:
        try:
            lines = log_tail.poll()
            if lines:
                yield LogLines(run_id, tuple(shown(line) for line in lines))
            for ev in events_tail.poll_json():
                yield from trainer_event(engine, run_id, ev, seen_epochs, events_tail)
            yield from _malformed_notice(run_id, events_tail, warned)
            now = time.monotonic()
            if now >= next_gpu:
                next_gpu = now + engine.gpu_seconds
                samples = sample_gpus(engine, host)
                if samples:
                    yield GpuSampled(run_id, samples)
            if now >= next_cost:
                yield from cost_tick(engine, run_id, warned)
                due = engine.cost_next.get(run_id)  # sooner when a threshold is near
                next_cost = now + min(
                    engine.cost_seconds, max(engine.poll_seconds, due or engine.cost_seconds)
                )
            if now >= next_status:
                next_status = now + engine.status_seconds
                status = rd.status()
                yield from recovery.status_notices(run_id, status, warned)  # spot notice
                state = status.get("state")
                if not status and rd.exists():
                    # Unknown is not done: the run's directory is there but its agent
                    # config cannot be read; the trainer may well be running.
                    if "unreadable" not in warned:
                        warned.add("unreadable")
                        yield Notice(
                            run_id,
                            f"cannot read the agent's status on {host.label}; still "
                            "following (the trainer may be running)",
                            "warning",
                        )
                elif state in AGENT_ENDED or not status:
                    for line_batch in (log_tail.flush(),):
                        if line_batch:
                            yield LogLines(run_id, tuple(shown(line) for line in line_batch))
                    for ev in events_tail.poll_json():
                        yield from trainer_event(engine, run_id, ev, seen_epochs, events_tail)
                    yield from _malformed_notice(run_id, events_tail, warned)
                    final = status
                    break
            if link_down_since is not None:
                yield Notice(run_id, f"reconnected to {host.label}")
                link_down_since = None
            yield from recovery.reconnect_notices(run_id, host, warned)  # silent reconnects
        except RemoteError as exc:
            if link_down_since is None:
                link_down_since = time.monotonic()
                yield Notice(run_id, f"link to {host.label} lost ({exc}); retrying", "warning")
            recorded = engine.store.get_run(run_id).status
            if recorded.terminal and run.status.active:
                return recorded  # ended meanwhile (`gpuctl down`, a stop): that stands
            gone = recovery.vanished(engine, run)  # the provider says the machine is gone
            if gone is not None:
                yield Notice(run_id, gone, "warning")
                return RunStatus.INTERRUPTED
            if time.monotonic() - link_down_since > lost_after:
                # Unknown is not done: the machine still exists (or nobody can tell),
                # so its run may still be training. The run stays as it is and
                # nothing is torn down; the user decides.
                engine.record_event(run_id, "unreachable", {"host": host.label, "error": str(exc)})
                yield Failed(
                    run_id,
                    f"lost the link to {host.label} for {lost_after:.0f}s ({exc}); its "
                    "machine may still be training, so nothing was torn down",
                    f"`gpuctl logs {run_id} -f` reattaches; `gpuctl stop {run_id}` or "
                    f"`gpuctl down {run_id}` ends it",
                    exc.exit_code,
                )
                return engine.store.get_run(run_id).status
            time.sleep(min(10.0, 1.0 + (time.monotonic() - link_down_since) / 5))
            continue
        if not stop_when_done:
            return None
        time.sleep(engine.poll_seconds)
    status = final_status(engine, run_id, final)
    return status


def trainer_event(
    engine: EngineOps, run_id: str, ev: dict[str, Any], seen: EpochClock, tail: Tail | None = None
) -> Iterator[Event]:
    if ev.get("event") != TrainerEvent.EPOCH_END:
        return
    try:
        epoch, epochs = _count(ev.get("epoch", 0)), _count(ev.get("epochs", 0))
    except ValueError:
        if tail is not None:  # a line from the machine that is not what it says
            tail.malformed += 1
            tail.last_malformed = json.dumps(ev)[:80]
        return
    ev = {k: (v if k not in _EPOCH_NUMBERS or _number(v) else None) for k, v in ev.items()}
    if not seen.add(epoch, ev):
        return
    eta = seen.eta(epoch, epochs)
    engine.store.update_run(
        run_id, epoch=epoch, epochs=epochs, metric=ev.get("val_metric"), eta_seconds=eta
    )
    engine.record_event(
        run_id,
        "epoch",
        {k: ev.get(k) for k in ("epoch", "epoch_seconds", "samples_per_second", "warmup")},
    )
    yield EpochDone(
        run_id,
        epoch,
        epochs,
        ev.get("train_loss"),
        ev.get("val_loss"),
        ev.get("val_metric"),
        ev.get("epoch_seconds"),
        eta,
        bool(ev.get("warmup", False)),
    )


def sample_gpus(engine: EngineOps, host: Host) -> tuple[Any, ...]:
    try:
        from gpuctl.remote.gpu import sample_gpus
    except ImportError:
        return ()
    try:
        return tuple(sample_gpus(host))
    except GpuctlError:
        return ()


def cost_tick(engine: EngineOps, run_id: str, warned: set[str]) -> Iterator[Event]:
    """Meter the run; warn once at warn_fraction and stop it at 100% of any budget
    that applies (its own, the month's, its provider's)."""
    run = engine.store.get_run(run_id)
    line = cost.run_line(engine.store, engine.settings, run_id)
    yield CostTick(run_id, line.spent, line.burn_per_hour, line.projected_total, run.budget)
    states = cost.run_budgets(engine.store, engine.settings, run)
    engine.cost_next[run_id] = cost.seconds_to_threshold(states, line.burn_per_hour)
    for alert in cost.fire_alerts(engine.store, states):
        engine.record_event(run_id, "budget", {"level": alert.level, **alert.state.to_dict()})
        yield Notice(run_id, alert.message, "error" if alert.level == "stop" else "warning")
    yield from billed_price.watch(engine, run, warned)  # spot price now; above the max: stop
    over = cost.exceeded(states)
    if over is not None and "stop" not in warned and run.status.active:
        warned.add("stop")
        engine.store.update_run(run_id, reason=StopReason.BUDGET.value)
        try:
            _instance, host = engine.locate(run)
            why = f"{StopReason.BUDGET}: {over.label}"
            RunDir(host, run_id, run.remote_dir).stop(reason=why)
        except GpuctlError as exc:
            yield Notice(run_id, f"budget stop failed: {exc.one_line()}", "error")


def final_status(engine: EngineOps, run_id: str, agent: dict[str, Any]) -> RunStatus:
    """The run's status once its trainer ended; recorded once, by whoever saw it first."""
    return runstate.record_end(engine, run_id, agent)[0]


class EpochClock:
    """Epochs already reported, and an ETA that ignores the slow warm-up epochs."""

    def __init__(self, done: Iterable[int] = ()) -> None:
        self.done = set(done)
        self.steady: list[float] = []

    def add(self, epoch: int, ev: dict[str, Any]) -> bool:
        if epoch in self.done:
            return False
        self.done.add(epoch)
        seconds = ev.get("epoch_seconds")
        if isinstance(seconds, int | float) and not ev.get("warmup"):
            self.steady.append(float(seconds))
        return True

    def eta(self, epoch: int, epochs: int) -> float | None:
        if not self.steady or epochs <= epoch:
            return 0.0 if epochs and epochs <= epoch else None
        recent = self.steady[-5:]
        return sum(recent) / len(recent) * (epochs - epoch)


def exit_code_for(status: RunStatus | None) -> int:
    if status in (RunStatus.FINISHED, RunStatus.STOPPED, RunStatus.INTERRUPTED):
        return 0
    if status == RunStatus.BUDGET:
        return EXIT_BUDGET
    return EXIT_RUN_FAILED


# -- lines from the machine ------------------------------------------------------------------

_EPOCH_NUMBERS = ("train_loss", "val_loss", "val_metric", "epoch_seconds", "samples_per_second")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> int:
    """An epoch number from the machine: a non-negative int, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValueError(f"not an epoch count: {value!r}")
    return int(value)


def _malformed_notice(run_id: str, tail: Tail, warned: set[str]) -> Iterator[Event]:
    """Warn once per follow that lines were skipped; every skip goes to the log."""
    key = f"malformed:{tail.path}"
    if tail.malformed and key not in warned:
        warned.add(key)
        name = tail.path.rsplit("/", 1)[-1]
        yield Notice(
            run_id,
            f"skipped a malformed line in {name} from the machine ({tail.last_malformed!r}); "
            "the run goes on",
            "warning",
        )
    if tail.malformed:
        log.warning("%s: %d malformed line(s) in %s so far", run_id, tail.malformed, tail.path)
        tail.malformed = 0
