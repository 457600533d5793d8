"""The `ssh` provider: bring your own box, never created, never powered off."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gpuctl.errors import ConfigError, RemoteError
from gpuctl.events import Provisioning
from gpuctl.models import Instance, InstanceState, LaunchSpec, Run, RunStatus
from gpuctl.providers.base import get_provider
from gpuctl.providers.ssh import SshProvider, instance_id
from gpuctl.remote.endpoint import parse_host_spec
from gpuctl.remote.ssh_host import SshHost
from gpuctl.settings import Settings
from gpuctl.state import Store
from tests.events import drain as drive
from tests.fixtures.sshd import SshdServer, free_port


@pytest.fixture
def provider(settings: Settings) -> SshProvider:
    p = get_provider(settings.profile("ssh"), settings)
    assert isinstance(p, SshProvider)
    return p


def spec(host: str | None, identity: str | None = None) -> LaunchSpec:
    return LaunchSpec(run_id="r-1", preset="validate", provider="ssh", host=host, identity=identity)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("ubuntu@1.2.3.4", ("ubuntu", "1.2.3.4", None)),
        ("ubuntu@1.2.3.4:2222", ("ubuntu", "1.2.3.4", 2222)),
        ("gpubox", (None, "gpubox", None)),
        ("root@[::1]:22", ("root", "::1", 22)),
        ("::1", (None, "::1", None)),
    ],
)
def test_parse_host_spec(text: str, parsed: tuple[Any, ...]) -> None:
    assert parse_host_spec(text) == parsed


@pytest.mark.parametrize("bad", ["", "u@h:0", "u@h:99999", "u@h:x", "u@[::1"])
def test_bad_host_specs_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_host_spec(bad)


def test_provider_shape(provider: SshProvider) -> None:
    assert provider.kind == "ssh" and provider.billing.per_second
    assert provider.billing.minimum_seconds == 0
    (offer,) = provider.offers()
    assert offer.price_per_hour == 0.0
    provider.check()


@pytest.mark.sshd
def test_launch_checks_the_box_and_creates_nothing(
    provider: SshProvider, sshd: SshdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUCTL_SSH_CONFIG", "/dev/null")
    events, inst = drive(provider.launch(spec(sshd.spec, str(sshd.key_path))))
    assert isinstance(events[0], Provisioning)
    assert inst.id == f"{sshd.user}@127.0.0.1:{sshd.port}" and inst.provider == "ssh"
    assert inst.state == InstanceState.RUNNING and not inst.managed
    assert inst.ssh_port == sshd.port and inst.run_id == "r-1"
    target = provider.ssh_target(inst)
    assert (target.host, target.port, target.key_path) == (
        "127.0.0.1",
        sshd.port,
        str(sshd.key_path),
    )
    host = provider.host(inst)
    assert isinstance(host, SshHost) and host is provider.host(inst)  # one connection per box
    assert host.exec("echo hi").stdout == "hi\n"
    assert provider.agent_shutdown(inst) == {"action": "none"}
    provider.stop(inst)  # nothing to power off
    provider.terminate(inst)  # forgets it: the box still answers
    assert SshHost(target, provider.settings).exec("true").ok


@pytest.mark.sshd
def test_launch_on_a_closed_port_fails_fast(provider: SshProvider, sshd: SshdServer) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError, match="refused"):
        drive(provider.launch(spec(f"{sshd.user}@127.0.0.1:{free_port()}", str(sshd.key_path))))
    assert time.monotonic() - started < 5


def test_launch_without_host_is_a_config_error(provider: SshProvider) -> None:
    with pytest.raises(ConfigError, match="--host"):
        drive(provider.launch(spec(None)))


def test_list_instances_comes_from_the_state_store(
    provider: SshProvider, settings: Settings
) -> None:
    assert provider.list_instances().instances == ()
    target = provider.target("alice@10.0.0.5:2200", "/keys/id")
    inst = provider._instance(target, run_id="old")
    now = time.time()
    with Store(settings.state_path) as store:
        store.put_instance(inst)
        store.add_run(
            Run(
                id="live",
                preset="validate",
                provider="ssh",
                status=RunStatus.RUNNING,
                created_at=now,
                updated_at=now,
                instance_id=inst.id,
            )
        )
    (listed,) = provider.list_instances().instances
    assert listed.id == "alice@10.0.0.5:2200" == instance_id(target)
    assert listed.run_id == "live" and listed.state == InstanceState.RUNNING
    assert not listed.managed
    again = provider.ssh_target(listed)
    assert (again.user, again.host, again.port, again.key_path) == (
        "alice",
        "10.0.0.5",
        2200,
        "/keys/id",
    )
    fresh = provider.get_instance("bob@10.0.0.6:22")
    assert isinstance(fresh, Instance) and fresh.ssh_user == "bob"
