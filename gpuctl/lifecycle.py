"""The engine: the one front door the CLI and the TUI use.

Each job lives in its own module below this one (resolve, launch, start, follow, ending,
teardown, download, resume, listing, recovery, reconcile); they take the engine as a
`ports.EngineOps` and never import it. What stays here is what one process holds: the
settings, the state store, one driver per profile and one SSH connection per machine.
Every verb is a generator of typed events (gpuctl/events.py): the CLI prints them and the
TUI turns them into messages; nothing here knows who is listening.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from . import (
    cost,
    download,
    ending,
    follow,
    launch,
    listing,
    notify,
    ownership,
    recovery,
    resolve,
    results,
    resume,
    start,
    teardown,
)
from .errors import NotFoundError
from .events import Event
from .host import Host
from .models import Instance, InstanceState, LaunchSpec, Run, RunStatus
from .settings import Settings
from .settings import load as load_settings
from .state import Store
from .trainer.protocol import StopReason

log = logging.getLogger("gpuctl")

Events = Generator[Event, None, Any]


class Engine:
    """Holds settings, the state store and provider instances for one process."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None) -> None:
        self.settings = settings or load_settings()
        self.store = store or Store(self.settings.state_path)
        self._providers: dict[str, Any] = {}
        self._hosts: dict[tuple[str, str, str | None], Host] = {}
        self.poll_seconds = 0.5
        self.status_seconds = 2.0
        self.gpu_seconds = 5.0
        self.cost_seconds = 10.0
        self.cost_next: dict[str, float | None] = {}  # when the next budget line is near
        self.cut_short: list[tuple[str, str]] = []  # (run id, what was undone) on Ctrl-C
        self.attached: list[str] = []  # runs this process launched or followed (Ctrl-C says so)
        self.findings: list[Any] = []  # what the last refresh's reconcile found
        self.notifier: notify.Notifier | None = None
        if self.settings.notify.urls:  # every recorded event passes here (gpuctl.notify)
            self.notifier = notify.Notifier(self)
            self.store.listeners.append(self.notifier)

    def provider(self, name: str) -> Any:
        if name not in self._providers:
            from gpuctl.providers.base import get_provider

            profile = self.settings.profile(name)
            cost.profile_price(profile)  # a bad price_per_hour: one clear error, any command
            self._providers[name] = get_provider(profile, self.settings)
        return self._providers[name]

    # -- resolve ---------------------------------------------------------------------------

    def resolve(self, preset: str | None, **options: Any) -> LaunchSpec:
        """Check everything that can be checked before anything is created or paid for."""
        return resolve.resolve(self.settings, preset, **options)

    def capped(self, key: str, preset_value: float | None) -> float | None:
        """A preset's limit under config.toml's [defaults] cap (see gpuctl.resolve)."""
        return resolve.capped(self.settings, key, preset_value)

    # -- launch ------------------------------------------------------------------------------

    def launch(self, spec: LaunchSpec) -> Events:
        """Provision (or reuse), reach, sync and start; ends with TrainerStarted or Failed."""
        return launch.launch(self, spec)

    def create_instance(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """A new machine for spec. The driver (through gpuctl.provision) ends it on every
        way out until it returns, and frees its recycled address of an old host-key pin."""
        return self.provider(spec.provider).launch(spec)

    def estimate(self, spec: LaunchSpec) -> Any:  # -> estimate.Estimate | None
        """Hours and dollars before launch (None if even the provider is unusable)."""
        from . import estimate

        try:
            return estimate.estimate_spec(
                self.store, self.settings, spec, self.provider(spec.provider)
            )
        except Exception:  # an estimate must never block or break a launch
            log.exception("estimate for %s failed", spec.run_id)
            return None

    def release_hosts(self, provider: str, instance_id: str | None) -> None:
        """Close this process's connections to one machine (a pool thread is done with it)."""
        for key, host in list(self._hosts.items()):
            if key[:2] == (provider, instance_id):
                host.close()

    def host_for(self, run: Run | LaunchSpec, instance: Instance, wait: float = 0.0) -> Host:
        """One Host (one SSH connection) per machine and address for this process."""
        key = (instance.provider, instance.id, instance.public_ip)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = self.provider(run.provider).host(instance)
        if wait and hasattr(host, "wait_ready"):
            host.wait_ready(wait)
        return host

    def start_on(self, instance: Instance, spec: LaunchSpec, *, resume: bool) -> Events:
        """Reach the machine, sync code and workdir, write configs, start the agent."""
        return start.start_on(self, instance, spec, resume=resume)

    # -- follow ------------------------------------------------------------------------------

    def follow(
        self,
        run_id: str,
        *,
        from_start: bool = False,
        tail_lines: int = 20,
        stop_when_done: bool = True,
        log_offset: int | None = None,
    ) -> Events:
        """Stream log lines, epochs, GPU samples and cost until the trainer ends."""
        return follow.follow(
            self,
            run_id,
            from_start=from_start,
            tail_lines=tail_lines,
            stop_when_done=stop_when_done,
            log_offset=log_offset,
        )

    # -- run (attached) -----------------------------------------------------------------------

    def run(self, spec: LaunchSpec) -> Events:
        """Launch, follow to the end, download results, tear down by policy."""
        started = yield from self.launch(spec)
        if not started:
            return RunStatus.FAILED
        status = yield from self.follow(spec.run_id, from_start=True)
        status = yield from recovery.supervise(self, spec.run_id, status)  # managed runs
        return (yield from self.finish(spec.run_id, status))

    def finish(self, run_id: str, status: RunStatus | None) -> Events:
        return ending.finish(self, run_id, status)

    # -- locate, stop, down, resume, download ---------------------------------------------------

    def instance_of(self, run: Run) -> Instance | None:
        if not run.instance_id:
            return None
        return self.store.get_instance(run.provider, run.instance_id)

    def locate(self, run: Run) -> tuple[Instance, Host]:
        instance = self.instance_of(run)
        if instance is None or instance.state == InstanceState.TERMINATED:
            fresh = None
            if run.instance_id:
                fresh = self.provider(run.provider).get_instance(run.instance_id)
            if fresh is None:
                raise NotFoundError(
                    f"run {run.id} has no live machine (instance "
                    f"{run.instance_id or 'never created'})",
                    hint=self.gone_hint(run),
                )
            instance = fresh
            self.store.put_instance(instance)
        return instance, self.host_for(run, instance)

    def gone_hint(self, run: Run) -> str:
        """What still works for a run whose machine is gone (never the command that failed)."""
        saved = results.saved_dir(run)
        parts = [f"its results are saved in {saved}"] if saved else []
        resumable = run.status != RunStatus.FINISHED and (
            recovery.local_checkpoint(self, run) is not None
            or run.launch_spec.options.get("checkpoint_bucket")
        )
        if resumable:
            parts.append(f"`gpuctl resume {run.id}` continues it on a new machine")
        elif not saved:
            parts.append(f"`gpuctl status {run.id}` says how it ended")
        return "; ".join(parts)

    def stop(self, run_id: str, *, reason: str = StopReason.USER) -> Events:
        return ending.stop(self, run_id, reason=reason)

    def created_for(self, spec: LaunchSpec, instance: Instance) -> bool:
        """This installation created the machine for this run (see gpuctl.ownership)."""
        return ownership.created_for(spec, instance, self.settings.installation_id)

    def end_rule(self, instance: Instance, run: Run | None = None) -> ownership.EndRule:
        """What ending this machine (the machine of `run`, if given) asks of the user."""
        installation = self.settings.installation_id
        if run is not None:
            return ownership.end_rule(instance, installation, run_id=run.id, spec=run.launch_spec)
        return ownership.end_rule(instance, installation, run_known=self._run_known(instance))

    def _run_known(self, instance: Instance) -> bool:
        """The store knows the run the machine is tagged with."""
        return bool(instance.run_id) and self.store.find_run(instance.run_id or "") is not None

    def is_ours(self, instance: Instance) -> bool:
        """Created by this installation (tagged with its id, or with a run it knows)."""
        return ownership.is_ours(
            instance, self.settings.installation_id, run_known=self._run_known(instance)
        )

    def teardown(
        self, run_id: str | None, instance: Instance, policy: str, *, confirmed: bool = False
    ) -> Events:
        """Stop or terminate an instance, close its ledger, say so (callers confirm first)."""
        return teardown.teardown(self, run_id, instance, policy, confirmed=confirmed)

    def release(self, run_id: str, instance: Instance) -> Events:
        """Let go of a machine gpuctl did not create for this run: the run's meter ends,"""
        return teardown.release(self, run_id, instance)

    def down(
        self, run_id: str, *, discard_results: bool = False, confirmed: bool = False
    ) -> Events:
        """Terminate the run's instance (stopping the trainer first if it still runs)."""
        return ending.down(self, run_id, discard_results=discard_results, confirmed=confirmed)

    def download(self, run_id: str, to: Path | None = None) -> Events:
        """Bring the run's results home; once its machine is gone, copy the saved ones."""
        return download.download(self, run_id, to)

    def resume(self, run_id: str) -> Events:
        """Continue a stopped/interrupted/failed run from its last checkpoint, attached."""
        return resume.resume(self, run_id)

    # -- listing ------------------------------------------------------------------------------

    def settle_ended_billing(self) -> int:
        """Close the ledger where a machine already says its billing ended (local: when its"""
        return listing.settle_ended_billing(self)

    def refresh(self, names: Sequence[str] | None = None, *, include_unmanaged: bool = False):
        """List every provider in parallel; one failing is reported beside the others."""
        return listing.refresh(self, names, include_unmanaged=include_unmanaged)

    def record_event(self, run_id: str | None, kind: str, data: dict[str, Any]) -> None:
        try:
            self.store.add_event(run_id, kind, data)
        except Exception:  # the journal must never break a launch
            log.exception("could not record event %s", kind)
