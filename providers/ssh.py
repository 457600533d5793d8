"""Bring your own box: any machine you can already ssh to (`--provider ssh --host user@ip`).

gpuctl creates nothing here and owns nothing: launch only checks that the machine
answers, and "terminating" one just forgets it: `down` must never power off a box
gpuctl did not create (instances are `managed=False`). Keys come from `--identity`,
the profile's `identity`, ssh-agent, or the ~/.ssh/config Host entry the user names.
The listing is the set of hosts runs have used, from the state store (no API to ask).

Profile options: `host`, `identity`, `price_per_hour` (default 0: what the box costs
you, for the meter), `connect_timeout` (s), `python` (interpreter on the box),
`remote_base` (gpuctl's dir on the box, default ~/gpuctl), `torch_index_url`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any, ClassVar

from gpuctl.errors import ConfigError, GpuctlError
from gpuctl.events import Event, Provisioning
from gpuctl.models import Instance, InstanceState, LaunchSpec, Offer, SshTarget
from gpuctl.remote.endpoint import parse_host_spec, target_from_spec
from gpuctl.remote.ssh_host import SshHost
from gpuctl.settings import Profile, Settings

from .base import SHUTDOWN_NONE, Billing, Capability, Listing

TAG_IDENTITY = "gpuctl:identity"
TAG_ALIAS = "gpuctl:host_alias"
TAG_RUN = "gpuctl:run"


def instance_id(target: SshTarget) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.user}@{host}:{target.port}"


class SshProvider:
    kind: ClassVar[str] = "ssh"
    billing: ClassVar[Billing] = Billing(
        per_second=True, minimum_seconds=0.0, stop_margin_seconds=30.0
    )
    launch_flags: ClassVar[frozenset[str]] = frozenset({"host", "identity"})
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.USER_MACHINES})
    default_type: ClassVar[str | None] = None
    setup_seconds: ClassVar[float] = 90.0
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        self._hosts: dict[str, SshHost] = {}
        self._lock = threading.Lock()

    # -- options ------------------------------------------------------------------------

    @property
    def price(self) -> float:
        try:
            return float(self.profile.get("price_per_hour", 0.0) or 0.0)
        except (TypeError, ValueError):
            raise ConfigError(
                f"profile '{self.name}': price_per_hour must be a number",
                hint="e.g. price_per_hour = 0.5",
            ) from None

    @property
    def connect_timeout(self) -> float:
        return float(self.profile.value("connect_timeout"))

    def target(self, spec: str, identity: str | None = None) -> SshTarget:
        """`user@host[:port]` (or a ~/.ssh/config Host name) -> SshTarget."""
        return target_from_spec(spec, key_path=identity or self.profile.get("identity"))

    def check(self) -> None:
        """No account, no credentials: nothing to check before launch reaches the box."""

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        """Your own box has no region: `offers --region X` does not list it."""
        if region:
            return []
        return [
            Offer(
                provider=self.name,
                instance_type="ssh",
                gpu_name="",
                gpu_count=0,
                gpu_memory_gb=0.0,
                vcpus=0,
                memory_gb=0.0,
                price_per_hour=self.price,
                region="",
                note="your own machine over SSH (--host user@ip[:port])",
            )
        ]

    # -- instances ------------------------------------------------------------------------

    def _instance(
        self,
        target: SshTarget,
        *,
        run_id: str | None = None,
        state: InstanceState = InstanceState.RUNNING,
        launched_at: float | None = None,
    ) -> Instance:
        tags = {}
        if target.key_path:
            tags[TAG_IDENTITY] = target.key_path
        if target.host_alias:
            tags[TAG_ALIAS] = target.host_alias
        if run_id:
            tags[TAG_RUN] = run_id
        return Instance(
            provider=self.name,
            id=instance_id(target),
            name=instance_id(target),
            region="",
            instance_type="ssh",
            state=state,
            public_ip=target.host,
            launched_at=launched_at,
            price_per_hour=self.price,
            run_id=run_id,
            managed=False,  # gpuctl did not create it: never powered off or destroyed
            ssh_user=target.user,
            ssh_port=target.port,
            tags=tags,
        )

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        """Hosts of this profile's runs (the state store is the only inventory there is)."""
        from gpuctl.state import Store

        found: dict[str, Instance] = {}
        with Store(self.settings.state_path) as store:
            for inst in store.instances(self.name):
                found[inst.id] = inst
            claimed: set[str] = set()
            for run in store.list_runs(active=True):  # newest first
                ident = run.instance_id
                if run.provider != self.name or not ident or ident in claimed:
                    continue
                claimed.add(ident)
                base = found.get(ident) or store.get_instance(self.name, ident)
                base = base or self._instance(self._parse_id(ident, {}))
                found[ident] = base.evolve(state=InstanceState.RUNNING, run_id=run.id)
        return Listing(self.name, tuple(sorted(found.values(), key=lambda i: i.id)))

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """Check the box answers (fast, one clear line if not); nothing is created."""
        if not spec.host:
            raise ConfigError(
                "the ssh provider needs --host user@ip[:port]",
                hint=f"or set host = ... under [profiles.{self.name}] in config.toml",
            )
        target = self.target(spec.host, spec.identity)
        host = self._new_host(target)
        yield Provisioning(spec.run_id, self.name, f"your machine {host.label}")
        try:
            host.connect()
        except GpuctlError:
            host.close()
            raise
        inst = self._instance(target, run_id=spec.run_id, launched_at=time.time())
        with self._lock:
            old = self._hosts.pop(inst.id, None)
            self._hosts[inst.id] = host
        if old is not None:
            old.close()
        return inst

    def get_instance(self, instance_id: str) -> Instance | None:
        """The box as last recorded; gpuctl cannot tell if a box it does not own is gone."""
        from gpuctl.state import Store

        with Store(self.settings.state_path) as store:
            known = store.get_instance(self.name, instance_id)
        if known is not None:
            return known.evolve(state=InstanceState.RUNNING)
        return self._instance(self._parse_id(instance_id, {}))

    def stop(self, instance: Instance) -> None:
        """Nothing to power off: the box is the user's (the trainer is stopped by the agent)."""

    def start(self, instance: Instance) -> None:
        """Nothing to power on."""

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """Forget the box: close the connection; the machine and its files are left alone."""
        with self._lock:
            host = self._hosts.pop(instance.id, None)
        if host is not None:
            host.close()

    # -- reaching it ----------------------------------------------------------------------

    def _parse_id(self, ident: str, tags: Any) -> SshTarget:
        user, host, port = parse_host_spec(ident)
        alias = tags.get(TAG_ALIAS) if tags else None
        return SshTarget(
            host=host,
            port=port or 22,
            user=user or "root",
            key_path=(tags.get(TAG_IDENTITY) if tags else None) or self.profile.get("identity"),
            host_alias=alias,
        )

    def ssh_target(self, instance: Instance) -> SshTarget:
        return self._parse_id(instance.id, instance.tags)

    def _new_host(self, target: SshTarget) -> SshHost:
        return SshHost(
            target,
            self.settings,
            connect_timeout=self.connect_timeout,
            remote_base=self.profile.get("remote_base"),
        )

    def host(self, instance: Instance) -> SshHost:
        """One connection per box, shared by every step of this process."""
        with self._lock:
            host = self._hosts.get(instance.id)
            if host is None:
                host = self._new_host(self.ssh_target(instance))
                self._hosts[instance.id] = host
            return host

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        return {"action": SHUTDOWN_NONE}

    def close(self) -> None:
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
        for host in hosts:
            host.close()
