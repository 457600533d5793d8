"""One fixture per driver, each yielding a ready provider and a spec factory (`Driver`).

Every driver is built through the registry (`get_provider`) on a profile, as gpuctl does,
and reaches only loopback: local is this machine, ssh is the test sshd, aws is moto,
digitalocean and amd are the fake API, skeleton is the in-memory cloud of
skeleton_provider.py. Machines that would be reached over SSH are reached at the test
sshd through the profile's ssh_host override, never at the fake public address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gpuctl import driver_registry
from gpuctl import settings as settings_mod
from gpuctl.models import Instance, LaunchSpec
from gpuctl.providers.base import Provider, get_provider
from gpuctl.settings import BUILTIN_PROFILES, Profile, Settings
from gpuctl.state import Store
from tests.aws.conftest import aws, moto_server, spot_market  # noqa: F401  (fixtures)
from tests.do.util import AMD_TOKEN, DO_TOKEN, Clock
from tests.fakes.do_api import FakeDigitalOcean
from tests.fixtures.sshd import SshdServer, free_port

RUN = "conform-261203-a1b2"
PRICE = 0.25  # what local and ssh profiles say the machine costs (their price is the profile's)
SKELETON = "tests.conformance.skeleton_provider:SkeletonProvider"
DRIVERS = ("local", "ssh", "aws", "digitalocean", "amd", "skeleton")
WITH_API = ("aws", "digitalocean", "amd", "skeleton")  # the drivers that call a cloud API


@dataclass
class Driver:
    """A ready provider, how to make another (a new process on the same profile and
    state), a region it offers machines in (None: its machines have no region) and a
    LaunchSpec factory with what a launch on it needs."""

    kind: str
    profile: Profile
    settings: Settings
    region: str | None
    spec_defaults: dict[str, Any]
    tune: Callable[[Any], None] = lambda provider: None
    # Makes every call to the cloud's API fail from now on; None: there is no API (local is
    # this machine, ssh's inventory is the state store).
    outage: Callable[[], None] | None = None

    def make(self) -> Provider:
        provider = get_provider(self.profile, self.settings)
        self.tune(provider)
        return provider

    def spec(self, **changes: Any) -> LaunchSpec:
        values: dict[str, Any] = {
            "run_id": RUN,
            "preset": "validate",
            "provider": self.profile.name,
            "max_hours": 1.0,
            **self.spec_defaults,
            **changes,
        }
        return LaunchSpec(**values)

    def record(self, instance: Instance) -> None:
        """What the lifecycle does with a launched machine: keep it in the state store."""
        with Store(self.settings.state_path) as store:
            store.put_instance(instance)


def _ssh_override(sshd: SshdServer) -> dict[str, Any]:
    """Profile options that send SSH to the test sshd instead of the machine's address."""
    return {
        "ssh_host": sshd.host,
        "ssh_port": sshd.port,
        "ssh_user": sshd.user,
        "ssh_key": str(sshd.key_path),
    }


@pytest.fixture
def settings() -> Settings:
    return settings_mod.load()


@pytest.fixture
def local_driver(settings: Settings) -> Driver:
    profile = Profile(name="local", provider="local", options={"price_per_hour": PRICE})
    return Driver("local", profile, settings, region="local", spec_defaults={})


@pytest.fixture
def ssh_driver(
    settings: Settings, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Driver]:
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", "/dev/null")
    options = {"price_per_hour": PRICE, "identity": str(sshd.key_path)}
    profile = Profile(name="ssh", provider="ssh", options=options)
    yield Driver("ssh", profile, settings, region=None, spec_defaults={"host": sshd.spec})


@pytest.fixture
def aws_driver(
    settings: Settings,
    aws: str,  # noqa: F811  (the moto fixture, reset for this test)
    spot_market: Any,  # noqa: F811
    sshd: SshdServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Driver:
    options = {
        "regions": ["us-east-1"],
        "ssh_cidr": "203.0.113.7/32",  # a documentation address: no caller lookup
        "poll_seconds": 0.01,
        "max_attempts": 2,
        "launch_timeout": 5,
        "terminate_timeout": 5,
        **_ssh_override(sshd),
    }
    profile = Profile(name="aws", provider="aws", options=options)
    defaults = {"instance_type": "g4dn.xlarge"}

    def outage() -> None:  # the endpoint stops answering: a closed port on loopback
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")

    return Driver(
        "aws", profile, settings, region="us-east-1", spec_defaults=defaults, outage=outage
    )


def _do_driver(
    name: str,
    token: str,
    region: str,
    settings: Settings,
    sshd: SshdServer,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Driver]:
    api = FakeDigitalOcean(token=token, name=name).start()
    options = {k: v for k, v in BUILTIN_PROFILES[name].items() if k != "provider"}
    options.update(endpoint=api.url, ssh_cidr="203.0.113.7/32", **_ssh_override(sshd))
    monkeypatch.setenv(str(options["token_env"]), token)
    clock = Clock()

    def tune(provider: Any) -> None:  # the driver's seams: no real sleeping
        provider._sleep = clock.sleep
        provider._clock = clock

    profile = Profile(name=name, provider="digitalocean", options=options)
    try:
        yield Driver(
            name,
            profile,
            settings,
            region=region,
            spec_defaults={},
            tune=tune,
            outage=lambda: api.inject(500, times=10_000),
        )
    finally:
        api.close()


@pytest.fixture
def digitalocean_driver(
    settings: Settings, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Driver]:
    yield from _do_driver("digitalocean", DO_TOKEN, "nyc2", settings, sshd, monkeypatch)


@pytest.fixture
def amd_driver(
    settings: Settings, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Driver]:
    yield from _do_driver("amd", AMD_TOKEN, "atl1", settings, sshd, monkeypatch)


@pytest.fixture
def skeleton_driver(
    settings: Settings, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> Iterator[Driver]:
    from tests.conformance import skeleton_provider

    # Step 3 of providers/README.md, undone after the test: kind -> "module:Class".
    monkeypatch.setitem(driver_registry._REGISTRY, "skeleton", SKELETON)
    endpoint = f"memory://{tmp_path}"  # a fresh cloud for this test
    options = {"endpoint": endpoint, **_ssh_override(sshd)}
    profile = Profile(name="skeleton", provider="skeleton", options=options)

    def outage() -> None:
        skeleton_provider.cloud_for(endpoint).down = True

    yield Driver("skeleton", profile, settings, region="zone-a", spec_defaults={}, outage=outage)
    skeleton_provider.CLOUDS.pop(endpoint, None)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> Driver:
    """Each driver in turn; the test is the same for all of them."""
    return request.getfixturevalue(f"{request.param}_driver")  # type: ignore[no-any-return]
