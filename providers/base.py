"""The Provider protocol every driver implements, and how a profile gets its driver.

Few verbs, value objects out, errors mapped once per driver (libcloud / SkyPilot style).
Which kinds exist and where their classes live is gpuctl/driver_registry.py.
"""

from __future__ import annotations

import enum
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from gpuctl.driver_registry import kinds, provider_class
from gpuctl.errors import ConfigError
from gpuctl.events import Event
from gpuctl.models import BilledPrice, Instance, LaunchSpec, Offer, SshTarget
from gpuctl.trainer.protocol import ShutdownAction

if TYPE_CHECKING:
    from gpuctl.host import Host
    from gpuctl.settings import Profile, Settings


@dataclass(frozen=True)
class Listing:
    """One provider's instances plus the parts of it that failed (a region, say).

    A region that timed out is reported beside the others' results, never instead of them.
    """

    provider: str
    instances: tuple[Instance, ...]
    errors: tuple[tuple[str, str], ...] = ()  # (where, one-line reason)

    @property
    def complete(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Billing:
    """How a provider bills compute; the cost ledger applies it (see gpuctl.cost)."""

    per_second: bool = True
    minimum_seconds: float = 60.0
    billed_when_stopped: bool = False  # DigitalOcean bills powered-off droplets
    storage_gb_month: float = 0.0  # attached disk, when billed separately (EBS gp3)
    # Seconds a stop takes to end the bill (checkpoint, download, teardown): a budget stop
    # is triggered this much early at the current burn. A profile's stop_margin_seconds
    # replaces it.
    stop_margin_seconds: float = 120.0


# What the on-machine agent does when a watchdog limit (max hours, idle, budget) fires
# after the trainer has been stopped gracefully. See gpuctl/agent/agent.py.
SHUTDOWN_NONE = ShutdownAction.NONE  # local, ssh: stop the trainer only, leave the machine
SHUTDOWN_POWEROFF = ShutdownAction.POWEROFF  # `shutdown -h now` (AWS, behaviour terminate)
SHUTDOWN_DESTROY = ShutdownAction.DESTROY  # DigitalOcean: destroy own droplet via API (opt-in)


# Launch flags by LaunchSpec field (or launch option) -> what the user typed. A driver's
# `launch_flags` names the ones it honours; the lifecycle refuses the others before
# anything is created, instead of ignoring them while the estimate prices them.
FLAGS: dict[str, str] = {
    "spot": "--spot",
    "instance_type": "--type",
    "region": "--region",
    "regions": "--regions",
    "max_price": "--max-price",
    "fallback": "--fallback",
    "image": "--image",
    "disk_gb": "--disk",
    "host": "--host",
    "identity": "--identity",
    "key_name": "--key-name",
    "aws_profile": "--aws-profile",
    "checkpoint_bucket": "--checkpoint-bucket",
}


def limit_shutdown(shutdown: dict[str, Any], policy: str, *, spot: bool) -> dict[str, Any]:
    """The provider's shutdown action narrowed to what the run's teardown policy allows.

    keep: the agent stops the trainer only. stop: power off, never destroy (on AWS the
    instance is launched with shutdown behaviour stop for it); a spot instance cannot be
    stopped by powering off (it would terminate), so there the trainer is stopped only.
    """
    action = shutdown.get("action", SHUTDOWN_NONE)
    if policy == "keep" or action == SHUTDOWN_NONE:
        return {"action": SHUTDOWN_NONE, "policy": policy}
    if policy == "stop":
        if spot:
            return {"action": SHUTDOWN_NONE, "policy": policy}
        return {"action": SHUTDOWN_POWEROFF, "command": shutdown.get("command"), "policy": policy}
    return {**shutdown, "policy": policy}


class Capability(enum.Enum):
    """What a driver can do beyond the required verbs; callers ask
    `Capability.X in provider.capabilities`, never whether an attribute happens to exist."""

    # spot_price_history(instance, since): the market's price changes (the meter re-prices).
    SPOT_PRICE_HISTORY = "spot_price_history"
    # The machine's metadata service posts a spot interruption notice (AWS IMDS): the agent
    # watches it and checkpoints before the machine is taken.
    SPOT_NOTICE = "spot_notice"
    # s3(region): object storage the machine can upload a checkpoint to (--checkpoint-bucket).
    CHECKPOINT_STORAGE = "checkpoint_storage"
    # token_env / agent_token_env: the machine can destroy itself with a scoped API token.
    SELF_DESTROY = "self_destroy"
    # billing_ended_at(instance): the driver knows when billing stopped (local: trainer exit).
    BILLING_END_TIME = "billing_end_time"
    # The machines it creates run cloud-init user data: the max-hours boot guard arms at
    # first boot (the agent re-arms it itself where an image ignored the user data).
    BOOT_GUARD = "boot_guard"
    # The machines are the user's own (an ssh box): the driver creates and ends nothing,
    # so `terminate` only lets go of the connection and needs no typed confirmation.
    USER_MACHINES = "user_machines"
    # billed_price(instance, max_age): what the machine really bills, read back from the
    # cloud (AWS: its type, lifecycle, zone and that zone's spot price now; DigitalOcean:
    # the droplet's size and price).
    BILLED_PRICE = "billed_price"


# The attributes each capability promises (tests/unit/test_capabilities.py checks that
# a driver declares a capability exactly when it has them); () for a promise about the
# machine rather than a verb.
VERBS: dict[Capability, tuple[str, ...]] = {
    Capability.SPOT_PRICE_HISTORY: ("spot_price_history",),
    Capability.SPOT_NOTICE: (),
    Capability.CHECKPOINT_STORAGE: ("s3",),
    Capability.SELF_DESTROY: ("token_env", "agent_token_env"),
    Capability.BILLING_END_TIME: ("billing_ended_at",),
    Capability.BOOT_GUARD: (),
    Capability.USER_MACHINES: (),
    Capability.BILLED_PRICE: ("billed_price",),
}


@runtime_checkable
class Provider(Protocol):
    """What the lifecycle needs from a cloud; implementations live beside this file."""

    kind: ClassVar[str]  # "local" | "ssh" | "aws" | "digitalocean"
    billing: ClassVar[Billing]
    launch_flags: ClassVar[frozenset[str]]  # keys of FLAGS this driver honours
    capabilities: ClassVar[frozenset[Capability]]  # the optional verbs it has (VERBS)
    default_type: ClassVar[str | None]  # what it launches when no type is named
    # Seconds from "launch" to the trainer's first step (boot, SSH, sync, torch import),
    # the estimate's prior before the user's own runs on this driver refine it.
    setup_seconds: ClassVar[float]
    # Instance-type prefixes -> GPU name, for a type named without a listing ("g5" A10G).
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]]
    name: str  # profile name ("aws", "amd", "aws-emulator"...)
    profile: Profile

    def check(self) -> None:
        """Raise CredentialsError/ConfigError quickly if this provider cannot be used."""

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        """Rentable machine types with prices, cheapest first."""
        ...

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        """Machines that exist now (gpuctl-tagged only, unless include_unmanaged)."""
        ...

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        """Create a tagged machine for spec; yields Provisioning/Attempt events, returns it.

        A cloud driver returns `gpuctl.provision.launch(self, spec)` and answers its cloud
        verbs (placements, create, find_created, describe, end): the core owns the
        failover, the boot wait and ending the machine on every way out. The instance must
        be findable again by its gpuctl:run tag even if the caller dies right after the
        create call returns.
        """
        ...

    def get_instance(self, instance_id: str) -> Instance | None:
        """Current view of one machine; None when the provider says it is gone."""
        ...

    def stop(self, instance: Instance) -> None: ...

    def start(self, instance: Instance) -> None: ...

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """End billing; with wait, return only once the provider reports it gone."""
        ...

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        """How to reach it (None for the local provider)."""
        ...

    def host(self, instance: Instance) -> Host:
        """A handle to run commands and move files on the machine."""
        ...

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        """Agent settings for the machine's own shutdown when a limit fires."""
        ...


# -- the optional verbs, one protocol per Capability ------------------------------------------


class SpotPriceHistory(Protocol):
    def spot_price_history(self, instance: Instance, since: float) -> list[tuple[float, float]]:
        """(unix time, $/h) changes of the spot price of the instance's type and zone since
        `since`, oldest first, including the change in effect at `since`."""
        ...


class BilledPriceReadBack(Protocol):
    def billed_price(self, instance: Instance, max_age: float | None = 0.0) -> BilledPrice | None:
        """What the machine bills now, asked of the cloud (an answer up to `max_age`
        seconds old may be reused; None: the driver's own reuse, e.g. AWS's
        spot_history_seconds); None when the cloud does not say."""
        ...


class CheckpointStorage(Protocol):
    def s3(self, region: str | None = None) -> Any:
        """A boto3 S3 client on the provider's credentials (presigned checkpoint uploads)."""
        ...


class SelfDestroy(Protocol):
    token_env: str  # the full-access token's variable: never sent to a machine
    agent_token_env: str  # the droplet-scoped token's variable the machine may hold


class BillingEndTime(Protocol):
    def billing_ended_at(self, instance: Instance) -> float | None:
        """When the machine stopped billing, or None while it bills."""
        ...


def kinds_honouring(flag: str) -> list[str]:
    """Built-in kinds whose driver honours a launch flag (for a hint; imports drivers)."""
    out = []
    for kind in kinds():
        try:
            honoured = provider_class(kind).launch_flags
        except ConfigError:
            continue
        if flag in honoured:
            out.append(kind)
    return out


def get_provider(profile: Profile, settings: Settings) -> Provider:
    cls = provider_class(profile.provider)
    return cls(profile, settings)


def get_providers(names: Iterable[str], settings: Settings) -> list[Provider]:
    return [get_provider(settings.profile(n), settings) for n in names]
