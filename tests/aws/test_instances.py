"""Listing across regions, lookup, stop/start, terminate-and-verify, orphans, SSH target."""

from __future__ import annotations

import time
from typing import Any

import pytest

from gpuctl.errors import ConfigError, ProviderError
from gpuctl.models import InstanceState, Market, Run, RunStatus
from gpuctl.providers.base import SHUTDOWN_POWEROFF
from gpuctl.state import Store

from .helpers import boto, inject, on
from .test_launch import drive, spec


def unmanaged(region: str) -> str:
    """An instance someone made by hand (no gpuctl tags)."""
    ec2 = boto(region)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    made = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)
    return str(made["Instances"][0]["InstanceId"])


def test_list_spans_regions_and_reports_a_failed_region(make_provider: Any) -> None:
    regions = ["us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1"]
    provider = make_provider(regions=regions)
    east, _ = drive(make_provider(regions=["us-east-1"]).launch(spec(run_id="r-east")))
    west, _ = drive(make_provider(regions=["us-west-2"]).launch(spec(run_id="r-west")))
    hand = unmanaged("us-west-2")

    def tokyo_is_down(region: str, params: dict[str, Any]) -> Exception | None:
        from botocore.exceptions import EndpointConnectionError

        if region == "ap-northeast-1":
            return EndpointConnectionError(endpoint_url="https://ec2.ap-northeast-1.amazonaws.com")
        return None

    inject(provider, "DescribeInstances", tokyo_is_down)
    listing = provider.list_instances()

    assert [(i.id, i.region, i.run_id) for i in listing.instances] == [
        (east.id, "us-east-1", "r-east"),
        (west.id, "us-west-2", "r-west"),
    ]
    assert all(i.managed and i.state == InstanceState.RUNNING for i in listing.instances)
    assert all(
        i.public_ip and i.launched_at and i.market == Market.ON_DEMAND for i in listing.instances
    )
    assert listing.instances[0].price_per_hour == pytest.approx(1.006)
    assert not listing.complete
    ((where, reason),) = listing.errors
    assert where == "ap-northeast-1"
    assert "cannot reach https://ec2.ap-northeast-1.amazonaws.com in ap-northeast-1" in reason
    assert "\n" not in reason

    everything = provider.list_instances(include_unmanaged=True)
    mine = {i.id: i for i in everything.instances}
    assert hand in mine and mine[hand].managed is False and mine[hand].run_id is None
    assert mine[hand].gpu_count == 0 and mine[hand].price_per_hour is None


def test_list_includes_regions_gpuctl_launched_in(make_provider: Any) -> None:
    """A fallback into an unlisted region must never leave a forgotten, billed instance."""
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec(regions=("eu-west-1",))))
    later = make_provider(regions=["us-east-1"])  # a new process, same state store
    assert [i.id for i in later.list_instances().instances] == [instance.id]


def test_get_instance_finds_region_and_says_none_when_gone(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec(regions=("us-west-2",))))
    fresh = make_provider(regions=["us-east-1", "us-west-2"])
    found = fresh.get_instance(instance.id)
    assert found is not None and found.region == "us-west-2" and found.run_id == "r-abc123"
    fresh.terminate(found)
    assert fresh.get_instance(instance.id) is None
    assert fresh.get_instance("i-0123456789abcdef0") is None


def test_terminate_waits_until_really_terminated(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec()))
    polls: list[str] = []

    def slow_shutdown(parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed.get("Reservations", []):
            for item in reservation["Instances"]:
                if item["State"]["Name"] == "terminated" and len(polls) < 3:
                    item["State"] = {"Code": 32, "Name": "shutting-down"}
                polls.append(item["State"]["Name"])

    on(provider, "after-call.ec2.DescribeInstances", slow_shutdown)
    provider.terminate(instance)
    assert polls == ["shutting-down"] * 3 + ["terminated"]
    state = boto("us-east-1").describe_instances(InstanceIds=[instance.id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    provider.terminate(instance)  # terminating twice is fine


def test_terminate_gives_up_after_its_bound(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-1"], terminate_timeout=0.2)
    instance, _ = drive(provider.launch(spec()))

    def stuck(parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed.get("Reservations", []):
            for item in reservation["Instances"]:
                item["State"] = {"Code": 32, "Name": "shutting-down"}

    on(provider, "after-call.ec2.DescribeInstances", stuck)
    started = time.monotonic()
    with pytest.raises(ProviderError) as err:
        provider.terminate(instance)
    assert time.monotonic() - started < 3
    assert f"{instance.id} is still 'shutting-down'" in err.value.message
    provider.terminate(instance, wait=False)  # no wait: returns at once


def test_stop_and_start_on_demand_but_not_spot(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec()))
    provider.stop(instance)
    stopped = provider.get_instance(instance.id)
    assert stopped is not None and stopped.state in (InstanceState.STOPPING, InstanceState.STOPPED)
    provider.start(stopped)
    assert provider.get_instance(instance.id).state in (
        InstanceState.PENDING,
        InstanceState.RUNNING,
    )

    spot, _ = drive(provider.launch(spec(run_id="r-spot", spot=True)))
    with pytest.raises(ConfigError, match="spot instance and cannot be stopped"):
        provider.stop(spot)


def test_orphan_sweep_finds_tagged_instances_without_a_live_run(
    make_provider: Any, settings: Any
) -> None:
    provider = make_provider(regions=["us-east-1"])
    live, _ = drive(provider.launch(spec(run_id="r-live")))
    orphan, _ = drive(provider.launch(spec(run_id="r-orphan")))
    now = time.time()
    with Store(settings.state_path) as store:
        store.add_run(Run("r-live", "fast", "aws-test", RunStatus.RUNNING, now, now, live.id))
        store.add_run(Run("r-orphan", "fast", "aws-test", RunStatus.FINISHED, now, now, orphan.id))
        active = {r.id for r in store.list_runs() if r.status.active}

    # What `gpuctl down --orphans` does with the listing: tagged, no live run -> terminate.
    orphans = [
        i for i in provider.list_instances().instances if i.managed and i.run_id not in active
    ]
    assert [i.id for i in orphans] == [orphan.id]
    for instance in orphans:
        provider.terminate(instance)
    assert [i.id for i in provider.list_instances().instances] == [live.id]


def test_ssh_target_overrides_and_agent_shutdown(make_provider: Any, tmp_path: Any) -> None:
    key = tmp_path / "id_test"
    key.write_text("not a real key")
    plain = make_provider(regions=["us-east-1"])
    instance, _ = drive(plain.launch(spec()))
    assert plain.agent_shutdown(instance) == {
        "action": SHUTDOWN_POWEROFF,
        "command": ["sudo", "shutdown", "-h", "now"],
    }

    emulator = make_provider(
        regions=["us-east-1"],
        ssh_host="127.0.0.1",
        ssh_port=2222,
        ssh_user="tester",
        ssh_key=str(key),
        shutdown_command=["true"],
    )
    target = emulator.ssh_target(instance)
    assert (target.host, target.port, target.user, target.key_path) == (
        "127.0.0.1",
        2222,
        "tester",
        str(key),
    )
    assert emulator.agent_shutdown(instance) == {"action": SHUTDOWN_POWEROFF, "command": ["true"]}
    gone = instance.evolve(public_ip=None)
    assert plain.ssh_target(gone) is None
    with pytest.raises(ProviderError, match="no public address"):
        plain.host(gone)


def test_instances_launched_with_another_aws_profile_stay_visible(
    make_provider: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\naws_access_key_id = other\naws_secret_access_key = other\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    launcher = make_provider(regions=["us-east-1"])
    instance, _ = drive(launcher.launch(spec(region="eu-west-1", options={"aws_profile": "other"})))

    later = make_provider(regions=["us-east-1"])  # a new process: only the state store knows
    assert ("eu-west-1", "other") in later._list_targets()
    (listed,) = later.list_instances().instances
    assert listed.id == instance.id
    assert later._target_of(listed) == ("eu-west-1", "other")
    later.terminate(listed)
    assert later.get_instance(instance.id) is None
    assert ("eu-west-1", "other") in {(r, p) for (_, r, p) in later._clients}
