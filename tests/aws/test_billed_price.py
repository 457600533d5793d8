"""The price that is billed, read back from moto after the instance is up: type, lifecycle,
zone and that zone's spot price now, compared with the quote, and the ledger re-priced."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from gpuctl import billed_price, cost, recovery
from gpuctl.errors import EXIT_BUDGET, BudgetExceeded
from gpuctl.events import Failed, Notice, Provisioning
from gpuctl.launch import launch as run_launch
from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, LaunchSpec, Market, Run, RunStatus
from gpuctl.settings import Profile, Settings
from gpuctl.state import Store

from .helpers import boto
from .test_launch import drive, spec

OPTIONS: dict[str, Any] = {
    "regions": ["us-east-1"],
    "ssh_cidr": "203.0.113.7/32",
    "poll_seconds": 0.01,
    "max_attempts": 2,
    "launch_timeout": 5,
    "terminate_timeout": 5,
}


@pytest.fixture
def engine(aws: str, gpuctl_home: Path) -> Engine:
    profile = Profile(name="aws-test", provider="aws", options=OPTIONS)
    settings = Settings(
        home=gpuctl_home,
        config_path=gpuctl_home / "config.toml",
        results_dir=gpuctl_home / "r",
        default_provider="aws-test",
        providers=("aws-test",),
        profiles={"aws-test": profile},
    )
    return Engine(settings, Store(settings.state_path))


def up(engine: Engine, launch: LaunchSpec) -> Instance:
    """What launch.py does up to the read-back: the run, the machine, its ledger."""
    now = time.time()
    engine.store.add_run(
        Run(
            id=launch.run_id,
            preset=launch.preset,
            provider=launch.provider,
            status=RunStatus.PROVISIONING,
            created_at=now,
            updated_at=now,
            spec=launch.to_dict(),
        )
    )
    instance, _ = drive(engine.provider("aws-test").launch(launch))
    engine.store.put_instance(instance)
    cost.record_launch(engine.store, engine.settings, instance, launch.run_id)
    return instance


def open_rate(engine: Engine, instance: Instance) -> float:
    (seg,) = [
        s
        for s in engine.store.segments(provider=instance.provider, instance_id=instance.id)
        if s.end is None and s.kind == cost.COMPUTE
    ]
    return seg.rate_per_hour


def kinds(engine: Engine, run_id: str, kind: str) -> list[dict[str, Any]]:
    drop = ("id", "run_id", "time", "kind")
    return [
        {k: v for k, v in e.items() if k not in drop}
        for e in engine.store.events(run_id, kinds=[kind])
    ]


def test_a_spot_zone_price_that_moved_since_the_quote_is_an_event_a_notice_and_the_ledger(
    engine: Engine, spot_prices: Any
) -> None:
    key = ("us-east-1", "g5.xlarge", "us-east-1a")
    spot_prices[key] = 0.35
    launch = spec(spot=True, run_id="r-moved1")
    instance = up(engine, launch)
    assert instance.price_per_hour == pytest.approx(0.35)  # frozen at launch
    spot_prices[key] = 0.42  # the zone's price by the time the machine is up

    events: list[Any] = []
    gen = billed_price.at_boot(engine, launch, instance, 0.35, "g5.xlarge")
    try:
        while True:
            events.append(next(gen))
    except StopIteration as done:
        real = done.value

    (differs,) = kinds(engine, launch.run_id, billed_price.PRICE_DIFFERS)
    assert differs["quoted"] == pytest.approx(0.35)
    assert differs["billed"] == pytest.approx(0.42)
    assert (differs["instance_type"], differs["market"], differs["zone"]) == (
        "g5.xlarge",
        "spot",
        "us-east-1a",
    )
    assert "us-east-1a" in differs["source"]
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert "$0.420/h" in notice.message and "$0.350/h" in notice.message
    assert real.price_per_hour == pytest.approx(0.42)
    assert open_rate(engine, instance) == pytest.approx(0.42)  # billed from now on
    stored = engine.store.get_instance("aws-test", instance.id)
    assert stored is not None and stored.price_per_hour == pytest.approx(0.42)


def test_on_demand_at_the_quoted_price_records_nothing(engine: Engine, spot_prices: Any) -> None:
    launch = spec(run_id="r-ondem1")
    instance = up(engine, launch)
    assert instance.market == Market.ON_DEMAND
    quoted = instance.price_per_hour  # the catalog's, as the offer showed it
    gen = billed_price.at_boot(engine, launch, instance, quoted, "g5.xlarge")
    shown = []
    try:
        while True:
            shown.append(next(gen))
    except StopIteration:
        pass
    assert shown == []
    assert kinds(engine, launch.run_id, billed_price.PRICE_DIFFERS) == []
    assert open_rate(engine, instance) == pytest.approx(1.006)


def test_a_spot_price_above_the_max_price_at_boot_ends_the_launch_like_a_budget(
    engine: Engine, spot_prices: Any
) -> None:
    key = ("us-east-1", "g5.xlarge", "us-east-1a")
    spot_prices[key] = 0.35
    launch = spec(spot=True, run_id="r-maxed1", max_price=0.40)
    instance = up(engine, launch)
    spot_prices[key] = 0.55
    gen = billed_price.at_boot(engine, launch, instance, 0.35, "g5.xlarge")
    with pytest.raises(BudgetExceeded) as err:
        while True:
            next(gen)
    assert err.value.exit_code == EXIT_BUDGET
    assert "$0.550/h" in err.value.message and "$0.400/h" in err.value.message
    (exceeded,) = kinds(engine, launch.run_id, billed_price.MAX_PRICE_EXCEEDED)
    assert exceeded == {"price": pytest.approx(0.55), "max_price": pytest.approx(0.40)}


def test_the_read_back_names_the_zone_the_machine_is_in_not_the_cheapest(
    make_provider: Any, spot_prices: Any
) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1a")] = 0.35
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1b")] = 0.30
    provider = make_provider(regions=["us-east-1"])
    instance, _ = drive(provider.launch(spec(spot=True, region="us-east-1")))
    billed = provider.billed_price(instance)
    assert billed is not None
    assert billed.zone == instance.zone and billed.market == "spot"
    want = 0.30 if instance.zone == "us-east-1b" else 0.35
    assert billed.price_per_hour == pytest.approx(want)


def test_offers_say_where_their_prices_came_from_and_how_old_they_are(
    make_provider: Any, spot_prices: Any
) -> None:
    spot_prices[("us-east-1", "g5.xlarge", "us-east-1b")] = 0.35
    provider = make_provider(regions=["us-east-1"])
    g5 = next(o for o in provider.offers() if o.instance_type == "g5.xlarge")
    assert g5.price_source.startswith("catalog ")
    day = g5.price_source.split()[1]
    assert g5.priced_at == pytest.approx(time.mktime(time.strptime(day, "%Y-%m-%d")), abs=86400)
    assert g5.spot_priced_at is not None and time.time() - g5.spot_priced_at < 60
    origin = g5.price_origin(time.time())
    assert origin.startswith(f"catalog {day}, ") and "days ago" in origin
    assert origin.endswith("spot live API, just now")


def test_a_launch_whose_zone_price_rose_above_max_price_while_booting_ends_as_a_budget(
    engine: Engine, spot_prices: Any
) -> None:
    key = ("us-east-1", "g5.xlarge", "us-east-1a")
    spot_prices[key] = 0.35
    launch = spec(spot=True, run_id="r-rose01", max_price=0.40)
    events = []
    for event in run_launch(engine, launch):
        events.append(event)
        if isinstance(event, Provisioning) and "booting" in event.detail:
            spot_prices[key] = 0.55  # the market moved between the create and the boot
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.exit_code == EXIT_BUDGET, events[-3:]
    assert "above the max price $0.400/h" in failed.error
    run = engine.store.get_run(launch.run_id)
    assert run.status == RunStatus.BUDGET
    (exceeded,) = kinds(engine, launch.run_id, billed_price.MAX_PRICE_EXCEEDED)
    assert exceeded["price"] == pytest.approx(0.55)
    (instance_id,) = {e.instance_id for e in events if getattr(e, "instance_id", None)}
    state = boto("us-east-1").describe_instances(InstanceIds=[instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
    assert engine.store.segments(run_id=launch.run_id, open_only=True) == []  # not billed on


def test_a_recoverys_new_machine_above_the_max_price_is_ended_and_the_run_is_a_budget(
    engine: Engine, spot_prices: Any
) -> None:
    key = ("us-east-1", "g5.xlarge", "us-east-1a")
    spot_prices[key] = 0.35
    launch = spec(spot=True, run_id="r-recov1", max_price=0.40, managed=True)
    now = time.time()
    engine.store.add_run(
        Run(
            id=launch.run_id,
            preset=launch.preset,
            provider=launch.provider,
            status=RunStatus.RECOVERING,
            created_at=now,
            updated_at=now,
            spec=launch.to_dict(),
        )
    )
    engine.record_event(launch.run_id, "estimate", {"price_per_hour": 0.35})
    events = []
    gen = recovery.relaunch(engine, engine.store.get_run(launch.run_id), None, 2)
    for event in gen:
        events.append(event)
        if isinstance(event, Provisioning) and "booting" in event.detail:
            spot_prices[key] = 0.55
    failed = events[-1]
    assert isinstance(failed, Failed) and failed.exit_code == EXIT_BUDGET, events[-3:]
    assert engine.store.get_run(launch.run_id).status == RunStatus.BUDGET
    (differs,) = kinds(engine, launch.run_id, billed_price.PRICE_DIFFERS)
    assert (differs["quoted"], differs["billed"]) == (pytest.approx(0.35), pytest.approx(0.55))
    instance_id = engine.store.get_run(launch.run_id).instance_id
    state = boto("us-east-1").describe_instances(InstanceIds=[instance_id])
    assert state["Reservations"][0]["Instances"][0]["State"]["Name"] in (
        "shutting-down",
        "terminated",
    )
    assert engine.store.segments(run_id=launch.run_id, open_only=True) == []
