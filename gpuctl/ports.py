"""What the engine's job modules need of the engine, as a protocol.

launch, start, follow, ending, teardown, download, resume, listing, recovery, reconcile
and run-state syncing sit below `gpuctl.lifecycle` (which calls them) and never import
it: the engine hands itself down as an `EngineOps`. The names here are the engine's
public surface for these modules; none of them reaches into its private state.
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
    # How often a follow polls the log, the agent's status, the GPUs and the meter (s).
    poll_seconds: float
    status_seconds: float
    gpu_seconds: float
    cost_seconds: float
    cost_next: dict[str, float | None]  # run id -> seconds until a budget line, if near
    cut_short: list[tuple[str, str]]  # (run id, what was undone) when a launch was cut short
    attached: list[str]  # runs this process launched or followed
    findings: list[Any]  # what the last refresh's reconcile found

    def provider(self, name: str) -> Any: ...

    def record_event(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None: ...

    def instance_of(self, run: Run) -> Instance | None: ...

    def locate(self, run: Run) -> tuple[Instance, Host]: ...

    def host_for(self, run: Run | LaunchSpec, instance: Instance, wait: float = 0.0) -> Host: ...

    def release_hosts(self, provider: str, instance_id: str | None) -> None: ...

    def is_ours(self, instance: Instance) -> bool: ...

    def created_for(self, spec: LaunchSpec, instance: Instance) -> bool: ...

    def create_instance(self, spec: LaunchSpec) -> Generator[Event, None, Instance]: ...

    def estimate(self, spec: LaunchSpec) -> Any: ...

    def gone_hint(self, run: Run) -> str: ...

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
