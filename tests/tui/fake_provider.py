"""A provider with as many instances as a test wants, no network, and switchable failures.

Registered as kind "fake" by tests/tui/conftest.py. A profile sets `count` (instances),
`fail` ("credentials" or "error": list_instances raises) and `price`. Calls that change
anything are recorded in FakeProvider.calls so a test can assert what the UI asked for;
the class-level state is reset by a fixture before each test. `latency` (seconds) makes
each listing sleep first, like a cloud API answering over the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any, ClassVar

from gpuctl.errors import CredentialsError, NotFoundError, ProviderError
from gpuctl.events import Event, Provisioning
from gpuctl.models import Instance, InstanceState, LaunchSpec, Market, Offer, SshTarget
from gpuctl.ownership import installation_id
from gpuctl.providers.base import FLAGS, SHUTDOWN_NONE, Billing, Capability, Listing
from gpuctl.settings import Profile, Settings

# A fixed epoch so listings (and snapshots) never depend on the wall clock.
BASE_TIME = 1_767_268_800.0  # 2026-01-01 12:00 UTC
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
TYPES = (
    ("g5.xlarge", "A10G", 1, 1.006, 0.35),
    ("g4dn.xlarge", "T4", 1, 0.526, 0.21),
    ("p3.8xlarge", "V100", 4, 12.24, 3.67),
    ("g5.12xlarge", "A10G", 4, 5.672, 2.1),
)
STATES = (
    InstanceState.RUNNING,
    InstanceState.RUNNING,
    InstanceState.RUNNING,
    InstanceState.STOPPED,
    InstanceState.PENDING,
)


def _this_installation() -> str | None:
    """The managed fakes are this test home's own, tagged like a real provider's."""
    home = os.environ.get("GPUCTL_HOME")
    return installation_id(Path(home)) if home else None


def make_instance(profile: str, i: int, now: float = BASE_TIME) -> Instance:
    itype, gpu, count, price, spot = TYPES[i % len(TYPES)]
    managed = i % 3 != 0
    market = Market.SPOT if i % 7 == 0 else Market.ON_DEMAND
    return Instance(
        provider=profile,
        id=f"i-{i:05d}",
        name=f"box-{i:04d}",
        region=REGIONS[i % len(REGIONS)],
        instance_type=itype,
        state=STATES[i % len(STATES)],
        public_ip=f"10.0.{i // 250}.{i % 250}",
        launched_at=now - 60.0 * (i % 600 + 1),
        price_per_hour=spot if market == Market.SPOT else price,
        market=market,
        gpu_name=gpu,
        gpu_count=count,
        managed=managed,
        run_id=None,
        owner=_this_installation() if managed else None,
    )


class FakeProvider:
    kind: ClassVar[str] = "fake"
    billing: ClassVar[Billing] = Billing(per_second=True, minimum_seconds=60.0)
    launch_flags: ClassVar[frozenset[str]] = frozenset(FLAGS)
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    default_type: ClassVar[str | None] = None
    setup_seconds: ClassVar[float] = 300.0
    gpu_hints: ClassVar[tuple[tuple[str, str], ...]] = ()
    calls: ClassVar[list[tuple[str, str]]] = []
    gone: ClassVar[set[str]] = set()
    failing: ClassVar[dict[str, str]] = {}  # profile name -> "credentials" | "error"

    def __init__(self, profile: Profile, settings: Settings) -> None:
        self.profile = profile
        self.settings = settings
        self.name = profile.name
        self.count = int(profile.get("count", 1000))
        self.latency = float(profile.get("latency", 0.0))

    @classmethod
    def reset(cls) -> None:
        cls.calls.clear()
        cls.gone.clear()
        cls.failing.clear()

    def _fail(self) -> None:
        mode = self.failing.get(self.name) or self.profile.get("fail")
        if mode == "credentials":
            raise CredentialsError(
                f"{self.name}: no credentials found", hint="export FAKE_TOKEN=... and refresh"
            )
        if mode == "error":
            raise ProviderError(f"{self.name}: API timed out after 10s", hint="try again later")

    def check(self) -> None:
        self._fail()

    def offers(self, *, gpu: str | None = None, region: str | None = None) -> list[Offer]:
        self._fail()
        out = [
            Offer(
                provider=self.name,
                instance_type=itype,
                gpu_name=gpu_name,
                gpu_count=count,
                gpu_memory_gb=24.0 if gpu_name == "A10G" else 16.0,
                vcpus=4 * count,
                memory_gb=16.0 * count,
                price_per_hour=price,
                region="us-east-1",
                spot_price_per_hour=spot,
                spot_zone="us-east-1a",
                regions=("us-east-1", "us-west-2"),
            )
            for itype, gpu_name, count, price, spot in TYPES
        ]
        return sorted(out, key=lambda o: o.price_per_hour or 0.0)

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        if self.latency:
            time.sleep(self.latency)
        self._fail()
        items = tuple(
            inst
            for i in range(self.count)
            if (inst := make_instance(self.name, i)).id not in self.gone
        )
        return Listing(self.name, items)

    def launch(self, spec: LaunchSpec) -> Generator[Event, None, Instance]:
        self._fail()
        yield Provisioning(spec.run_id, self.name, "fake capacity")
        raise ProviderError("the fake provider cannot run a trainer", hint="use local")

    def get_instance(self, instance_id: str) -> Instance | None:
        if instance_id in self.gone:
            return None
        return make_instance(self.name, int(instance_id.removeprefix("i-")))

    def stop(self, instance: Instance) -> None:
        self.calls.append(("stop", instance.id))

    def start(self, instance: Instance) -> None:
        self.calls.append(("start", instance.id))

    def terminate(self, instance: Instance, *, wait: bool = True) -> None:
        self._fail()
        self.calls.append(("terminate", instance.id))
        self.gone.add(instance.id)

    def ssh_target(self, instance: Instance) -> SshTarget | None:
        return SshTarget(host=instance.public_ip or "10.0.0.1", user="ubuntu")

    def host(self, instance: Instance) -> Any:
        raise NotFoundError(f"{instance.id} is not reachable", hint="the fake has no machines")

    def agent_shutdown(self, instance: Instance) -> dict[str, Any]:
        return {"action": SHUTDOWN_NONE}
