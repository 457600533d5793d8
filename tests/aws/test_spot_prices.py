"""The meter re-prices a running spot instance from AWS's own spot price history.

A spot instance launched by gpuctl against moto; moto's DescribeSpotPriceHistory answers
the changes the test seeds (conftest.spot_history). What the user sees is the ledger:
`gpuctl cost` and the listing's spend are sums over its price segments.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gpuctl import cost
from gpuctl.lifecycle import Engine
from gpuctl.models import Market
from gpuctl.providers.aws_catalog import on_demand_price
from gpuctl.settings import load

from .conftest import backdate
from .helpers import on
from .test_launch import drive, spec

H = 3600.0
ZONE = ("us-east-1", "g5.xlarge", "us-east-1a")


def engine(gpuctl_home: Path, aws: str, **options: Any) -> Engine:
    extra = "".join(f"{k} = {v!r}\n" for k, v in options.items())
    (gpuctl_home / "config.toml").write_text(
        f"""providers = ["aws-test"]

[profiles.aws-test]
provider = "aws"
regions = ["us-east-1"]
endpoint_url = "{aws}"
ssh_cidr = "203.0.113.7/32"
poll_seconds = 0.01
launch_timeout = 5
{extra}"""
    )
    return Engine(load())


def launch_spot(eng: Engine, run_id: str, launched_at: float) -> Any:
    """A spot g5.xlarge gpuctl launched at `launched_at` and metered then."""
    provider = eng.provider("aws-test")
    instance, _ = drive(provider.launch(spec(run_id=run_id, spot=True)))
    backdate("us-east-1", instance.id, launched_at)
    listed = provider.get_instance(instance.id)
    cost.record_launch(eng.store, eng.settings, listed, run_id)
    return listed


def compute(eng: Engine, instance_id: str) -> list[tuple[float, float, float | None]]:
    segs = eng.store.segments(provider="aws-test", instance_id=instance_id)
    return [(s.rate_per_hour, s.start, s.end) for s in segs if s.kind == cost.COMPUTE]


def test_segments_follow_the_spot_price_history_aws_reports(
    aws: str, spot_history: Any, gpuctl_home: Path
) -> None:
    now = time.time()
    spot_history[ZONE] = [(now - 4 * H, 0.40)]
    eng = engine(gpuctl_home, aws, spot_history_seconds=0)
    instance = launch_spot(eng, "r-spot-1", now - 3 * H)
    assert instance.market == Market.SPOT and instance.zone == "us-east-1a"
    on_demand = on_demand_price("us-east-1", "g5.xlarge", None)
    assert on_demand is not None and on_demand.per_hour != pytest.approx(0.40)
    assert compute(eng, instance.id) == [(0.40, pytest.approx(now - 3 * H, abs=1), None)]

    # gpuctl was closed while the market moved twice: the next listing back-fills both.
    spot_history[ZONE] += [(now - 2 * H, 0.55), (now - H, 0.30)]
    eng.refresh(["aws-test"])
    segs = compute(eng, instance.id)
    assert [rate for rate, _, _ in segs] == [0.40, 0.55, 0.30]
    assert [start for _, start, _ in segs][1:] == pytest.approx([now - 2 * H, now - H], abs=1)
    disk = 3 * 150 * 0.08 / cost.HOURS_PER_MONTH  # its 150 GB EBS volume, by the GB-month
    spent = cost.spent(eng.store, eng.settings, now=now)[0]
    assert spent == pytest.approx(0.40 + 0.55 + 0.30 + disk, abs=0.002)

    # A change while it runs opens a new segment at the new price; the same history again
    # changes nothing.
    moved = time.time()
    spot_history[ZONE].append((moved, 0.70))
    eng.refresh(["aws-test"])
    eng.refresh(["aws-test"])
    segs = compute(eng, instance.id)
    assert [rate for rate, _, _ in segs] == [0.40, 0.55, 0.30, 0.70]
    assert segs[-1][1] == pytest.approx(moved, abs=1) and segs[-1][2] is None


def test_an_on_demand_instance_is_never_repriced(
    aws: str, spot_history: Any, gpuctl_home: Path
) -> None:
    now = time.time()
    spot_history[ZONE] = [(now - 4 * H, 0.40), (now - H, 0.10)]
    eng = engine(gpuctl_home, aws, spot_history_seconds=0)
    provider = eng.provider("aws-test")
    instance, _ = drive(provider.launch(spec(run_id="r-od-1")))
    cost.record_launch(eng.store, eng.settings, instance, "r-od-1")
    eng.refresh(["aws-test"])
    assert [rate for rate, _, _ in compute(eng, instance.id)] == [instance.price_per_hour]


def test_history_is_asked_once_per_type_and_zone_while_fresh(
    aws: str, spot_history: Any, gpuctl_home: Path
) -> None:
    """Two spot machines of one type and zone, listed twice: one history call in all."""
    now = time.time()
    spot_history[ZONE] = [(now - 4 * H, 0.40)]
    eng = engine(gpuctl_home, aws)
    first = launch_spot(eng, "r-spot-a", now - 2 * H)
    second = launch_spot(eng, "r-spot-b", now - 2 * H)
    spot_history[ZONE].append((now - 90 * 60, 0.50))
    provider = eng.provider("aws-test")
    asked: list[Any] = []
    on(provider, "before-call.ec2.DescribeSpotPriceHistory", lambda **kw: asked.append(kw))
    eng.refresh(["aws-test"])
    eng.refresh(["aws-test"])
    assert len(asked) == 1
    for instance in (first, second):
        assert [rate for rate, _, _ in compute(eng, instance.id)] == [0.40, 0.50]


def test_a_denied_history_call_leaves_the_listing_and_the_price_alone(
    aws: str, spot_history: Any, gpuctl_home: Path
) -> None:
    from .helpers import client_error, inject

    now = time.time()
    spot_history[ZONE] = [(now - 4 * H, 0.40)]
    eng = engine(gpuctl_home, aws)
    instance = launch_spot(eng, "r-spot-d", now - 2 * H)
    spot_history[ZONE].append((now - H, 0.90))
    provider = eng.provider("aws-test")
    calls = inject(
        provider,
        "DescribeSpotPriceHistory",
        lambda _r, _p: client_error(
            "UnauthorizedOperation", "not authorized", "DescribeSpotPriceHistory"
        ),
    )
    listings = eng.refresh(["aws-test"])
    eng.refresh(["aws-test"])
    assert [i.id for i in listings[0].instances] == [instance.id]
    assert [rate for rate, _, _ in compute(eng, instance.id)] == [0.40]
    assert len(calls) == 1  # the refusal is remembered, not asked again on every listing
