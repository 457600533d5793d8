"""Listing with pagination, power off (still billed), power on, destroy and verify."""

from __future__ import annotations

import pytest

from gpuctl.errors import NotFoundError, ProviderError
from gpuctl.models import InstanceState, LaunchSpec
from tests.do.conftest import MakeProvider
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean


def launch(provider, run_id: str = "validate-261123-a1b2"):
    spec = LaunchSpec(run_id=run_id, preset="validate", provider="amd", max_hours=1.0)
    return drain(provider.launch(spec))[1]


def test_listing_follows_three_pages(fake: FakeDigitalOcean, make_provider: MakeProvider):
    for n in range(5):
        fake.seed_droplet(f"gpuctl-run{n}", tags=["gpuctl", f"gpuctl-run-run{n}"])
    fake.seed_droplet("someone-elses", tags=["web"])
    fake.seed_droplet("untagged")
    fake.max_per_page = 2

    listing = make_provider(fake).list_instances()
    assert listing.complete and listing.provider == "amd"
    assert sorted(i.run_id or "" for i in listing.instances) == [f"run{n}" for n in range(5)]
    assert all(i.managed and i.state == InstanceState.RUNNING for i in listing.instances)
    pages = [r.query.get("page") for r in fake.calls("GET", "/v2/droplets")]
    assert pages == ["1", "2", "3"]
    assert all(r.query.get("tag_name") == "gpuctl" for r in fake.calls("GET", "/v2/droplets"))

    everything = make_provider(fake).list_instances(include_unmanaged=True)
    assert len(everything.instances) == 7
    unmanaged = [i for i in everything.instances if not i.managed]
    assert {i.name for i in unmanaged} == {"someone-elses", "untagged"}
    assert all(i.run_id is None for i in unmanaged)


def test_instance_fields_from_the_droplet(fake: FakeDigitalOcean, make_provider: MakeProvider):
    inst = launch(make_provider(fake))
    again = make_provider(fake).get_instance(inst.id)
    assert again is not None
    assert again.to_dict() == inst.to_dict()
    assert inst.launched_at and inst.disk_gb == 720 and inst.ssh_user == "root"
    mine = f"gpuctl-inst-{inst.owner}"
    assert inst.tags == {
        "gpuctl": "",
        "gpuctl-run-validate-261123-a1b2": "",
        "gpuctl-ssh": "",
        mine: "",
    }
    assert inst.owner == make_provider(fake).settings.installation_id


def test_power_off_is_flagged_still_billed_and_power_on_resumes(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    inst = launch(provider)
    provider.stop(inst)
    off = provider.get_instance(inst.id)
    assert off is not None and off.state == InstanceState.STOPPED and off.raw_state == "off"
    assert provider.billing.billed_when_stopped  # DigitalOcean bills powered-off droplets
    assert off.price_per_hour == 1.99
    (action,) = fake.calls("POST", f"/v2/droplets/{inst.id}/actions")
    assert action.body == {"type": "power_off"}

    provider.stop(off)  # already off: no second action
    assert len(fake.calls("POST", f"/v2/droplets/{inst.id}/actions")) == 1
    provider.start(off)
    on = provider.get_instance(inst.id)
    assert on is not None and on.state == InstanceState.RUNNING


def test_powered_off_behind_our_back_is_seen_as_stopped(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    inst = launch(provider)
    fake.power_off(int(inst.id))  # the boot guard fired on the machine
    (seen,) = provider.list_instances().instances
    assert seen.state == InstanceState.STOPPED


def test_action_timeout_is_bounded(fake: FakeDigitalOcean, make_provider: MakeProvider):
    provider = make_provider(fake, action_timeout=30)
    inst = launch(provider)
    fake.action_after = 10**6
    with pytest.raises(ProviderError) as err:
        provider.stop(inst)
    assert "still in progress" in err.value.message


def test_terminate_destroys_and_verifies_404(fake: FakeDigitalOcean, make_provider: MakeProvider):
    provider = make_provider(fake)
    inst = launch(provider)
    fake.destroy_lag = 2  # the API still shows it for a moment
    provider.terminate(inst)
    assert fake.droplets == {}
    gets = [r for r in fake.calls("GET", f"/v2/droplets/{inst.id}")]
    assert len(gets) >= 3  # saw it twice more, then the 404
    assert provider.get_instance(inst.id) is None
    provider.terminate(inst)  # already gone: fine


def test_terminate_that_never_disappears_says_so(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake, action_timeout=20)
    inst = launch(provider)
    fake.destroy_lag = 10**6
    with pytest.raises(ProviderError) as err:
        provider.terminate(inst)
    assert "still exists" in err.value.message and "billed" in err.value.message


def test_terminate_without_wait_returns_at_once(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    inst = launch(provider)
    provider.terminate(inst, wait=False)
    assert fake.droplets == {}


def test_missing_droplet_is_none_and_actions_say_not_found(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    inst = launch(provider)
    assert provider.get_instance("999999") is None
    assert provider.get_instance("not-a-droplet") is None
    provider.terminate(inst)
    with pytest.raises(NotFoundError):
        provider.stop(inst)
    with pytest.raises(NotFoundError):
        provider.start(inst)


def test_ssh_target_default_and_emulator_overrides(
    fake: FakeDigitalOcean, make_provider: MakeProvider, tmp_path
):
    provider = make_provider(fake)
    inst = launch(provider)
    target = provider.ssh_target(inst)
    assert target is not None
    assert (target.host, target.port, target.user) == (inst.public_ip, 22, "root")
    assert target.key_path == str(provider.settings.keys_dir / "digitalocean_ed25519")

    key = tmp_path / "id_test"
    emulated = make_provider(
        fake, ssh_host="127.0.0.1", ssh_port=2222, ssh_user="tester", ssh_key=str(key)
    )
    target = emulated.ssh_target(inst)
    assert target is not None
    assert (target.host, target.port, target.user, target.key_path) == (
        "127.0.0.1",
        2222,
        "tester",
        str(key),
    )


def test_agent_shutdown_poweroff_override_and_destroy(
    fake: FakeDigitalOcean, make_provider: MakeProvider
):
    provider = make_provider(fake)
    inst = launch(provider)
    assert provider.agent_shutdown(inst) == {
        "action": "poweroff",
        "command": ["shutdown", "-h", "now"],
    }
    safe = make_provider(fake, shutdown_command=["true"])
    assert safe.agent_shutdown(inst)["command"] == ["true"]

    destroy = make_provider(fake, agent_destroy=True).agent_shutdown(inst)
    assert destroy["action"] == "destroy" and destroy["droplet_id"] == inst.id
    # The agent gets its own droplet-scoped token, never the full-access one.
    assert destroy["api"] == fake.url and destroy["token_env"] == "AMD_DEVCLOUD_AGENT_TOKEN"
    assert not any("amddev_" in str(v) for v in destroy.values())  # never the token itself


def test_agent_destroys_by_default_once_a_scoped_token_is_set(
    fake: FakeDigitalOcean, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
):
    provider = make_provider(fake)
    inst = launch(provider)
    monkeypatch.setenv("AMD_DEVCLOUD_AGENT_TOKEN", "dop_v1_scoped")
    assert provider.agent_shutdown(inst)["action"] == "destroy"
    off = make_provider(fake, agent_destroy=False).agent_shutdown(inst)
    assert off["action"] == "poweroff"


def test_destroy_refused_while_busy_is_retried(fake: FakeDigitalOcean, make_provider: MakeProvider):
    provider = make_provider(fake)
    inst = launch(provider)
    fake.inject(422, method="DELETE", message="Droplet already has a pending event.")
    provider.terminate(inst)
    assert fake.droplets == {} and len(fake.calls("DELETE")) == 2
