"""Terminal output shared by the headless commands: one line per error, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

from .errors import EXIT_INTERRUPTED, GpuctlError

# What a script's `timeout`, a CI runner or a closed terminal sends. Each is handled like
# Ctrl-C: a launch cut short is undone instead of leaving its machine billing.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C would be so the same clean-up runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def echo(text: str, *, err: bool = False) -> None:
    """Print, surviving a reader that went away (`gpuctl run ... | head`).

    A launch or a teardown must not die half way because nobody reads its output any
    more: that would leave a machine billing. Later output goes to /dev/null instead.
    """
    try:
        click.echo(text, err=err)
    except OSError:  # a broken pipe, or a terminal that hung up (EIO)
        stream = sys.stderr if err else sys.stdout
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


def fail(exc: GpuctlError, as_json: bool) -> None:
    if as_json:
        echo(
            json.dumps(
                {
                    "event": "error",
                    "error": exc.message,
                    "hint": exc.hint,
                    "exit_code": exc.exit_code,
                }
            )
        )
    else:
        echo(f"error: {exc.message}", err=True)
        if exc.hint:
            echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


@contextmanager
def interrupts_as_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP raise like Ctrl-C; once one interrupt landed, further ones wait.

    The first SIGINT, SIGTERM or SIGHUP unwinds the command (a launch cut short terminates
    what it created on the way out). A second one during that clean-up is ignored, with a
    line saying so, so an impatient Ctrl-C cannot leave a machine billing; a third quits
    at once. A signal someone chose to ignore (`nohup`) stays ignored. Main thread only;
    the previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    landed = [0]

    def handler(signum: int, _frame: Any) -> None:
        landed[0] += 1
        if landed[0] == 1:
            raise Terminated(signum) if signum != signal.SIGINT else KeyboardInterrupt()
        if landed[0] == 2:
            with _suppress_os_errors():
                os.write(2, b"\nstill undoing the interrupted launch; once more quits now\n")
            return
        raise SystemExit(128 + signum)

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, *STOP_SIGNALS):
        try:
            old = signal.getsignal(sig)
            if old is signal.SIG_IGN:
                continue
            previous[sig] = signal.signal(sig, handler)
        except (OSError, ValueError):
            continue
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _suppress_os_errors() -> Iterator[None]:
    try:
        yield
    except OSError:
        pass


def interrupt_exit_code(exc: KeyboardInterrupt) -> int:
    """130 for Ctrl-C; 128 + the signal number for SIGTERM (143) and SIGHUP (129)."""
    return 128 + exc.signum if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def guarded(
    on_interrupt: Callable[[dict[str, Any]], None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command decorator: GpuctlError -> one line (or JSON) and its exit code; Ctrl-C,
    SIGTERM or SIGHUP -> `on_interrupt(command kwargs)`. Never a traceback."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with interrupts_as_ctrl_c():
                try:
                    return fn(*args, **kwargs)
                except GpuctlError as exc:
                    fail(exc, bool(kwargs.get("as_json")))
                except KeyboardInterrupt as exc:
                    try:
                        on_interrupt(kwargs)
                    except SystemExit as done:
                        if done.code == EXIT_INTERRUPTED:  # say which signal ended it
                            raise SystemExit(interrupt_exit_code(exc)) from None
                        raise

        return wrapper

    return decorate
