"""A complete minimal driver for an in-memory "cloud": the skeleton providers/README.md
walks through, run by the conformance suite like every real driver.

To add a cloud, copy this file to providers/<cloud>.py, replace `InMemoryCloud` with the
cloud's SDK client and keep the shape: value objects out, every SDK failure mapped to
gpuctl's errors in one place (`_call`), every machine tagged at create time so it can be
found again even if gpuctl dies right after the create call. The driver only talks to
its cloud: `launch` hands the placements, create, find, describe and end verbs to
gpuctl.provision, which owns the failover, the boot wait and the clean-up.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from gpuctl import provision
from gpuctl.errors import CapacityError, ConfigError, GpuctlError, NotFoundError, ProviderError
from gpuctl.events import Event, Provisioning
from gpuctl.models import Instance, InstanceState, LaunchSpec, Offer, SshTarget
from gpuctl.ownership import TAG as TAG_INSTALLATION
from gpuctl.providers.base import SHUTDOWN_NONE, Billing, Capability, Listing
from gpuctl.provision import CAPACITY, Ambiguous, Failure, Look, Pacing, Placement, Unplaced

if TYPE_CHECKING:
    from gpuctl.host import Host
    from gpuctl.settings import Profile, Settings

# -- the "cloud": stands in for an SDK client; a real driver imports its SDK lazily --------


class CloudError(Exception):
    """What the SDK raises: a code and the API's own words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MachineType:
    name: str
    gpu_name: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: int
    memory_gb: float
    price_per_hour: float | None  # None: the cloud does not publish it (never 0)
    regions: tuple[str, ...]


@dataclass(frozen=True)
class Machine:
    """One machine as the API returns it."""

    id: str
    name: str
    region: str
    type: str
    status: str  # booting | running | off | deleted
    ip: str
    created_at: float
    tags: dict[str, str] = field(default_factory=dict)


class InMemoryCloud:
    """A cloud with two regions, three machine types and machines that boot in two looks."""

    TYPES: ClassVar[tuple[MachineType, ...]] = (
        MachineType("gpu-small", "T4", 1, 16.0, 4, 16.0, 0.5, ("zone-a", "zone-b")),
        MachineType("gpu-large", "A100", 4, 320.0, 48, 384.0, 12.0, ("zone-a",)),
        MachineType("gpu-preview", "B200", 1, 180.0, 32, 256.0, None, ("zone-b",)),
    )
    REGIONS: ClassVar[tuple[str, ...]] = ("zone-a", "zone-b")

    def __init__(self) -> None:
        self.machines: dict[str, Machine] = {}
        self.sold_out: set[tuple[str, str]] = set()  # (type, region) with no capacity
        self.down = False  # every call fails as an API outage does (tests)
        self.boot_looks = 2  # looks at a booting machine before it runs
        self.lose_answers = 0  # creates that make the machine, then time out (tests)
        self.on_create: Callable[[Machine], None] | None = None  # runs mid-create (tests)
        self._looks: dict[str, int] = {}
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()

    def _answer(self) -> None:
        if self.down:
            raise CloudError("unavailable", "503 Service Unavailable\n<html>try later</html>")

    def types(self) -> list[MachineType]:
        self._answer()
        return list(self.TYPES)

    def create(self, name: str, region: str, type_name: str, tags: dict[str, str]) -> Machine:
        self._answer()
        kind = next((t for t in self.TYPES if t.name == type_name), None)
        if region not in self.REGIONS:
            raise CloudError("unknown_region", f"region {region} does not exist")
        if kind is None:
            raise CloudError("unknown_type", f"type {type_name} does not exist")
        if region not in kind.regions or (type_name, region) in self.sold_out:
            raise CloudError("no_capacity", f"{type_name} is out of capacity in {region}")
        with self._lock:
            number = next(self._ids)
            machine = Machine(
                id=f"m-{number}",
                name=name,
                region=region,
                type=type_name,
                status="booting",
                ip=f"198.51.100.{number % 250}",
                created_at=time.time(),
                tags=dict(tags),
            )
            self.machines[machine.id] = machine
            self._looks[machine.id] = 0
        if self.on_create is not None:
            self.on_create(machine)
        if self.lose_answers > 0:
            self.lose_answers -= 1
            raise CloudError("timeout", "the connection was reset before the answer came")
        return machine

    def get(self, machine_id: str) -> Machine:
        self._answer()
        with self._lock:
            machine = self.machines.get(machine_id)
            if machine is None or machine.status == "deleted":
                raise CloudError("not_found", f"machine {machine_id} not found")
            self._looks[machine_id] += 1
            if machine.status == "booting" and self._looks[machine_id] >= self.boot_looks:
                machine = self.machines[machine_id] = replace(machine, status="running")
            return machine

    def list(self, tag: str | None = None) -> list[Machine]:
        self._answer()
        with self._lock:
            live = [m for m in self.machines.values() if m.status != "deleted"]
        return [m for m in live if tag is None or tag in m.tags]

    def delete(self, machine_id: str) -> None:
        self._answer()
        with self._lock:
            machine = self.machines.get(machine_id)
            if machine is None or machine.status == "deleted":
                raise CloudError("not_found", f"machine {machine_id} not found")
            self.machines[machine_id] = replace(machine, status="deleted")

    def power(self, machine_id: str, on: bool) -> None:
        self._answer()
        machine = self.get(machine_id)
        with self._lock:
            self.machines[machine_id] = replace(machine, status="running" if on else "off")


# The "accounts": one cloud per endpoint, as a real SDK reaches one API per endpoint.
CLOUDS: dict[str, InMemoryCloud] = {}


def cloud_for(endpoint: str) -> InMemoryCloud:
    return CLOUDS.setdefault(endpoint, InMemoryCloud())


# -- the driver ---------------------------------------------------------------------------

# The cloud's status -> gpuctl's neutral state: one place for this mapping.
STATE_MAP: dict[str, InstanceState] = {
    "booting": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "off": InstanceState.STOPPED,
    "deleted": InstanceState.TERMINATED,
}
TAG_RUN = "gpuctl:run"
TAG_MANAGED = "gpuctl:managed"


class AnswerLost(ProviderError):
    """The request was sent but its answer never came: it may have been carried out."""


class SkeletonProvider:
    """Provider for the in-memory cloud; see providers/README.md for each step."""

    kind: ClassVar[str] = "skeleton"
    billing: ClassVar[Billing] = Billing(per_second=True, minimum_seconds=60.0)
    launch_flags: ClassVar[frozenset[str]] = frozenset({"instance_type", "region", "regions"})
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    default_type: ClassVar[str | None] = "gpu-small"
    setup_seconds: ClassVar[float] = 300.0  # the estimate's prior: launch to first step
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = (("gpu-small", "T4"),)

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        self.endpoint = str(profile.get("endpoint") or "memory://default")
        self.poll_seconds = float(profile.get("poll_seconds", 0.01))
        self.timeout = float(profile.get("launch_timeout", 10.0))

    # -- the one place SDK failures become gpuctl errors ----------------------------------

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except CloudError as exc:
            said = " ".join(str(exc).split())  # one line, whatever the API said
            if exc.code in ("unknown_region", "unknown_type"):
                raise ConfigError(
                    f"cannot {what}: {said}", hint=f"see `gpuctl offers -p {self.name}`"
                ) from None
            if exc.code == "no_capacity":
                raise CapacityError(
                    f"cannot {what}: {said}", hint="try another region or type"
                ) from None
            if exc.code == "not_found":
                raise NotFoundError(f"cannot {what}: {said}") from None
            if exc.code == "timeout":
                raise AnswerLost(f"lost the answer to {what}: {said}") from None
            raise ProviderError(f"{self.endpoint} failed to {what}: {said}") from None

    def _cloud(self) -> InMemoryCloud:
        return cloud_for(self.endpoint)

    # -- the verbs ------------------------------------------------------------------------

    def check(self) -> None:
        """Nothing to check in memory; a real cloud checks its credentials here."""

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        if region and region not in InMemoryCloud.REGIONS:
            raise ConfigError(
                f"unknown region '{region}' on {self.name}",
                hint=f"regions: {', '.join(InMemoryCloud.REGIONS)}",
            )
        out = []
        for t in self._call("list machine types", self._cloud().types):
            if region and region not in t.regions:
                continue
            if gpu and gpu.lower() not in f"{t.name} {t.gpu_name}".lower():
                continue
            out.append(
                Offer(
                    provider=self.name,
                    instance_type=t.name,
                    gpu_name=t.gpu_name,
                    gpu_count=t.gpu_count,
                    gpu_memory_gb=t.gpu_memory_gb,
                    vcpus=t.vcpus,
                    memory_gb=t.memory_gb,
                    price_per_hour=t.price_per_hour,
                    region=region or t.regions[0],
                    regions=t.regions,
                    note="" if t.price_per_hour is not None else "price unknown",
                )
            )
        return sorted(out, key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0.0))

    def _instance(self, m: Machine) -> Instance:
        price = next((t.price_per_hour for t in InMemoryCloud.TYPES if t.name == m.type), None)
        return Instance(
            provider=self.name,
            id=m.id,
            name=m.name,
            region=m.region,
            instance_type=m.type,
            state=STATE_MAP.get(m.status, InstanceState.UNKNOWN),
            public_ip=m.ip,
            launched_at=m.created_at,
            price_per_hour=price,
            run_id=m.tags.get(TAG_RUN),
            managed=m.tags.get(TAG_MANAGED) == "true",
            raw_state=m.status,
            tags=m.tags,
            owner=m.tags.get(TAG_INSTALLATION),
        )

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        tag = None if include_unmanaged else TAG_MANAGED
        machines = self._call("list machines", self._cloud().list, tag)
        return Listing(self.name, tuple(self._instance(m) for m in machines))

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        return provision.launch(self, spec)  # the core tries the placements below

    # -- the cloud verbs gpuctl.provision calls ---------------------------------------------

    def _type(self, spec: LaunchSpec) -> str:
        return str(spec.instance_type or self.profile.get("instance_type") or self.default_type)

    def placements(self, spec: LaunchSpec) -> Iterator[Event | Placement | Failure]:
        """Checks and preparation first (a real cloud: image, key, firewall), then where to
        try, in order."""
        itype = self._type(spec)
        regions = [spec.region] if spec.region else list(spec.regions or InMemoryCloud.REGIONS)
        yield Provisioning(spec.run_id, self.name, f"{itype} in {', '.join(regions)}")
        price = next((t.price_per_hour for t in InMemoryCloud.TYPES if t.name == itype), None)
        for region in regions:
            yield Placement(region, price_per_hour=price, data=(itype, region))

    def create(self, spec: LaunchSpec, placement: Placement) -> str:
        itype, region = placement.data
        tags = {  # at create time, never after: a crash in between must leave no orphan
            TAG_RUN: spec.run_id,
            TAG_MANAGED: "true",
            TAG_INSTALLATION: self.settings.installation_id,
        }
        create = self._cloud().create
        try:
            machine = self._call(
                f"create {itype} in {region}", create, f"gpuctl-{spec.run_id}", region, itype, tags
            )
        except CapacityError as exc:  # nothing made: the core tries the next placement
            raise Unplaced(Failure(placement.where, CAPACITY, exc.message, exc)) from None
        except AnswerLost as exc:  # it may exist: the core looks for it by its run tag
            raise Ambiguous(exc) from None
        return str(machine.id)

    def find_created(self, spec: LaunchSpec, placement: Placement) -> str | None:
        machines = self._call("list machines", self._cloud().list, TAG_RUN)
        return next((m.id for m in machines if m.tags.get(TAG_RUN) == spec.run_id), None)

    def describe(self, instance_id: str, placement: Placement) -> Look:
        found = self.get_instance(instance_id)
        if found is None:
            return Look(ended="it was deleted")
        return Look(found, up=found.state == InstanceState.RUNNING)

    def end(self, instance_id: str, placement: Placement) -> None:
        try:
            self._call(f"delete {instance_id}", self._cloud().delete, instance_id)
        except NotFoundError:
            pass  # already gone

    def pacing(self) -> Pacing:
        return Pacing(self.timeout, self.poll_seconds)

    def explain(self, spec: LaunchSpec, failures: Sequence[Failure]) -> GpuctlError | None:
        # The core's "could not launch X after N tries: ..." with the type it would launch;
        # a cloud words its own kinds here (AWS: the vCPU quota's name and where to raise it).
        return provision.no_room(self._type(spec), failures)

    # -- the other verbs ------------------------------------------------------------------

    def get_instance(self, instance_id: str) -> Instance | None:
        try:
            return self._instance(self._call(f"get {instance_id}", self._cloud().get, instance_id))
        except NotFoundError:
            return None

    def stop(self, instance: Instance) -> None:
        self._call(f"stop {instance.id}", self._cloud().power, instance.id, False)

    def start(self, instance: Instance) -> None:
        self._call(f"start {instance.id}", self._cloud().power, instance.id, True)

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        """Delete; with wait, return only once the cloud says it is gone (billing ended)."""
        try:
            self._call(f"delete {instance.id}", self._cloud().delete, instance.id)
        except NotFoundError:
            return  # already gone: terminating twice is not an error
        deadline = time.monotonic() + self.timeout
        while wait and self.get_instance(instance.id) is not None:
            if time.monotonic() > deadline:
                raise ProviderError(f"{instance.id} still exists after delete (still billed?)")
            time.sleep(self.poll_seconds)

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        """The machine's address, unless the profile overrides it (emulators, tests)."""
        key = self.profile.get("ssh_key")
        user = str(self.profile.get("ssh_user") or "root")
        return provision.ssh_target(
            self.profile, instance, user=user, key_path=str(key) if key else None
        )

    def host(self, instance: Instance) -> Host:
        from gpuctl.remote.ssh_host import SshHost

        target = self.ssh_target(instance)
        if target is None:
            raise ProviderError(f"{instance.id} has no address yet ({instance.raw_state})")
        return SshHost(target, self.settings)

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        """Stop the trainer only: powering off would not end billing on every cloud."""
        return {"action": SHUTDOWN_NONE}
