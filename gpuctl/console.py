"""Terminal output shared by the headless commands: one line per error, no tracebacks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

from .errors import EXIT_INTERRUPTED, ConfigError, GpuctlError, from_os_error
from .numbers import finite_number


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 offer', '2 offers', '0 offers': the count and its word, agreeing."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


log = logging.getLogger("gpuctl")


class _LogFile(logging.FileHandler):
    """gpuctl.log on a disk that fills up or goes away loses the details, never the
    command: no "--- Logging error ---" traceback on the terminal, no error on close."""

    def handleError(self, record: logging.LogRecord) -> None:
        return None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            super().close()


def setup_logging() -> None:
    """Internal details go to <data dir>/gpuctl.log, never to the terminal.

    Called by every command before it does anything, so an error raised before the
    engine exists (a bad config file, an unusable state directory) is logged too; a data
    directory that cannot hold the log loses the details, never the command.
    """
    from .private import PRIVATE_UMASK, private_dir, private_file
    from .settings import home_dirs

    if log.handlers:
        return
    handler: logging.Handler
    try:
        data_dir, _ = home_dirs()
        # Everything gpuctl (and a local run's agent and trainer) writes is the user's only.
        os.umask(PRIVATE_UMASK)
        private_dir(data_dir)
        handler = _LogFile(private_file(data_dir / "gpuctl.log"))
    except (OSError, GpuctlError):
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def log_path() -> str:
    """Where the details are, for a hint (the data directory's gpuctl.log)."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return "gpuctl.log in the data directory"


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


EXIT_BROKEN_PIPE = 128 + 13  # as a shell reports a command ended by SIGPIPE


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
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
            setup_logging()
            as_json = bool(kwargs.get("as_json"))
            with interrupts_as_ctrl_c():
                try:
                    return fn(*args, **kwargs)
                except GpuctlError as exc:
                    # The user sees one line; the log keeps where it came from.
                    log.info("%s: %s", fn.__name__, exc.one_line(), exc_info=True)
                    fail(exc, as_json)
                except KeyboardInterrupt as exc:
                    try:
                        on_interrupt(kwargs)
                    except SystemExit as done:
                        if done.code == EXIT_INTERRUPTED:  # say which signal ended it
                            raise SystemExit(interrupt_exit_code(exc)) from None
                        raise
                except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
                    raise  # click's own usage errors and prompts: click prints them
                except BrokenPipeError:  # the reader left (`gpuctl launch ... | head -1`)
                    _quiet_stdout()  # what was done stays done; nothing more to say
                    raise SystemExit(EXIT_BROKEN_PIPE) from None
                except OSError as exc:  # a read-only, full or blocked path on this machine
                    log.info("%s: %s", fn.__name__, exc, exc_info=True)
                    fail(from_os_error(exc), as_json)
                except Exception as exc:  # a bug: still one line; the traceback goes to log
                    log.exception("%s failed", fn.__name__)
                    fail(
                        GpuctlError(
                            f"internal error: {type(exc).__name__}: {exc}",
                            hint=f"details in {log_path()}",
                        ),
                        as_json,
                    )

        return wrapper

    return decorate


class Number(click.ParamType):
    """A float flag that refuses NaN and infinities (click's float accepts both) and
    values outside its bounds, with the same words as config.toml's checks."""

    name = "number"

    def __init__(self, *, above: float | None = None, at_least: float | None = None) -> None:
        self.above = above
        self.at_least = at_least

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        what = param.opts[0] if param is not None and param.opts else "value"
        try:
            return finite_number(value, what, above=self.above, at_least=self.at_least)
        except ConfigError as exc:
            raise BadNumber(exc.message, ctx=ctx, param=param) from None


class BadNumber(click.BadParameter):
    """A refused number flag, printed like every other gpuctl error (one line, exit 2)."""

    def show(self, file: Any = None) -> None:
        echo(f"error: {self.message}", err=True)
        if self.ctx is not None:
            echo(f"hint: see `{self.ctx.command_path} --help`", err=True)
