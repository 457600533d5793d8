"""What the screens read of the app: its engine, its clock and its views.

A protocol, so the screens do not import the app that imports them; GpuctlApp is the one
implementation. A screen reaches it as `self.gpuctl` (its `self.app`, typed as this).
Actions are not here: a screen posts a message (MainScreen.OpenRun, RowActions.Stop, ...)
and the app handles it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gpuctl.lifecycle import Engine

    from .feed import RunFeed
    from .model import Row, Snapshot


class ControlCenter(Protocol):
    engine: Engine
    offers_cache: dict[str, tuple[Any, ...]]  # the launch form's offers, by provider
    listed_at: float | None  # when the providers were last listed
    snapshot: Snapshot  # the store's, as the last worker built it (no live overlay)

    # -- views --------------------------------------------------------------------------

    def now(self) -> float: ...

    def feed(self, run_id: str) -> RunFeed: ...

    def display_snapshot(self) -> Snapshot: ...

    def row_for_run(self, run_id: str) -> Row | None: ...
