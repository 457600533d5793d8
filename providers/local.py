"""The embedded default provider: this machine, no cloud account, no credentials.

Each run gets a "local instance": its run directory under GPUCTL_HOME/local, with the
trainer started detached by the agent (its own session, survives the CLI exiting). It
goes through the same lifecycle and event stream as a cloud launch, priced at the
profile's `price_per_hour` (default 0) so budgets and the meter can be tried for free.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

from gpuctl.errors import NotFoundError
from gpuctl.events import Event, Provisioning
from gpuctl.local_host import LocalHost
from gpuctl.models import Instance, InstanceState, LaunchSpec, Offer, SshTarget
from gpuctl.settings import Profile, Settings
from gpuctl.trainer.protocol import AGENT_STATUS_FILE, STOP_FILE, AgentState

from .base import SHUTDOWN_NONE, Billing, Capability, Listing

PREFIX = "local-"


class LocalProvider:
    kind: ClassVar[str] = "local"
    billing: ClassVar[Billing] = Billing(
        per_second=True, minimum_seconds=0.0, stop_margin_seconds=10.0
    )
    launch_flags: ClassVar[frozenset[str]] = frozenset()
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.BILLING_END_TIME})
    default_type: ClassVar[str | None] = None
    setup_seconds: ClassVar[float] = 10.0
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        self.root = Path(profile.get("root") or settings.home / "local")
        self._host = LocalHost(self.root)

    @property
    def price(self) -> float:
        return float(self.profile.get("price_per_hour", 0.0) or 0.0)

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        """This machine, in region "local": `offers --region X` elsewhere does not list it."""
        import psutil

        if region and region != "local":
            return []
        mem_gb = psutil.virtual_memory().total / 2**30
        return [
            Offer(
                provider=self.name,
                instance_type="local",
                gpu_name="",
                gpu_count=0,
                gpu_memory_gb=0.0,
                vcpus=os.cpu_count() or 1,
                memory_gb=round(mem_gb, 1),
                price_per_hour=self.price,
                region="local",
                note="this machine (CPU)",
            )
        ]

    def _run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def _instance(self, run_id: str, launched_at: float | None = None) -> Instance:
        run_dir = self._run_dir(run_id)
        status: dict[str, Any] = {}
        try:
            status = json.loads((run_dir / AGENT_STATUS_FILE).read_text())
        except (OSError, ValueError):
            pass
        if not run_dir.exists():
            state = InstanceState.TERMINATED
        elif _alive(status.get("trainer_pid")) or _alive(status.get("agent_pid")):
            state = InstanceState.RUNNING
        elif status:
            state = InstanceState.STOPPED
        else:
            state = InstanceState.PENDING
        if launched_at is None:
            try:
                launched_at = (run_dir / ".launched").stat().st_mtime
            except OSError:
                launched_at = None
        try:  # the root may be shared with another data directory (profile `root`)
            owner = (run_dir / ".installation").read_text().strip() or None
        except OSError:
            owner = self.settings.installation_id if run_dir.exists() else None
        return Instance(
            provider=self.name,
            id=PREFIX + run_id,
            name=run_id,
            region="local",
            instance_type="local",
            state=state,
            launched_at=launched_at,
            price_per_hour=self.price,
            run_id=run_id,
            managed=True,
            raw_state=str(status.get("state", "")),
            tags={"gpuctl:run": run_id},
            stopped_at=_ended_at(status)
            if state == InstanceState.STOPPED and status.get("state") == AgentState.EXITED
            else None,
            owner=owner,
        )

    def billing_ended_at(self, instance: Instance) -> float | None:
        """When this "machine" stopped billing: the moment its trainer and agent exited
        (None while they run). The ledger closes there, not when gpuctl next looks."""
        try:
            path = self._run_dir(instance.id.removeprefix(PREFIX)) / AGENT_STATUS_FILE
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return _ended_at(status) if status.get("state") == AgentState.EXITED else None

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        runs = self.root / "runs"
        names = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        return Listing(self.name, tuple(self._instance(n) for n in names))

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        yield Provisioning(spec.run_id, self.name, "run directory on this machine")
        run_dir = self._run_dir(spec.run_id)
        run_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        (run_dir / ".launched").write_text(str(now))
        (run_dir / ".installation").write_text(self.settings.installation_id + "\n")
        return self._instance(spec.run_id, launched_at=now)

    def get_instance(self, instance_id: str) -> Instance | None:
        run_id = instance_id.removeprefix(PREFIX)
        inst = self._instance(run_id)
        return None if inst.state == InstanceState.TERMINATED else inst

    def _signal_all(self, instance: Instance, sig: int) -> None:
        run_dir = self._run_dir(instance.id.removeprefix(PREFIX))
        try:
            status = json.loads((run_dir / AGENT_STATUS_FILE).read_text())
        except (OSError, ValueError):
            return
        for key in ("trainer_pid",):
            pid = status.get(key)
            if _alive(pid):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    pass
        if sig == signal.SIGKILL and _alive(status.get("agent_pid")):
            try:
                os.kill(status["agent_pid"], sig)
            except ProcessLookupError:
                pass

    def stop(self, instance: Instance) -> None:
        """Stop the trainer (gracefully, it checkpoints); the run dir stays."""
        run_dir = self._run_dir(instance.id.removeprefix(PREFIX))
        if run_dir.exists():
            (run_dir / STOP_FILE).write_text("instance stopped\n")
        self._signal_all(instance, signal.SIGTERM)

    def start(self, instance: Instance) -> None:
        if not self._run_dir(instance.id.removeprefix(PREFIX)).exists():
            raise NotFoundError(f"local instance {instance.id} no longer exists")

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """Kill what still runs and remove the run directory (results are downloaded first)."""
        run_dir = self._run_dir(instance.id.removeprefix(PREFIX))
        self._signal_all(instance, signal.SIGTERM)
        deadline = time.time() + (30 if wait else 0)
        while (
            time.time() < deadline and self._instance(run_dir.name).state == InstanceState.RUNNING
        ):
            time.sleep(0.1)
        self._signal_all(instance, signal.SIGKILL)
        _kill_strays(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        return None

    def host(self, instance: Instance) -> LocalHost:
        return self._host

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        return {"action": SHUTDOWN_NONE}


def _kill_strays(run_dir: Path) -> None:
    """Kill any process still working in this run dir: an agent started just before a
    Ctrl-C may not have written its pid yet, and would recreate the dir and train on."""
    import psutil

    mine = str(run_dir)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info.get("cmdline") or []
            inside = any(part == mine or part.startswith(mine + os.sep) for part in cmdline)
            if proc.pid != os.getpid() and inside:
                proc.kill()
        except (psutil.Error, OSError):
            continue


def _ended_at(status: dict[str, Any]) -> float | None:
    value = status.get("ended_at")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _alive(pid: object) -> bool:
    """The agent's own liveness rule (a zombie is not alive); imported on first use, so
    `gpuctl ls` does not load the whole agent."""
    from gpuctl.agent.agent import pid_alive

    return pid_alive(pid)  # type: ignore[arg-type]
