"""The gpuctl control center: the app, its workers, and the factory tests use.

The app is the controller. Screens post a message for each action (a Textual message,
a dataclass naming the row: MainScreen.OpenRun, RowActions.Stop, ...) and the app's
on_<screen>_<message> handlers do the work, so a screen knows no method of the app; the
engine's lifecycle generators run in thread workers that post every event back as a message;
the handlers (UI thread) fold events into per-run feeds and push the results down to
the screens as attributes. No widget is touched from a thread, and nothing on the UI
thread waits on the network: the first paint comes from the state store's cache.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import events, work
from textual.app import App, SuspendNotSupported, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import get_current_worker

from gpuctl import runstate
from gpuctl.errors import GpuctlError
from gpuctl.events import (
    Downloaded,
    Event,
    Failed,
    Finished,
    InstanceUp,
    Notice,
    Resolved,
    TornDown,
    TrainerStarted,
)
from gpuctl.format import rate
from gpuctl.host import Host
from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, InstanceState, LaunchSpec
from gpuctl.notify_kinds import URGENT
from gpuctl.results import pending as results_pending

from .feed import RunFeed
from .messages import (
    ActionFailed,
    DriveEnded,
    HistoryLoaded,
    NotificationsSent,
    RunEvent,
    SnapshotReady,
)
from .model import Row, Snapshot, build_snapshot
from .screens.actions import RowActions
from .screens.confirm import ConfirmScreen
from .screens.cost import CostScreen
from .screens.help import HelpScreen
from .screens.launch import LaunchScreen
from .screens.main import MainScreen
from .screens.notifications import NotificationsScreen
from .screens.run import GpuScreen, RunScreen, RunView

log = logging.getLogger("gpuctl.tui")

# Events after which the row's instance, price or status in the store changed.
STRUCTURAL = (Resolved, InstanceUp, TrainerStarted, TornDown, Finished, Failed, Downloaded)
RELOAD_SECONDS = 5.0  # re-read the store (no network): other processes' runs move on too
TERMINAL_CHECK_SECONDS = 2.0  # how soon a hung-up terminal is noticed
# How long a clean exit may take after the terminal is gone before the process ends itself:
# a worker blocked on the network must not keep a headless app alive (and billing a core).
TERMINAL_HARD_EXIT_SECONDS = 10.0
TYPING_PAUSE = 0.2  # apply a background snapshot once keys pause this long...
MAX_DEFER = 1.0  # ...or after this long at the latest
HISTORY_LINES = 500

ShellRunner = Callable[[Host, str], int]


def _run_shell(host: Host, cwd: str) -> int:
    return host.shell(cwd)


def _end_process_after(seconds: float) -> None:
    """The last resort once the terminal is gone: thread workers that never return (a
    blocked socket, a stuck lock) are joined at interpreter exit and would keep it alive.
    The store commits atomically and the runs live on their machines, so nothing is lost."""
    time.sleep(seconds)
    log.warning("terminal hung up and the app did not exit within %.0fs; ending it", seconds)
    logging.shutdown()
    os._exit(129)


def stop_effect(spec: Mapping[str, Any]) -> str:
    """What a graceful stop does to the run's program: the bundled trainer, or the user's."""
    job = spec.get("job") or {}
    if not job.get("command"):
        return "The trainer finishes its step, saves last.pt and exits."
    if job.get("checkpoint"):
        return (
            f"Your command gets SIGTERM to save {job['checkpoint']} (the project's "
            "checkpoint) and exit."
        )
    return (
        "Your command gets SIGTERM to exit; the project declares no checkpoint, so nothing "
        "is kept to resume from."
    )


class GpuctlApp(App[None]):
    """Every instance, every run, the meter: one keystroke each."""

    CSS_PATH = "app.tcss"
    TITLE = "gpuctl"
    ENABLE_COMMAND_PALETTE = True
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help", key_display="?", show=False),
        Binding("ctrl+p", "command_palette", "Command palette", show=False),
    ]

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] | None = None,
        live: bool = True,
        refresh_seconds: float | None = None,
        reload_seconds: float = RELOAD_SECONDS,
        shell_runner: ShellRunner = _run_shell,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock or time.time
        self.live = live
        self.refresh_seconds = refresh_seconds or engine.settings.refresh_seconds
        self.reload_seconds = reload_seconds
        self.shell_runner = shell_runner
        self.feeds: dict[str, RunFeed] = {}
        self.following: set[str] = set()  # runs whose event stream a worker consumes
        self.driven: set[str] = set()  # ...of which launched/resumed here: finished here too
        self.pending: dict[str, Row] = {}  # launched here, not yet in a store snapshot
        self.offers_cache: dict[str, tuple[Any, ...]] = {}
        self.notices_seen = time.time()  # notifications recorded after this are toasted
        self.listed_at: float | None = None
        self.refreshing = False
        self.busy = 0  # workers changing something (launch, stop...): quit asks first
        self.threads = 0  # every lifecycle worker, followers included
        self._busy_lock = threading.Lock()
        self._reload_scheduled = False
        self._known_bad: set[str] = set()
        self._last_key = 0.0
        self._pending_snapshot: SnapshotReady | None = None
        self._pending_network = False
        self._snapshot_timer: Timer | None = None
        self._snapshot_deadline = 0.0
        self.notice_log: deque[tuple[str, str, str]] = deque(maxlen=200)  # severity, title, text
        # First paint: the cached listing in the store, read once, no network.
        self.snapshot: Snapshot = build_snapshot(engine.store, engine.settings, self.now())

    def notify(  # type: ignore[override]
        self, message: str, *, title: str = "", severity: Any = "information", **kw: Any
    ) -> None:
        """Every notification is also kept (newest last) after its toast expires."""
        self.notice_log.append((str(severity), title, message))
        kw.setdefault("markup", False)  # error text may hold [brackets]: show it verbatim
        super().notify(message, title=title, severity=severity, **kw)

    # -- basics ----------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def get_default_screen(self) -> Screen[Any]:
        return MainScreen()

    @property
    def main(self) -> MainScreen:
        return self.screen_stack[0]  # type: ignore[return-value]

    def feed(self, run_id: str) -> RunFeed:
        if run_id not in self.feeds:
            self.feeds[run_id] = RunFeed(run_id)
        return self.feeds[run_id]

    def display_snapshot(self) -> Snapshot:
        """The store's snapshot with what the event streams know that it does not yet."""
        keys = {r.key for r in self.snapshot.rows}
        rows = [r.with_live(self._live(r)) for r in self.snapshot.rows]
        rows += [r.with_live(self._live(r)) for k, r in self.pending.items() if k not in keys]
        return replace(self.snapshot, rows=tuple(rows))

    def _live(self, row: Row) -> Any:
        if row.run_id and row.run_id in self.feeds and row.run_id in self.following:
            return self.feeds[row.run_id].live()
        return None

    def row_for_run(self, run_id: str) -> Row | None:
        key = f"run:{run_id}"
        row = self.snapshot.row(key) or self.pending.get(key)
        return None if row is None else row.with_live(self._live(row))

    def on_mount(self) -> None:
        if not self.live:
            return
        # Workers parse listings and JSON while the user types: hand the GIL back to the
        # UI thread within 1 ms instead of Python's default 5 ms, so a keypress never
        # queues behind a background refresh for long.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.set_interval(self.refresh_seconds, self._interval_refresh, name="refresh")
        self.set_interval(self.reload_seconds, self._interval_reload, name="reload")
        if not self.is_headless and os.isatty(sys.__stdin__.fileno()):
            threading.Thread(
                target=self._watch_terminal,
                args=(sys.__stdin__.fileno(), asyncio.get_running_loop()),
                name="gpuctl-terminal",
                daemon=True,
            ).start()
        self.refresh_now(network=True)
        for run in self.engine.store.list_runs(active=True):
            if run.provider in self.engine.settings.providers:
                self.follow_run(run.id)

    def _watch_terminal(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        """Quit when the terminal is gone (SSH dropped, tmux killed) instead of spinning.

        A hung-up terminal sends no input, so the app would otherwise sit there burning a
        core for ever; the runs keep going on their machines either way. A thread, not a
        timer: it must work even when the event loop is the thing that is stuck.
        """
        while True:
            time.sleep(TERMINAL_CHECK_SECONDS)
            try:
                os.tcgetpgrp(fd)
            except OSError:
                break
        log.info("terminal hung up; quitting")
        try:
            loop.call_soon_threadsafe(lambda: self.exit(return_code=0))
        except RuntimeError:  # the loop already closed: the app is on its way out
            pass
        _end_process_after(TERMINAL_HARD_EXIT_SECONDS)

    def _interval_refresh(self) -> None:
        self.refresh_now(network=True)

    def _interval_reload(self) -> None:
        if not self.refreshing:
            self.refresh_now(network=False)

    # -- workers ---------------------------------------------------------------------------------

    def refresh_now(self, *, network: bool, announce: bool = False) -> None:
        """Re-list providers (network) or re-read the store; never on the UI thread."""
        if network:
            if self.refreshing:
                if announce:
                    self.notify("a refresh is already running")
                return
            self.refreshing = True
            self.main.refreshing = True
        self._refresh_worker(network, frozenset(self.following))

    @work(thread=True, group="refresh", exit_on_error=False)
    def _refresh_worker(self, network: bool, followed: frozenset[str] = frozenset()) -> None:
        try:
            if network:
                # Every machine on the account, not only gpuctl's: forgotten ones cost too
                # (they show as "ext"; terminating one asks for its name).
                self.engine.refresh(include_unmanaged=True)
                # Runs nobody here follows: their state as their machines say it now.
                names = self.engine.settings.providers
                runstate.sync_runs(
                    self.engine,
                    [
                        r
                        for r in self.engine.store.list_runs(active=True)
                        if r.id not in followed and r.provider in names
                    ],
                )
            self.engine.settle_ended_billing()  # a finished local run stops billing at once
            snapshot = build_snapshot(self.engine.store, self.engine.settings, self.now())
            fresh = self.engine.store.notifications(after=self.notices_seen)
            if fresh:
                self.notices_seen = max(r["at"] for r in fresh)
                self.post_message(NotificationsSent(fresh))
        except GpuctlError as exc:
            self.post_message(ActionFailed("refresh failed", exc.message, exc.hint))
            snapshot = None
        except Exception as exc:
            log.exception("refresh failed")
            self.post_message(
                ActionFailed("refresh failed", f"{type(exc).__name__}: {exc}", self._log_hint())
            )
            snapshot = None
        if snapshot is not None:
            self.post_message(SnapshotReady(snapshot, network=network))
        elif network:
            self.post_message(SnapshotReady(self.snapshot, network=True))

    @work(thread=True, group="runs", exit_on_error=False)
    def drive(
        self, run_id: str, what: str, make: Callable[[], Iterator[Event]], quiet: bool = False
    ) -> None:
        """Consume one lifecycle generator, posting each event; errors become messages."""
        worker = get_current_worker()
        changes = what != "follow"
        with self._busy_lock:
            self.threads += 1
            self.busy += changes
        gen: Iterator[Event] | None = None
        try:
            gen = make()
            for event in gen:
                self.post_message(RunEvent(event, quiet=quiet))
                if worker.is_cancelled:
                    break
        except GpuctlError as exc:
            if not quiet:
                self.post_message(ActionFailed(f"{what} failed", exc.message, exc.hint, run_id))
        except Exception as exc:
            log.exception("%s of %s failed", what, run_id)
            self.post_message(
                ActionFailed(
                    f"{what} failed",
                    f"internal error: {type(exc).__name__}: {exc}",
                    self._log_hint(),
                    run_id,
                )
            )
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing %s of %s", what, run_id)
            with self._busy_lock:
                self.threads -= 1
                self.busy -= changes
            self.post_message(DriveEnded(run_id, what))

    @work(thread=True, group="history", exit_on_error=False)
    def _load_history(self, run_id: str) -> None:
        """Log lines and epochs from before we followed: results dir, else the machine."""
        lines, epochs = history(self.engine, run_id)
        self.post_message(HistoryLoaded(run_id, lines, epochs))

    def _log_hint(self) -> str:
        return f"details in {self.engine.settings.home / 'gpuctl.log'}"

    # -- messages up -------------------------------------------------------------------------------

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            self._last_key = time.monotonic()
        await super().on_event(event)

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        """Apply a new snapshot, but not mid-typing: a burst of keys goes first (up to a
        second), so a background refresh never makes the cursor stutter."""
        if self._pending_snapshot is not None and self._pending_snapshot.network:
            self._pending_network = True  # a newer local reload must not hide a listing
        self._pending_snapshot = message
        if self._snapshot_timer is not None:
            return
        wait = TYPING_PAUSE - (time.monotonic() - self._last_key)
        if wait <= 0:
            self._apply_pending_snapshot()
        else:
            self._snapshot_deadline = time.monotonic() + MAX_DEFER
            self._snapshot_timer = self.set_timer(wait, self._apply_when_idle)

    def _apply_when_idle(self) -> None:
        self._snapshot_timer = None
        wait = TYPING_PAUSE - (time.monotonic() - self._last_key)
        if wait > 0 and time.monotonic() + wait < self._snapshot_deadline:
            self._snapshot_timer = self.set_timer(wait, self._apply_when_idle)
            return
        self._apply_pending_snapshot()

    def _apply_pending_snapshot(self) -> None:
        message, self._pending_snapshot = self._pending_snapshot, None
        if self._snapshot_timer is not None:
            self._snapshot_timer.stop()
            self._snapshot_timer = None
        if message is None or not self.screen_stack:
            return  # the app is closing: a refresh that finished late has nowhere to go
        self.snapshot = message.snapshot
        for key in [k for k in self.pending if message.snapshot.row(k) is not None]:
            del self.pending[key]
        network = message.network or self._pending_network
        self._pending_network = False
        if network:
            self.refreshing = False
            self.listed_at = self.now()
            self.main.refreshing = False
            self._announce_provider_problems(message.snapshot)
        self.main.snapshot = self.display_snapshot()
        for screen in self.screen_stack:  # an open run's header, meters and cost too
            if isinstance(screen, RunView):
                screen.apply({"phase"})
        for run_id in message.snapshot.active_runs:  # started elsewhere since: follow it
            if run_id not in self.following:
                self.follow_run(run_id)

    def _announce_provider_problems(self, snapshot: Snapshot) -> None:
        for chip in snapshot.chips:
            if chip.state in ("nocreds", "error"):
                if chip.name not in self._known_bad:
                    self._known_bad.add(chip.name)
                    self.notify(
                        chip.message or chip.label,
                        title=f"{chip.name}: {chip.label.split(': ', 1)[1]}",
                        severity="warning" if chip.state == "nocreds" else "error",
                        timeout=8,
                    )
            else:
                self._known_bad.discard(chip.name)

    def on_run_event(self, message: RunEvent) -> None:
        if not self.screen_stack:
            return  # the app is closing: a run's last events have nowhere to go
        ev = message.event
        feed = self.feed(ev.run_id)
        if message.quiet and isinstance(ev, Failed):
            feed.add_lines([f"── not following: {ev.error}"])
            changed = {"log"}
        else:
            changed = feed.apply(ev)
        if not message.quiet:
            self._notify_event(ev)
        if "phase" in changed or "epoch" in changed:
            row = self.row_for_run(ev.run_id)
            if row is not None:
                self.main.update_row(row)
        if isinstance(ev, STRUCTURAL):
            self._schedule_reload()
        for screen in self.screen_stack:
            if isinstance(screen, RunView) and screen.run_id == ev.run_id:
                screen.apply(changed)

    def _notify_event(self, ev: Event) -> None:
        if isinstance(ev, Failed):
            self.notify(
                ev.error + (f"\nhint: {ev.hint}" if ev.hint else ""),
                title=f"{ev.run_id}: failed",
                severity="error",
                timeout=12,
            )
        elif isinstance(ev, Notice):
            severity = {"warning": "warning", "error": "error"}.get(ev.level, "information")
            self.notify(ev.message, title=ev.run_id, severity=severity)  # type: ignore[arg-type]
        elif isinstance(ev, Finished):
            self.notify(ev.text(), title=f"run {ev.status}")
        elif isinstance(ev, Downloaded):
            self.notify(ev.text(), title=ev.run_id)

    def on_action_failed(self, message: ActionFailed) -> None:
        self.notify(
            message.message + (f"\nhint: {message.hint}" if message.hint else ""),
            title=message.title,
            severity="error",
            timeout=12,
        )
        if message.run_id:
            self.feed(message.run_id).add_lines([f"── {message.title}: {message.message}"])

    def on_drive_ended(self, message: DriveEnded) -> None:
        if not self.screen_stack:
            return  # the app is closing
        if message.what in ("launch", "resume", "follow"):
            self.following.discard(message.run_id)
        if message.what in ("launch", "resume"):
            self.driven.discard(message.run_id)
        key = f"run:{message.run_id}"
        if key in self.pending and self.engine.store.find_run(message.run_id) is None:
            del self.pending[key]  # refused before anything was recorded (a budget guard)
            self.main.snapshot = self.display_snapshot()
        self._schedule_reload()

    def on_history_loaded(self, message: HistoryLoaded) -> None:
        feed = self.feed(message.run_id)
        had = len(feed.lines)
        feed.load_history(message.lines, message.epochs)
        for screen in self.screen_stack:
            if isinstance(screen, RunScreen) and screen.run_id == message.run_id:
                if not had and feed.lines:
                    screen.log_view.replace(list(feed.lines))
                    screen._seen = feed.dropped + len(feed.lines)
                screen.apply({"epoch", "cost", "phase"})

    def _schedule_reload(self) -> None:
        """Re-read the store soon (debounced: a burst of events is one reload)."""
        if self._reload_scheduled:
            return
        self._reload_scheduled = True

        def go() -> None:
            self._reload_scheduled = False
            self.refresh_now(network=False)

        self.set_timer(0.3, go)

    # -- what the screens ask for: their messages, each with its row ----------------------------

    def on_main_screen_open_run(self, message: MainScreen.OpenRun) -> None:
        self.open_run(message.row)

    def on_main_screen_open_gpu(self, message: MainScreen.OpenGpu) -> None:
        self.open_gpu(message.row)

    def on_main_screen_open_launch(self, _message: MainScreen.OpenLaunch) -> None:
        self.open_launch()

    def on_main_screen_open_cost(self, _message: MainScreen.OpenCost) -> None:
        self.open_cost()

    def on_main_screen_open_notifications(self, _message: MainScreen.OpenNotifications) -> None:
        self.push_screen(NotificationsScreen())

    def on_notifications_sent(self, message: NotificationsSent) -> None:
        """Each notification as a toast (whoever sent it: this app, the CLI, an agent)."""
        for row in sorted(message.rows, key=lambda r: r["at"]):
            bad = row["event"] in URGENT
            self.notify(
                row["message"],
                title=f"notified: {row['event'].replace('_', ' ')}",
                severity="warning" if bad else "information",
                timeout=10,
            )
        for screen in self.screen_stack:
            if isinstance(screen, NotificationsScreen):
                screen.action_reload()

    def on_main_screen_refresh(self, _message: MainScreen.Refresh) -> None:
        self.refresh_now(network=True, announce=True)

    def on_run_view_watch(self, message: RunView.Watch) -> None:
        self.watch_run(message.run_id)

    def on_row_actions_stop(self, message: RowActions.Stop) -> None:
        self.confirm_stop(message.row)

    def on_row_actions_terminate(self, message: RowActions.Terminate) -> None:
        self.confirm_terminate(message.row)

    def on_row_actions_resume(self, message: RowActions.Resume) -> None:
        self.resume(message.row)

    def on_row_actions_download(self, message: RowActions.Download) -> None:
        self.download(message.row)

    def on_row_actions_shell(self, message: RowActions.Shell) -> None:
        self.shell(message.row)

    # -- actions (the handlers above call these with their target row) ---------------------------

    def _need_run(self, row: Row | None, what: str) -> str | None:
        if row is None:
            self.notify("nothing selected", severity="warning")
            return None
        if not row.run_id:
            self.notify(
                f"{row.name} is a machine without a gpuctl run: nothing to {what}",
                title="no run on this row",
                severity="warning",
            )
            return None
        return row.run_id

    def _live_instance(self, row: Row) -> Instance | None:
        """The row's machine as the store has it now (a row drawn a moment ago may predate
        its instance: a launch that just came up)."""
        store = self.engine.store
        inst = None
        if row.run_id:
            run = store.find_run(row.run_id)
            if run is not None and run.instance_id:
                inst = store.get_instance(run.provider, run.instance_id)
        if inst is None and row.instance_id:
            inst = store.get_instance(row.provider, row.instance_id)
        if inst is None or inst.state == InstanceState.TERMINATED:
            return None
        return inst

    def open_launch(self) -> None:
        self.push_screen(LaunchScreen(), self._launch_confirmed)

    def _launch_confirmed(self, spec: LaunchSpec | None) -> None:
        if spec is not None:
            self.launch(spec)

    def launch(self, spec: LaunchSpec) -> None:
        """Show the run at once (provisioning), then let its events move it along."""
        row = Row(
            key=f"run:{spec.run_id}",
            provider=spec.provider,
            region=spec.region or "",
            name=spec.run_id,
            instance_type=spec.instance_type or "",
            gpus="-",
            state="provisioning",
            tone="busy",
            started_at=None,
            price_per_hour=None,
            ledger_cost=None,
            preset=spec.preset,
            epoch=0,
            epochs=int(spec.train.get("epochs", 0) or 0),
            eta_seconds=None,
            run_id=spec.run_id,
        )
        self.pending[row.key] = row
        feed = self.feed(spec.run_id)
        feed.phase = "provisioning"
        self.following.add(spec.run_id)
        self.driven.add(spec.run_id)
        self.main.snapshot = self.display_snapshot()
        self.main.table.select_key(row.key)
        self.notify(f"{spec.preset} on {spec.provider}", title=f"launching {spec.run_id}")
        self.drive(spec.run_id, "launch", lambda: self.engine.run(spec))

    def follow_run(self, run_id: str) -> None:
        """Consume a run's event stream if nobody here does yet (runs started elsewhere)."""
        if not self.live or run_id in self.following:
            return
        run = self.engine.store.find_run(run_id)
        if run is None or run.status.terminal or not run.remote_dir:
            return
        self.following.add(run_id)
        self.drive(run_id, "follow", lambda: self.engine.follow(run_id, tail_lines=200), quiet=True)

    def watch_run(self, run_id: str) -> None:
        """A run screen opened: follow it live and backfill its history once."""
        self.follow_run(run_id)
        feed = self.feed(run_id)
        if self.live and not feed.history_loaded:
            feed.history_loaded = True
            self._load_history(run_id)

    def open_run(self, row: Row | None) -> None:
        run_id = self._need_run(row, "open")
        if run_id:
            self.push_screen(RunScreen(run_id))

    def open_gpu(self, row: Row | None) -> None:
        run_id = self._need_run(row, "show GPUs for")
        if run_id:
            self.push_screen(GpuScreen(run_id))

    def open_cost(self) -> None:
        self.push_screen(CostScreen())

    def confirm_stop(self, row: Row | None) -> None:
        run_id = self._need_run(row, "stop")
        if not run_id:
            return
        run = self.engine.store.find_run(run_id)
        if run is None or (run.status.terminal and run_id not in self.following):
            status = run.status.value if run else "unknown"
            self.notify(f"run {run_id} is {status}", title="nothing to stop", severity="warning")
            return
        teardown = run.launch_spec.teardown
        if run_id in self.driven and teardown != "keep":
            done = "terminated" if teardown == "terminate" else "stopped"
            after = (
                "This run was started here and is followed to its end: its results are "
                f"downloaded, then the machine is {done} (teardown '{teardown}', chosen at "
                "launch)."
            )
        else:
            after = "The machine stays up: d downloads results, r resumes, x terminates."
        body = f"Stop training of {run_id}?\n\n{stop_effect(run.spec)} {after}"

        def done(ok: bool | None) -> None:
            if ok:
                self.drive(run_id, "stop", lambda: self.engine.stop(run_id))

        self.push_screen(ConfirmScreen("Stop run", body, action="Stop (y)", danger=False), done)

    def confirm_terminate(self, row: Row | None) -> None:
        if row is None:
            self.notify("nothing selected", severity="warning")
            return
        inst = self._live_instance(row)
        if inst is None:
            self.notify(
                f"{row.name} has no live machine", title="nothing to terminate", severity="warning"
            )
            return
        price = "" if inst.price_per_hour is None else f" at {rate(inst.price_per_hour)}"
        where = f"{inst.id} ({inst.instance_type}, {inst.provider} {inst.region}){price}"
        run = self.engine.store.find_run(row.run_id) if row.run_id else None
        alternative = None
        discard = False
        if run is not None and results_pending(self.engine.store, run, inst):
            saved = (
                "\n\nThe results of run "
                f"{run.id} were never downloaded: they are downloaded to "
                f"{self.engine.settings.results_dir / run.id} first, and if that fails the "
                "machine is not terminated. Discard terminates it without them: they are "
                "lost."
            )
            alternative, discard = "Discard results", True
        else:
            saved = "\n\nBilling ends; anything not downloaded is lost" + (
                f" (d downloads run {row.run_id} first)." if row.run_id else "."
            )
        rule = self.engine.end_rule(inst, run)  # the same rule as `gpuctl down`
        require = rule.typed
        if rule.release and run is not None:
            # Not gpuctl's to end: release it (like `gpuctl down RUN`), or type its name.
            body = (
                f"{where} {rule.why}.\n\nRelease stops the trainer and lets go of the "
                "machine: it keeps running. To terminate the machine and its disks as well, "
                "type its name."
            )
            alternative, discard = "Release", False
        elif require is None:
            body = f"Terminate {where}?" + saved
        else:
            body = f"{where} {rule.why}. Terminating it destroys the machine and its disks."
            alternative = None
        typed = require is not None

        def done(ok: bool | None) -> None:
            if screen.chose_alternative and row.run_id:
                run_id = row.run_id
                if discard:  # the user's explicit choice: terminate, results lost
                    self.drive(
                        run_id,
                        "terminate",
                        lambda: self.engine.down(run_id, discard_results=True, confirmed=typed),
                    )
                else:
                    self.drive(run_id, "release", lambda: self.engine.down(run_id))
                return
            if not ok:
                return
            if row.run_id:
                run_id = row.run_id
                self.drive(run_id, "terminate", lambda: self.engine.down(run_id, confirmed=typed))
            else:
                self.drive(
                    f"{inst.provider}/{inst.id}",
                    "terminate",
                    lambda: self.engine.teardown(None, inst, "terminate", confirmed=typed),
                )

        action = "Terminate" if require else "Terminate (y)"
        screen = ConfirmScreen(
            "Terminate instance", body, action=action, require=require, alternative=alternative
        )
        self.push_screen(screen, done)

    def resume(self, row: Row | None) -> None:
        run_id = self._need_run(row, "resume")
        if not run_id:
            return
        run = self.engine.store.find_run(run_id)
        if run is not None and run.status.active:
            self.notify(f"run {run_id} is {run.status.value}", title="already going")
            return
        if run_id in self.following:
            self.notify(
                f"run {run_id} is {run.status.value if run else 'ending'}: its results are "
                "still being collected; resume when that is done",
                title="not yet",
                severity="warning",
            )
            return
        self.following.add(run_id)
        self.driven.add(run_id)
        self.feed(run_id).final = None
        self.notify(f"resuming {run_id} from its last checkpoint")
        self.drive(run_id, "resume", lambda: self.engine.resume(run_id))

    def download(self, row: Row | None) -> None:
        run_id = self._need_run(row, "download")
        if run_id:
            self.notify(f"downloading results of {run_id}…")
            self.drive(run_id, "download", lambda: self.engine.download(run_id))

    def shell(self, row: Row | None) -> None:
        """Suspend the app, open a shell on the machine in the run's dir, come back after."""
        inst = self._live_instance(row) if row is not None else None
        if row is None or inst is None:
            self.notify("select a row with a live machine", title="no shell", severity="warning")
            return
        run = self.engine.store.find_run(row.run_id) if row.run_id else None
        try:
            host = self.engine.provider(inst.provider).host(inst)
            cwd = run.remote_dir if run and run.remote_dir else host.base_dir()
            if isinstance(cwd, str) and inst.provider == "local" and not Path(cwd).is_dir():
                cwd = host.base_dir()
            with self.suspend():
                code = self.shell_runner(host, cwd)
        except SuspendNotSupported:
            hint = f"gpuctl ssh {row.run_id}" if row.run_id else "ssh to it from a terminal"
            self.notify(
                f"a shell needs a real terminal\nhint: {hint}", title="no shell", severity="warning"
            )
            return
        except GpuctlError as exc:
            self.notify(
                exc.message + (f"\nhint: {exc.hint}" if exc.hint else ""),
                title="shell failed",
                severity="error",
            )
            return
        except OSError as exc:
            self.notify(str(exc), title="shell failed", severity="error")
            return
        self.notify(f"shell exited ({code})", title=inst.id)

    async def action_quit(self) -> None:
        """Quit; runs keep going on their machines. Mid-launch (or mid-stop) it asks."""
        if not self.busy:
            self.exit()
            return
        body = (
            f"{self.busy} action{'s are' if self.busy != 1 else ' is'} still in progress "
            "(a launch, stop, terminate or download). Quitting abandons it where it is: a "
            "machine already created keeps its gpuctl tag and its max-hours shutdown, and "
            "`gpuctl ls` / `gpuctl down` find it.\n\nRuns already training keep going."
        )

        def done(ok: bool | None) -> None:
            if ok:
                self.exit()

        self.push_screen(ConfirmScreen("Quit now?", body, action="Quit (y)"), done)

    # -- app-level keys and the palette ------------------------------------------------------------

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen, list(self.BINDINGS)))  # type: ignore[arg-type]

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Every key of the current screen, by name, plus Textual's own commands."""
        for binding in screen.BINDINGS:
            if not isinstance(binding, Binding) or not binding.description:
                continue
            key = binding.key_display or binding.key

            def call(action: str = binding.action, target: Screen[Any] = screen) -> Any:
                return target.run_action(action)

            yield SystemCommand(binding.description, f"key: {key}", call)
        yield SystemCommand("Help", "key: ? — every key on this screen", self.action_help)
        yield from super().get_system_commands(screen)


# -- history (worker side) -----------------------------------------------------------------------


def history(engine: Engine, run_id: str) -> tuple[list[str] | None, list[dict[str, Any]]]:
    """The log's tail and the epoch events of a run, read in `gpuctl logs`'s order
    (gpuctl.views.log_history): an ended run's saved results first, else its machine.
    A run still going gets its log lines from the follow stream, not from here."""
    import json

    from gpuctl.rundir import RunDir
    from gpuctl.tail import Tail
    from gpuctl.trainer.protocol import EVENTS_FILE, TrainerEvent
    from gpuctl.views import log_history, saved_results

    run = engine.store.find_run(run_id)
    if run is None:
        return None, []
    lines: list[str] | None = None
    epochs: list[dict[str, Any]] = []
    results = saved_results(engine.store, run)
    if results is not None:
        lines = list(log_history(engine, run, HISTORY_LINES).lines)
        events = results / EVENTS_FILE
        if events.exists():
            for line in events.read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict) and ev.get("event") == TrainerEvent.EPOCH_END:
                    epochs.append(ev)
        return lines, epochs
    if not run.remote_dir:
        return None, []
    try:
        if run.status.terminal:
            lines = list(log_history(engine, run, HISTORY_LINES).lines)
        _instance, host = engine.locate(run)
        rd = RunDir(host, run.id, run.remote_dir)
        epochs = [
            e
            for e in Tail(host, rd.p(EVENTS_FILE)).poll_json()
            if e.get("event") == TrainerEvent.EPOCH_END
        ]
    except GpuctlError as exc:
        return [f"── history unavailable: {exc.one_line()}"], []
    return lines, epochs


# -- entry points ---------------------------------------------------------------------------------


def create_app(
    engine: Engine | None = None,
    *,
    clock: Callable[[], float] | None = None,
    live: bool = True,
    refresh_seconds: float | None = None,
    reload_seconds: float = RELOAD_SECONDS,
    shell_runner: ShellRunner = _run_shell,
) -> GpuctlApp:
    """The app with its engine; tests pass a frozen clock and live=False for fixed frames."""
    return GpuctlApp(
        engine or Engine(),
        clock=clock,
        live=live,
        refresh_seconds=refresh_seconds,
        reload_seconds=reload_seconds,
        shell_runner=shell_runner,
    )


class _Executor(ThreadPoolExecutor):
    """Worker threads for the app; shutting down never waits on a blocked cloud call."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=False, cancel_futures=True)


def run_app() -> None:
    """`gpuctl` with no arguments. Quitting leaves every run going on its machine."""
    from gpuctl.console import setup_logging

    setup_logging()
    app = create_app()
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_Executor(max_workers=64, thread_name_prefix="gpuctl-tui"))
    app.run(loop=loop)
    deadline = time.monotonic() + 2.0
    while app.busy and time.monotonic() < deadline:  # a confirmed quit mid-action
        time.sleep(0.05)
    if app.threads:
        # Workers sit in blocking calls (a log tail, a cloud API, an SSH wait): nothing to
        # wait for, the runs live on their machines and the agent's limits guard them.
        print("gpuctl: runs keep going on their machines (`gpuctl ls`).", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(app.return_code or 0)
    loop.close()
