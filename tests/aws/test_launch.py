"""Launch: everything the instance is created with, verified through describe calls."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Generator
from typing import Any

import pytest

from gpuctl.errors import CapacityError, ConfigError, QuotaError
from gpuctl.events import Attempt, Event, Notice, Provisioning
from gpuctl.models import Instance, InstanceState, LaunchSpec, Market

from .conftest import NEWEST_UBUNTU, register_ami
from .helpers import boto, client_error, inject, on


def spec(**changes: Any) -> LaunchSpec:
    base: dict[str, Any] = {
        "run_id": "r-abc123",
        "preset": "fast",
        "provider": "aws-test",
        "instance_type": "g5.xlarge",
        "disk_gb": 150,
        "max_hours": 4,
    }
    base.update(changes)
    return LaunchSpec(**base)


def drive(gen: Generator[Event, None, Instance]) -> tuple[Instance, list[Event]]:
    """Run a launch generator to the end like the lifecycle does."""
    events: list[Event] = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as done:
            return done.value, events


def offered_zones(region: str, itype: str) -> list[str]:
    offers = boto(region).describe_instance_type_offerings(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": [itype]}]
    )["InstanceTypeOfferings"]
    return sorted(o["Location"] for o in offers)


def attempts(events: list[Event]) -> list[tuple[str, bool]]:
    return [(e.where, e.ok) for e in events if isinstance(e, Attempt)]


def test_spot_launch_is_tagged_locked_down_and_guarded(
    make_provider: Any, spot_prices: Any, settings: Any
) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1a")] = 0.45
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1c")] = 0.35
    provider = make_provider(regions=["us-east-1"])

    instance, events = drive(provider.launch(spec(spot=True, max_price=0.6)))

    assert all(e.run_id == "r-abc123" for e in events)
    assert any(isinstance(e, Provisioning) for e in events)
    assert attempts(events) == [("us-east-1c spot", True)]  # the cheapest zone first
    assert instance.state == InstanceState.RUNNING and instance.public_ip
    assert (instance.market, instance.zone, instance.region) == (
        Market.SPOT,
        "us-east-1c",
        "us-east-1",
    )
    assert instance.price_per_hour == pytest.approx(0.35)  # the spot price at launch
    assert (instance.run_id, instance.managed, instance.provider) == ("r-abc123", True, "aws-test")
    assert (instance.gpu_name, instance.gpu_count, instance.ssh_user) == ("A10G", 1, "ubuntu")

    ec2 = boto("us-east-1")
    item = ec2.describe_instances(InstanceIds=[instance.id])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in item["Tags"]}
    assert tags["gpuctl:run"] == "r-abc123" and tags["gpuctl:preset"] == "fast"
    assert tags["gpuctl:managed"] == "true" and tags["Name"] == "gpuctl-r-abc123"
    assert item["InstanceLifecycle"] == "spot"
    assert item["MetadataOptions"]["HttpTokens"] == "required"
    image = ec2.describe_images(ImageIds=[item["ImageId"]])["Images"][0]
    assert image["Name"] == NEWEST_UBUNTU  # newest of the preferred Ubuntu PyTorch pattern

    behaviour = ec2.describe_instance_attribute(
        InstanceId=instance.id, Attribute="instanceInitiatedShutdownBehavior"
    )
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    raw = ec2.describe_instance_attribute(InstanceId=instance.id, Attribute="userData")
    user_data = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert "gpuctl boot guard for run r-abc123" in user_data and "shutdown -P +245" in user_data

    volumes = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}]
    )["Volumes"]
    assert [(v["Size"], v["VolumeType"]) for v in volumes] == [(150, "gp3")]
    vol_tags = {t["Key"]: t["Value"] for t in volumes[0]["Tags"]}
    assert vol_tags["gpuctl:run"] == "r-abc123" and vol_tags["gpuctl:managed"] == "true"
    assert vol_tags["gpuctl:preset"] == "fast" and vol_tags["Name"] == "gpuctl-r-abc123"

    (group,) = ec2.describe_security_groups(
        GroupIds=[g["GroupId"] for g in item["SecurityGroups"]]
    )["SecurityGroups"]
    assert group["GroupName"] == "gpuctl-ssh"
    assert {"Key": "gpuctl:managed", "Value": "true"} in group["Tags"]
    (rule,) = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["203.0.113.7/32"]

    (pair,) = ec2.describe_key_pairs(KeyNames=[item["KeyName"]])["KeyPairs"]
    assert pair["KeyName"].startswith("gpuctl-")
    assert {"Key": "gpuctl:managed", "Value": "true"} in pair["Tags"]
    key_file = settings.keys_dir / "aws_ed25519"
    assert stat.S_IMODE(os.stat(key_file).st_mode) in (0o400, 0o600)

    target = provider.ssh_target(instance)
    assert (target.host, target.port, target.user) == (instance.public_ip, 22, "ubuntu")
    assert target.key_path == str(key_file)


def test_second_launch_reuses_key_pair_and_security_group(
    make_provider: Any, spot_prices: Any
) -> None:
    provider = make_provider(regions=["us-east-1"])
    first, _ = drive(provider.launch(spec(run_id="r-one")))
    second, _ = drive(provider.launch(spec(run_id="r-two", options={"ssh_cidr": "198.51.100.9"})))
    ec2 = boto("us-east-1")
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["gpuctl-ssh"]}]
    )["SecurityGroups"]
    assert len(groups) == 1
    cidrs = {r["CidrIp"] for p in groups[0]["IpPermissions"] for r in p["IpRanges"]}
    assert cidrs == {"203.0.113.7/32", "198.51.100.9/32"}
    pairs = [k for k in ec2.describe_key_pairs()["KeyPairs"] if k["KeyName"].startswith("gpuctl")]
    assert len(pairs) == 1
    assert first.tags["gpuctl:key"] == second.tags["gpuctl:key"] == pairs[0]["KeyName"]
    assert first.market == Market.ON_DEMAND
    assert first.price_per_hour == pytest.approx(1.006)  # on-demand: the catalog rate


def test_capacity_falls_back_zone_then_region_then_on_demand(
    make_provider: Any, spot_prices: Any
) -> None:
    provider = make_provider(regions=["us-east-1", "us-west-2"])

    def no_spot_anywhere(region: str, params: dict[str, Any]) -> Exception | None:
        if "InstanceMarketOptions.MarketType" in params:
            return client_error(
                "InsufficientInstanceCapacity",
                "We currently do not have sufficient g5.xlarge capacity in the zone you requested.",
            )
        if region == "us-east-1":
            return client_error("InsufficientInstanceCapacity", "no on-demand capacity either")
        return None

    calls = inject(provider, "RunInstances", no_spot_anywhere)
    instance, events = drive(provider.launch(spec(spot=True, fallback="on-demand")))

    tried = attempts(events)
    zones = {r: offered_zones(r, "g5.xlarge") for r in ("us-east-1", "us-west-2")}
    expected = [f"{z} spot" for z in zones["us-east-1"] + zones["us-west-2"]]
    expected += [f"{z} on-demand" for z in zones["us-east-1"]] + ["us-west-2a on-demand"]
    assert [w for w, _ in tried] == expected  # zones, then regions, then on-demand
    assert [ok for _, ok in tried] == [False] * (len(expected) - 1) + [True]
    assert len(calls) == len(tried)
    assert (instance.region, instance.market) == ("us-west-2", Market.ON_DEMAND)
    assert "no capacity" in next(e.reason for e in events if isinstance(e, Attempt))


def test_capacity_error_lists_every_attempt(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1", "us-west-2"])
    inject(
        provider,
        "RunInstances",
        lambda region, params: client_error("InsufficientInstanceCapacity", "none left"),
    )
    with pytest.raises(CapacityError) as err:
        drive(provider.launch(spec(spot=True)))
    message = err.value.message
    zones = offered_zones("us-east-1", "g5.xlarge") + offered_zones("us-west-2", "g5.xlarge")
    assert f"after {len(zones)} tries" in message
    for zone in zones:
        assert f"{zone} spot: no capacity" in message
    assert "--fallback on-demand" in err.value.hint
    assert "\n" not in message


def test_region_without_image_is_skipped(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["ap-northeast-1", "us-west-2"])
    instance, events = drive(provider.launch(spec()))
    tried = attempts(events)
    assert tried[0] == ("ap-northeast-1", False)
    assert "no image matching" in next(e.reason for e in events if isinstance(e, Attempt))
    assert instance.region == "us-west-2"


def test_no_image_anywhere_says_so(make_provider: Any) -> None:
    provider = make_provider(regions=["ap-northeast-1"])
    with pytest.raises(ConfigError) as err:
        drive(provider.launch(spec()))
    assert "no image matching" in err.value.message and "ap-northeast-1" in err.value.message
    assert "--image" in err.value.hint


def test_image_override_by_id_and_by_name(make_provider: Any, spot_prices: Any) -> None:
    custom = register_ami("us-east-1", "my-team-al2023-cuda 2025-03", owner="123456789012")
    provider = make_provider(regions=["us-east-1"])
    by_id, _ = drive(provider.launch(spec(run_id="r-id", image=custom)))
    assert by_id.ssh_user == "ec2-user"
    by_name, _ = drive(provider.launch(spec(run_id="r-name", image="my-team-*")))
    ec2 = boto("us-east-1")
    for inst in (by_id, by_name):
        item = ec2.describe_instances(InstanceIds=[inst.id])["Reservations"][0]["Instances"][0]
        assert item["ImageId"] == custom


def test_arm_type_gets_the_arm_image(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec(instance_type="g5g.xlarge")))
    item = boto("us-east-1").describe_instances(InstanceIds=[instance.id])["Reservations"][0]
    image_id = item["Instances"][0]["ImageId"]
    image = boto("us-east-1").describe_images(ImageIds=[image_id])["Images"][0]
    assert "ARM64" in image["Name"]


def test_quota_exceeded_names_the_quota(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    inject(
        provider,
        "RunInstances",
        lambda region, params: client_error(
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit of 0 allows",
        ),
    )
    with pytest.raises(QuotaError) as err:
        drive(provider.launch(spec()))
    assert "Running On-Demand G and VT instances" in err.value.message
    assert "servicequotas" in err.value.hint and "region=us-east-1" in err.value.hint
    with pytest.raises(QuotaError) as spot_err:
        drive(provider.launch(spec(spot=True)))
    assert "All G and VT Spot Instance Requests" in spot_err.value.message


def test_max_price_below_spot_says_the_current_price(make_provider: Any, spot_prices: Any) -> None:
    for zone in offered_zones("us-east-1", "g5.xlarge"):
        spot_prices[("us-east-1", "g5.xlarge", zone)] = 0.35 if zone == "us-east-1b" else 0.52
    provider = make_provider(regions=["us-east-1"])
    calls = inject(provider, "RunInstances", lambda region, params: None)
    with pytest.raises(CapacityError) as err:
        drive(provider.launch(spec(spot=True, max_price=0.2)))
    assert "$0.2000/h is below the current spot price" in err.value.message
    assert "$0.3500/h in us-east-1b" in err.value.message
    assert "at least 0.35" in err.value.hint
    assert calls == []  # nothing was created


def test_spot_max_price_too_low_from_aws(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    inject(
        provider,
        "RunInstances",
        lambda region, params: client_error(
            "SpotMaxPriceTooLow",
            "Your Spot request price of 0.1 is lower than the minimum required Spot request "
            "fulfillment price of 0.3512.",
        ),
    )
    with pytest.raises(CapacityError) as err:
        drive(provider.launch(spec(spot=True, max_price=0.1)))
    assert "0.3512" in err.value.message


def test_unknown_instance_type(make_provider: Any) -> None:
    provider = make_provider(regions=["us-east-1", "us-west-2"])
    with pytest.raises(ConfigError) as err:
        drive(provider.launch(spec(instance_type="g5.xlarg")))
    assert err.value.message == "unknown instance type 'g5.xlarg'"
    assert "did you mean g5.xlarge" in err.value.hint


def test_unknown_region(make_provider: Any) -> None:
    provider = make_provider()
    with pytest.raises(ConfigError, match="unknown AWS region 'eu-wset-1'"):
        drive(provider.launch(spec(region="eu-wset-1")))


def test_default_instance_type(make_provider: Any, spot_prices: Any) -> None:
    instance, events = drive(make_provider(regions=["us-east-1"]).launch(spec(instance_type=None)))
    assert instance.instance_type == "g4dn.xlarge" and "g4dn.xlarge" in events[0].text()
    typed = make_provider(regions=["us-east-1"], instance_type="g6.xlarge")
    other, _ = drive(typed.launch(spec(run_id="r-g6", instance_type=None)))
    assert other.instance_type == "g6.xlarge"


def test_user_key_name_is_used_and_not_managed(make_provider: Any, spot_prices: Any) -> None:
    ec2 = boto("us-east-1")
    ec2.create_key_pair(KeyName="alice")
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec(options={"key_name": "alice"})))
    item = ec2.describe_instances(InstanceIds=[instance.id])["Reservations"][0]["Instances"][0]
    assert item["KeyName"] == "alice"
    assert provider.ssh_target(instance).key_path is None  # their agent / ssh config

    with pytest.raises(ConfigError, match="key pair 'bob' does not exist in us-east-1"):
        drive(provider.launch(spec(run_id="r-bob", options={"key_name": "bob"})))


def test_instance_that_dies_while_booting_moves_on(make_provider: Any, spot_prices: Any) -> None:
    provider = make_provider(regions=["us-east-1"])
    dead: set[str] = set()

    def kill_first(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        for reservation in parsed.get("Reservations", []):
            for item in reservation["Instances"]:
                if not dead or item["InstanceId"] in dead:
                    dead.add(item["InstanceId"])
                    item["State"] = {"Code": 48, "Name": "terminated"}
                    item["StateReason"] = {"Message": "Server.InsufficientInstanceCapacity"}

    on(provider, "after-call.ec2.DescribeInstances", kill_first)
    instance, events = drive(provider.launch(spec(spot=True)))
    tried = attempts(events)
    assert tried[0][1] is False and tried[-1][1] is True
    assert "ended while booting: Server.InsufficientInstanceCapacity" in next(
        e.reason for e in events if isinstance(e, Attempt)
    )
    assert instance.id not in dead


def test_lost_answer_adopts_the_created_instance(make_provider: Any, spot_prices: Any) -> None:
    """A timeout after AWS created the instance must not make a second, billed one."""
    from botocore.exceptions import ReadTimeoutError

    provider = make_provider(regions=["us-east-1"])

    def lose_answer(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    on(provider, "after-call.ec2.RunInstances", lose_answer)
    instance, events = drive(provider.launch(spec()))
    assert [ok for _, ok in attempts(events)] == [True]
    made = boto("us-east-1").describe_instances(
        Filters=[{"Name": "tag:gpuctl:run", "Values": ["r-abc123"]}]
    )["Reservations"]
    assert [i["InstanceId"] for r in made for i in r["Instances"]] == [instance.id]


# -- network exposure -----------------------------------------------------------------------


def ssh_sources(region: str = "us-east-1") -> set[str]:
    (group,) = boto(region).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["gpuctl-ssh"]}]
    )["SecurityGroups"]
    return {
        r.get("CidrIp") or r.get("CidrIpv6")
        for p in group["IpPermissions"]
        for r in [*p.get("IpRanges", []), *p.get("Ipv6Ranges", [])]
    }


def test_root_volume_is_encrypted(make_provider: Any, spot_prices: Any) -> None:
    instance, _ = drive(make_provider(regions=["us-east-1"]).launch(spec()))
    (volume,) = boto("us-east-1").describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance.id]}]
    )["Volumes"]
    assert volume["Encrypted"] is True


def test_caller_address_change_revokes_the_old_rule_only(
    make_provider: Any, spot_prices: Any, checkip: Any
) -> None:
    provider = make_provider(regions=["us-east-1"], ssh_cidr=None, checkip_url=checkip.url)
    checkip.address = "198.51.100.1"
    drive(provider.launch(spec(run_id="r-one")))
    assert ssh_sources() == {"198.51.100.1/32"}
    # A colleague on the same account opened the shared group to their own address.
    ec2 = boto("us-east-1")
    (group,) = ec2.describe_security_groups(GroupNames=["gpuctl-ssh"])["SecurityGroups"]
    ec2.authorize_security_group_ingress(
        GroupId=group["GroupId"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "192.0.2.50/32", "Description": "gpuctl caller"}],
            }
        ],
    )
    checkip.address = "198.51.100.2"  # the laptop moved to another network
    drive(provider.launch(spec(run_id="r-two")))
    assert ssh_sources() == {"198.51.100.2/32", "192.0.2.50/32"}
    assert checkip.hits == 2  # detected afresh on each launch, not remembered


@pytest.mark.parametrize("wide", ["0.0.0.0/0", "10.0.0.0/16", "::/0"])
def test_open_ssh_cidr_needs_the_flag_and_warns(
    make_provider: Any, spot_prices: Any, wide: str
) -> None:
    provider = make_provider(regions=["us-east-1"])
    with pytest.raises(ConfigError) as info:
        drive(provider.launch(spec(options={"ssh_cidr": wide})))
    assert "--allow-open-ssh" in (info.value.hint or "")
    assert boto("us-east-1").describe_instances()["Reservations"] == []

    instance, events = drive(
        provider.launch(spec(options={"ssh_cidr": wide, "allow_open_ssh": True}))
    )
    warnings = [e.message for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert warnings == [f"SSH is open to {wide}: anyone there can try to log in (keys only)"]
    assert wide in ssh_sources()
    assert instance.state == InstanceState.RUNNING
