"""The droplet's size and price read back from the (fake) DigitalOcean API after it is up,
compared with the quote; offers say their prices are the live API's and how old."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from gpuctl import billed_price, cost
from gpuctl.events import Notice
from gpuctl.lifecycle import Engine
from gpuctl.models import LaunchSpec, Run, RunStatus
from gpuctl.settings import Settings
from gpuctl.state import Store
from tests.do.conftest import MakeProvider
from tests.events import drain
from tests.fakes.do_api import FakeDigitalOcean

RUN = "validate-261203-b1c2"


def launch_spec() -> LaunchSpec:
    return LaunchSpec(run_id=RUN, preset="validate", provider="amd", max_hours=2.0)


def engine_for(provider: Any, settings: Settings) -> Engine:
    """An engine whose `amd` profile is the provider's (the fake's endpoint and token)."""
    profiles = {**settings.profiles, "amd": provider.profile}
    settings = dataclasses.replace(settings, profiles=profiles)
    return Engine(settings, Store(settings.state_path))


def boot(engine: Engine, provider: Any) -> tuple[Any, LaunchSpec]:
    spec = launch_spec()
    now = time.time()
    engine.store.add_run(
        Run(
            id=RUN,
            preset="validate",
            provider="amd",
            status=RunStatus.PROVISIONING,
            created_at=now,
            updated_at=now,
            spec=spec.to_dict(),
        )
    )
    _, instance = drain(provider.launch(spec))
    engine.store.put_instance(instance)
    cost.record_launch(engine.store, engine.settings, instance, RUN)
    return instance, spec


def test_the_droplets_size_and_price_are_read_back(
    fake: FakeDigitalOcean, make_provider: MakeProvider, settings: Settings
) -> None:
    provider = make_provider(fake)
    _, instance = drain(provider.launch(launch_spec()))
    billed = provider.billed_price(instance)
    assert billed is not None
    assert (billed.instance_type, billed.market, billed.zone) == (
        "gpu-mi300x1-192gb",
        "on-demand",
        "atl1",
    )
    assert billed.price_per_hour == 1.99 and "live API" in billed.source


def test_a_droplet_billed_above_its_quote_is_an_event_a_notice_and_the_ledger(
    fake: FakeDigitalOcean, make_provider: MakeProvider, settings: Settings
) -> None:
    provider = make_provider(fake)
    engine = engine_for(provider, settings)
    instance, spec = boot(engine, provider)
    fake.droplets[int(instance.id)]["size"]["price_hourly"] = 2.49  # the price list moved

    events, real = drain(billed_price.at_boot(engine, spec, instance, 1.99, "gpu-mi300x1-192gb"))

    (differs,) = [e for e in engine.store.events(RUN, kinds=[billed_price.PRICE_DIFFERS])]
    assert (differs["quoted"], differs["billed"]) == (1.99, 2.49)
    assert differs["instance_type"] == "gpu-mi300x1-192gb" and differs["market"] == "on-demand"
    (notice,) = [e for e in events if isinstance(e, Notice)]
    assert "$2.490/h" in notice.message and "$1.990/h" in notice.message
    assert real.price_per_hour == 2.49
    (open_seg,) = [s for s in engine.store.segments(run_id=RUN, open_only=True)]
    assert open_seg.rate_per_hour == 2.49


def test_a_droplet_at_its_quote_records_nothing(
    fake: FakeDigitalOcean, make_provider: MakeProvider, settings: Settings
) -> None:
    provider = make_provider(fake)
    engine = engine_for(provider, settings)
    instance, spec = boot(engine, provider)
    events, _ = drain(billed_price.at_boot(engine, spec, instance, 1.99, "gpu-mi300x1-192gb"))
    assert events == []
    assert engine.store.events(RUN, kinds=[billed_price.PRICE_DIFFERS]) == []


def test_offers_say_their_prices_are_the_live_apis_and_how_old(
    fake: FakeDigitalOcean, make_provider: MakeProvider
) -> None:
    (one, *_) = make_provider(fake).offers()
    assert one.price_source == "live API"
    assert one.priced_at is not None and time.time() - one.priced_at < 60
    assert one.price_origin(time.time()) == "live API, just now"
    assert one.price_origin(one.priced_at + 600) == "live API, 10 min ago"
