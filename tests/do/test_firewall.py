"""The cloud firewall in front of gpuctl's droplets, against the fake DO API via real pydo."""

from __future__ import annotations

import pytest

from gpuctl.errors import ConfigError, CredentialsError
from gpuctl.events import Notice
from gpuctl.models import LaunchSpec
from tests.do.conftest import MakeProvider
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean


def spec(run_id: str = "validate-261123-a1b2", **kw: object) -> LaunchSpec:
    base: dict[str, object] = {
        "run_id": run_id,
        "preset": "validate",
        "provider": "amd",
        "max_hours": 2.0,
    }
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def warnings(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]


def test_droplet_is_behind_a_firewall_that_lets_only_the_caller_in(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    events, inst = drain(make_provider(fake).launch(spec()))
    droplet_id = int(inst.id)
    assert fake.ssh_sources(droplet_id) == {"203.0.113.7/32"}
    (firewall,) = fake.firewalls_of(droplet_id)
    assert firewall["name"] == "gpuctl-ssh" and firewall["tags"] == ["gpuctl-ssh"]
    # Outbound stays open: the trainer still reaches package mirrors and data sets.
    assert {r["protocol"] for r in firewall["outbound_rules"]} == {"tcp", "udp", "icmp"}
    # The firewall existed before the droplet: no moment with SSH open to everyone.
    paths = [(r.method, r.path) for r in fake.requests]
    assert paths.index(("POST", "/v2/firewalls")) < paths.index(("POST", "/v2/droplets"))
    assert not warnings(events)


def test_one_firewall_serves_every_launch_and_follows_the_callers_address(
    fake: FakeDigitalOcean, make_provider: MakeProvider, checkip: object
) -> None:
    provider = make_provider(fake, ssh_cidr=None, checkip_url=checkip.url)  # type: ignore[attr-defined]
    checkip.address = "198.51.100.1"  # type: ignore[attr-defined]
    _, first = drain(provider.launch(spec("validate-261123-aaaa")))
    assert fake.ssh_sources(int(first.id)) == {"198.51.100.1/32"}
    # A colleague on the same account added their own address to the shared rule.
    (firewall,) = fake.firewalls.values()
    firewall["inbound_rules"][0]["sources"]["addresses"].append("192.0.2.50/32")

    checkip.address = "198.51.100.2"  # type: ignore[attr-defined]  # the laptop moved
    _, second = drain(provider.launch(spec("validate-261123-bbbb")))
    assert len(fake.firewalls) == 1 and len(fake.calls("POST", "/v2/firewalls")) == 1
    for inst in (first, second):
        assert fake.ssh_sources(int(inst.id)) == {"198.51.100.2/32", "192.0.2.50/32"}

    drain(provider.launch(spec("validate-261123-cccc")))  # same address: nothing to change
    assert len(fake.calls("PUT", "/v2/firewalls")) == 1


@pytest.mark.parametrize("wide", ["0.0.0.0/0", "::/0"])
def test_open_ssh_needs_the_flag_and_warns(
    fake: FakeDigitalOcean, make_provider: MakeProvider, wide: str
) -> None:
    provider = make_provider(fake)
    with pytest.raises(ConfigError) as info:
        drain(provider.launch(spec(options={"ssh_cidr": wide})))
    assert "--allow-open-ssh" in (info.value.hint or "")
    assert fake.droplets == {} and fake.firewalls == {}

    events, inst = drain(provider.launch(spec(options={"ssh_cidr": wide, "allow_open_ssh": True})))
    assert wide in (fake.ssh_sources(int(inst.id)) or set())
    assert warnings(events) == [
        f"SSH is open to {wide}: anyone there can try to log in (keys only)"
    ]


def test_cloud_without_firewalls_launches_and_says_ssh_is_open(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    fake.firewalls_supported = False
    events, inst = drain(make_provider(fake).launch(spec()))
    assert fake.ssh_sources(int(inst.id)) is None
    (warning,) = warnings(events)
    assert "no cloud firewalls" in warning and "open to the internet" in warning


def test_token_without_firewall_scope_is_one_clear_error(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    fake.inject(403, path_prefix="/v2/firewalls")
    with pytest.raises(CredentialsError) as info:
        drain(make_provider(fake).launch(spec()))
    assert "firewall" in info.value.message and "firewall = false" in (info.value.hint or "")
    assert fake.droplets == {}
