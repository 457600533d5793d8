"""What the screens use of the app: its engine, its clock, its views and its actions.

A protocol, so the screens do not import the app that imports them; GpuctlApp is the one
implementation. A screen reaches it as `self.gpuctl` (its `self.app`, typed as this).
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

    # -- navigation and refresh ---------------------------------------------------------

    def open_run(self, row: Row | None) -> None: ...

    def open_gpu(self, row: Row | None) -> None: ...

    def open_launch(self) -> None: ...

    def open_cost(self) -> None: ...

    def watch_run(self, run_id: str) -> None: ...

    def refresh_now(self, *, network: bool, announce: bool = False) -> None: ...

    # -- the row actions (each asks first where it loses something, then runs a worker) --

    def confirm_stop(self, row: Row | None) -> None: ...

    def confirm_terminate(self, row: Row | None) -> None: ...

    def resume(self, row: Row | None) -> None: ...

    def download(self, row: Row | None) -> None: ...

    def shell(self, row: Row | None) -> None: ...
