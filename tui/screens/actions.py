"""The keys that act on one row (a run or an instance), shared by the screens that show one.

Each key posts a message naming the action and its row; the app handles it (asks first
where something is lost, then runs a worker). A screen knows no method of the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from ..model import Row
    from ..ports import ControlCenter


class RowActions:
    """Mixed into a Screen: its row keys become messages to the app."""

    app: Any
    post_message: Callable[[Message], bool]  # the Screen's

    @dataclass
    class Stop(Message):
        """Stop the row's run (the app asks first)."""

        row: Row | None

    @dataclass
    class Terminate(Message):
        """Terminate the row's machine (the app asks first, by the one end rule)."""

        row: Row | None

    @dataclass
    class Resume(Message):
        """Resume the row's run from its last checkpoint."""

        row: Row | None

    @dataclass
    class Download(Message):
        """Download the row's run's results."""

        row: Row | None

    @dataclass
    class Shell(Message):
        """Open a shell on the row's machine."""

        row: Row | None

    @property
    def gpuctl(self) -> ControlCenter:
        """What the screen reads of the app: its engine, clock and views."""
        return self.app  # type: ignore[no-any-return]

    def target(self) -> Row | None:
        raise NotImplementedError

    def action_stop(self) -> None:
        self.post_message(self.Stop(self.target()))

    def action_terminate(self) -> None:
        self.post_message(self.Terminate(self.target()))

    def action_resume(self) -> None:
        self.post_message(self.Resume(self.target()))

    def action_download(self) -> None:
        self.post_message(self.Download(self.target()))

    def action_shell(self) -> None:
        self.post_message(self.Shell(self.target()))
