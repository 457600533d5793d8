"""The keys that act on one row (a run or an instance), shared by the screens that show one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import Row
    from ..ports import ControlCenter


class RowActions:
    """Mixed into a Screen: each action asks the app, which does the work in a worker."""

    app: Any

    @property
    def gpuctl(self) -> ControlCenter:
        return self.app  # type: ignore[no-any-return]

    def target(self) -> Row | None:
        raise NotImplementedError

    def action_stop(self) -> None:
        self.gpuctl.confirm_stop(self.target())

    def action_terminate(self) -> None:
        self.gpuctl.confirm_terminate(self.target())

    def action_resume(self) -> None:
        self.gpuctl.resume(self.target())

    def action_download(self) -> None:
        self.gpuctl.download(self.target())

    def action_shell(self) -> None:
        self.gpuctl.shell(self.target())
