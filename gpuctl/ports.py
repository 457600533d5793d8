"""What recovery, reconcile and run-state syncing need of the engine, as a protocol.

They sit below `gpuctl.lifecycle` (which calls them) and must not import it: the engine
hands itself down as an `EngineOps`. The names here are the engine's public surface for
these modules; none of them reaches into its private state.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gpuctl.events import Event
    from gpuctl.host import Host
    from gpuctl.models import Instance, LaunchSpec, Run, RunStatus
    from gpuctl.settings import Settings
    from gpuctl.state import Store

    Events = Generator[Event, None, Any]


class EngineOps(Protocol):
    store: Store
    settings: Settings

    def provider(self, name: str) -> Any: ...

    def record_event(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None: ...

    def instance_of(self, run: Run) -> Instance | None: ...

    def locate(self, run: Run) -> tuple[Instance, Host]: ...

    def host_for(self, run: Run | LaunchSpec, instance: Instance, wait: float = 0.0) -> Host: ...

    def release_hosts(self, provider: str, instance_id: str | None) -> None: ...

    def is_ours(self, instance: Instance) -> bool: ...

    def created_for(self, spec: LaunchSpec, instance: Instance) -> bool: ...

    def create_instance(self, spec: LaunchSpec) -> Generator[Event, None, Instance]: ...

    def start_on(self, instance: Instance, spec: LaunchSpec, *, resume: bool) -> Events: ...

    def follow(
        self,
        run_id: str,
        *,
        from_start: bool = False,
        tail_lines: int = 20,
        stop_when_done: bool = True,
        log_offset: int | None = None,
    ) -> Events: ...

    def finish(self, run_id: str, status: RunStatus | None) -> Events: ...
