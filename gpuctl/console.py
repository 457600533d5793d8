"""Terminal output shared by the headless commands: one line per error, no tracebacks."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .errors import GpuctlError

log = logging.getLogger("gpuctl")


def setup_logging() -> None:
    """Internal details go to <data dir>/gpuctl.log, never to the terminal.

    Called by every command before it does anything, so an error raised before the
    engine exists (a bad config file, an unusable state directory) is logged too; a data
    directory that cannot hold the log loses the details, never the command.
    """
    from .settings import home_dirs

    if log.handlers:
        return
    handler: logging.Handler
    try:
        data_dir, _ = home_dirs()
        data_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(data_dir / "gpuctl.log")
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


def echo(text: str, *, err: bool = False) -> None:
    """Print, surviving a reader that went away (`gpuctl run ... | head`).

    A launch or a teardown must not die half way because nobody reads its output any
    more: that would leave a machine billing. Later output goes to /dev/null instead.
    """
    try:
        click.echo(text, err=err)
    except BrokenPipeError:
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


def guarded(
    on_interrupt: Callable[[dict[str, Any]], None],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A command decorator: GpuctlError -> one line (or JSON) and its exit code; Ctrl-C ->
    `on_interrupt(command kwargs)`. Never a traceback."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            setup_logging()
            try:
                return fn(*args, **kwargs)
            except GpuctlError as exc:
                # The user sees one line; the log keeps where it came from.
                log.info("%s: %s", fn.__name__, exc.one_line(), exc_info=True)
                fail(exc, bool(kwargs.get("as_json")))
            except KeyboardInterrupt:
                on_interrupt(kwargs)
            except Exception as exc:  # a bug: the traceback goes to the log, not the screen
                log.exception("%s failed", fn.__name__)
                fail(
                    GpuctlError(
                        f"internal error: {type(exc).__name__}: {exc}",
                        hint=f"details in {log_path()}",
                    ),
                    bool(kwargs.get("as_json")),
                )

        return wrapper

    return decorate
