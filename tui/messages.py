"""Messages workers post up to the app; the app pushes the data down as attributes.

Workers run in threads and never touch a widget: they post one of these (post_message
is thread-safe) and the handler, on the UI thread, updates state and widgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.message import Message

from gpuctl.events import Event
from gpuctl.models import Offer

from .model import Snapshot


class RunEvent(Message):
    """One lifecycle event of a run, from a worker consuming an Engine generator."""

    def __init__(self, event: Event, *, quiet: bool = False) -> None:
        super().__init__()
        self.event = event
        self.quiet = quiet  # a background follow: no notifications for its failures


class DriveEnded(Message):
    """A lifecycle generator finished (or failed); the run may need a reload."""

    def __init__(self, run_id: str, what: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.what = what


class SnapshotReady(Message):
    """A fresh view of the store (after a provider refresh when `network`)."""

    def __init__(self, snapshot: Snapshot, *, network: bool) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.network = network


class NotificationsSent(Message):
    """Notifications any gpuctl (or an agent) recorded since the last look: toasts."""

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        self.rows = rows


class ActionFailed(Message):
    """A GpuctlError (or a bug) from a worker: shown as a notification with its hint."""

    def __init__(self, title: str, message: str, hint: str = "", run_id: str | None = None):
        super().__init__()
        self.title = title
        self.message = message
        self.hint = hint
        self.run_id = run_id


class HistoryLoaded(Message):
    """Log lines and epochs from before this UI followed the run."""

    def __init__(
        self, run_id: str, lines: Sequence[str] | None, epochs: Sequence[Mapping[str, Any]]
    ) -> None:
        super().__init__()
        self.run_id = run_id
        self.lines = lines
        self.epochs = epochs


class OffersLoaded(Message):
    """A provider's offers for the launch modal (or the one-line reason they failed)."""

    def __init__(
        self, provider: str, offers: Sequence[Offer], error: str = "", hint: str = ""
    ) -> None:
        super().__init__()
        self.provider = provider
        self.offers = offers
        self.error = error
        self.hint = hint


class ReportReady(Message):
    """The cost report's rows, computed off the UI thread."""

    def __init__(self, report: Any) -> None:
        super().__init__()
        self.report = report
