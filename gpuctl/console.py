"""Terminal output shared by the headless commands: one line per error, no tracebacks."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from .errors import GpuctlError


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 offer', '2 offers', '0 offers': the count and its word, agreeing."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


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
            try:
                return fn(*args, **kwargs)
            except GpuctlError as exc:
                fail(exc, bool(kwargs.get("as_json")))
            except KeyboardInterrupt:
                on_interrupt(kwargs)

        return wrapper

    return decorate
