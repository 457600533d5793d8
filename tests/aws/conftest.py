"""moto in server mode, reached by the real botocore wire path through AWS_ENDPOINT_URL.

One server per session, reset before every test (POST /moto-api/reset). What moto
cannot do over its API is seeded on the server side instead, leaving the client path
untouched: Deep Learning AMIs owned by "amazon" (create_image would make them ours), spot
price history (moto answers a constant $0.00001 from 2006) and an instance launched hours
ago (moto stamps the create call's time).
"""

from __future__ import annotations

import datetime as dt
import logging
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gpuctl.settings import Profile, Settings

ACCOUNT = "123456789012"
AMAZON = "898082745236"  # the account that publishes Deep Learning AMIs
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-northeast-1")
# Real DLAMI names; the newest (by creation date) of the best pattern must win.
DLAMIS = (
    (
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.4.1 (Ubuntu 22.04) 20241016",
        "x86_64",
        2024,
    ),
    (
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.5.1 (Ubuntu 22.04) 20250107",
        "x86_64",
        2025,
    ),
    (
        "Deep Learning OSS Nvidia Driver AMI GPU PyTorch 2.5.1 (Amazon Linux 2023) 20250110",
        "x86_64",
        2026,
    ),
    ("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 20250201", "x86_64", 2027),
    (
        "Deep Learning ARM64 AMI OSS Nvidia Driver GPU PyTorch 2.5.1 (Ubuntu 22.04) 20250107",
        "arm64",
        2025,
    ),
)
NEWEST_UBUNTU = DLAMIS[1][0]
# Newer images that must not be picked: old DLAMI naming, other frameworks, other OS.
DECOYS = (
    ("Deep Learning AMI Ubuntu Linux - 2.4_Oct2017", "x86_64", 2030),
    (
        "Deep Learning OSS Nvidia Driver AMI GPU TensorFlow 2.18 (Ubuntu 22.04) 20250301",
        "x86_64",
        2030,
    ),
    (
        "Deep Learning Proprietary Nvidia Driver AMI GPU PyTorch 2.5 (Ubuntu 22.04) 20250301",
        "x86_64",
        2030,
    ),
    ("ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250301", "x86_64", 2030),
)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A clean moto with fake credentials in env, AMIs registered, spot prices seedable."""
    # moto's ~hundreds of stock AMIs per region cost ~0.3 s a region; a few decoys stand in.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    req = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for region in REGIONS[:3]:  # ap-northeast-1 has no Deep Learning AMI: a region failure
        for name, arch, year in DLAMIS + DECOYS:
            register_ami(region, name, arch=arch, created=dt.datetime(year, 1, 2, tzinfo=dt.UTC))
    yield moto_server


def register_ami(
    region: str,
    name: str,
    *,
    arch: str = "x86_64",
    created: dt.datetime | None = None,
    owner: str = AMAZON,
) -> str:
    """Add an amazon-owned public AMI to moto's backend (no API call can set the owner)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.amis import Ami
    from moto.ec2.utils import random_ami_id

    backend = ec2_backends[ACCOUNT][region]
    ami = Ami(
        backend,
        random_ami_id(),
        name=name,
        owner_id=owner,
        owner_alias="amazon" if owner == AMAZON else None,
        public=True,
        architecture=arch,
        virtualization_type="hvm",
        creation_date=created or dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        root_device_type="ebs",
        root_device_name="/dev/sda1",
        region_name=f"{region}a",
    )
    backend.amis[ami.id] = ami
    return str(ami.id)


def backdate(region: str, instance_id: str, launched_at: float) -> None:
    """Make moto report `launched_at` as the instance's LaunchTime."""
    from moto.ec2.models import ec2_backends

    instance = ec2_backends[ACCOUNT][region].get_instance(instance_id)
    instance.launch_time = dt.datetime.fromtimestamp(launched_at, dt.UTC).replace(tzinfo=None)


SpotKey = tuple[str, str, str]  # (region, instance type, zone)


@dataclass
class SpotMarket:
    """What moto's DescribeSpotPriceHistory serves, by (region, type, zone): explicit
    price changes (unix time, $/h), and current prices (a dearer record 5 h ago, then now)."""

    history: dict[SpotKey, list[tuple[float, float]]] = field(default_factory=dict)
    current: dict[SpotKey, float] = field(default_factory=dict)


@pytest.fixture
def spot_market(monkeypatch: pytest.MonkeyPatch) -> SpotMarket:
    """Served as AWS answers: the changes since StartTime plus the one in effect then, for
    the InstanceTypes and AvailabilityZone asked."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses.spot_instances import SpotInstances

    market = SpotMarket()
    history, current = market.history, market.current

    def describe_spot_price_history(self: Any) -> Any:
        wanted = set(self._get_param("InstanceTypes", []))
        zone_wanted = self._get_param("AvailabilityZone")
        start = _when(self._get_param("StartTime"))
        now = dt.datetime.now(dt.UTC).timestamp()
        changes: dict[SpotKey, list[tuple[float, float]]] = {k: list(v) for k, v in history.items()}
        for key, price in current.items():  # an older, dearer record first, then now
            changes.setdefault(key, []).extend([(now - 5 * 3600, price * 1.3), (now, price)])
        records = []
        for (region, itype, zone), points in sorted(changes.items()):
            if region != self.region or (wanted and itype not in wanted):
                continue
            if zone_wanted and zone != zone_wanted:
                continue
            points = sorted(points)
            if start is not None:
                before = [p for p in points if p[0] <= start]
                points = before[-1:] + [p for p in points if p[0] > start]
            for at, price in points:
                records.append(
                    {
                        "InstanceType": itype,
                        "ProductDescription": "Linux/UNIX",
                        "SpotPrice": f"{price:.6f}",
                        "AvailabilityZone": zone,
                        "Timestamp": dt.datetime.fromtimestamp(at, dt.UTC),
                    }
                )
        return ActionResult({"SpotPriceHistory": records})

    monkeypatch.setattr(SpotInstances, "describe_spot_price_history", describe_spot_price_history)
    return market


def _when(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    else:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


@pytest.fixture
def spot_prices(spot_market: SpotMarket) -> dict[SpotKey, float]:
    """(region, type, zone) -> $/h served by moto's DescribeSpotPriceHistory as the price
    now (after a dearer record five hours ago)."""
    return spot_market.current


@pytest.fixture
def spot_history(spot_market: SpotMarket) -> dict[SpotKey, list[tuple[float, float]]]:
    """(region, type, zone) -> the spot price changes [(unix time, $/h)] moto serves."""
    return spot_market.history


@pytest.fixture
def settings(gpuctl_home: Path) -> Settings:
    return Settings(
        home=gpuctl_home, config_path=gpuctl_home / "config.toml", results_dir=gpuctl_home / "r"
    )


@pytest.fixture
def make_provider(aws: str, settings: Settings) -> Callable[..., Any]:
    """AwsProvider on the test profile; options override the fast, offline defaults."""
    from gpuctl.providers.aws import AwsProvider

    def make(**options: Any) -> AwsProvider:
        opts: dict[str, Any] = {
            "regions": ["us-east-1", "us-west-2"],
            "ssh_cidr": "203.0.113.7/32",
            "poll_seconds": 0.01,
            "max_attempts": 2,
            "launch_timeout": 5,
            "terminate_timeout": 5,
        }
        opts.update(options)
        return AwsProvider(Profile(name="aws-test", provider="aws", options=opts), settings)

    return make
