"""The engine each command runs on, remembered so Ctrl-C can say what it cut short.

Apart from cli.py so the command groups registered on it (cost_cli) get an engine
without importing the module that imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .console import setup_logging

if TYPE_CHECKING:
    from .lifecycle import Engine

_ENGINES: list[Engine] = []  # this process's engines: what a Ctrl-C cut short is theirs to say


def engine() -> Engine:
    """A new engine, with logging set up first (the lifecycle is imported only here, so
    `gpuctl --help` does not pay for it)."""
    from .lifecycle import Engine

    setup_logging()
    eng = Engine()
    _ENGINES.append(eng)
    return eng


def cut_short() -> list[tuple[str, str]]:
    """(run id, what was undone) for every launch this process's engines cut short."""
    return [item for eng in _ENGINES for item in eng.cut_short]


def attached_here() -> bool:
    """Whether this process launched or followed a run ("runs keep going" is about it)."""
    return any(eng.attached for eng in _ENGINES)
