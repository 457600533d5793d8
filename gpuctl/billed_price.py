"""The price that is billed, not the one that was shown: read back after a machine comes
up and while a run is followed.

An offer's figure may be minutes old and is the cheapest zone's; the machine lands where
the cloud put it, at that zone's price of that moment. So once it is up gpuctl asks its
cloud what it really got (a driver with Capability.BILLED_PRICE), tells the user and
records "price_differs" when that is not what was quoted, and re-prices the ledger's
open segment from then on. A spot price above the run's max price (--max-price, or the
profile's max_price_per_hour) stops the run the way a budget stop does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from . import cost
from .cost.ledger import open_segment_of
from .errors import BudgetExceeded, GpuctlError
from .events import Event, Notice
from .format import rate
from .models import BilledPrice, Instance, LaunchSpec, Market, Run
from .rundir import RunDir
from .trainer.protocol import StopReason

if TYPE_CHECKING:
    from .ports import EngineOps

log = logging.getLogger("gpuctl")

PRICE_DIFFERS = "price_differs"
MAX_PRICE_EXCEEDED = "max_price_exceeded"
# Prices are shown to a tenth of a cent an hour: closer than this is rounding, not news.
TOLERANCE = 0.0005


def differs(quoted: float | None, billed: float) -> bool:
    """A difference beyond rounding; an unknown quote differs from any known price."""
    return quoted is None or abs(quoted - billed) > TOLERANCE


def over_max(billed: BilledPrice, max_price: float | None) -> bool:
    """A spot price above the run's cap (on-demand prices do not move under a run)."""
    return (
        max_price is not None
        and billed.market == Market.SPOT.value
        and billed.price_per_hour > max_price + TOLERANCE
    )


def read_back(
    engine: EngineOps, instance: Instance, max_age: float | None = 0.0
) -> BilledPrice | None:
    """The driver's answer, or None where it has no read-back or cannot say now."""
    from gpuctl.providers.base import Capability

    provider = engine.provider(instance.provider)
    if Capability.BILLED_PRICE not in provider.capabilities:
        return None
    return provider.billed_price(instance, max_age)  # type: ignore[no-any-return]


def reprice(engine: EngineOps, instance: Instance, billed: BilledPrice) -> Instance:
    """The ledger bills the real figure from now on: the open compute segment is split
    at this moment (or, when the machine had no price yet, one is opened). Returns the
    instance at its real price, as the store now keeps it."""
    store = engine.store
    real = instance.evolve(price_per_hour=billed.price_per_hour)
    seg = open_segment_of(store, instance, cost.COMPUTE)
    if seg is None:
        if instance.price_per_hour is None:  # not metered until a price is known: now it is
            cost.open_compute(store, real, instance.run_id, source="billed")
    elif seg.id is not None and abs(seg.rate_per_hour - billed.price_per_hour) > 1e-9:
        at = max(time.time(), seg.start + 1e-3)
        store.split_segment(seg.id, at, billed.price_per_hour, source="billed")
    if instance.price_per_hour != billed.price_per_hour:
        store.put_instance(real)
    return real


def quote_of(engine: EngineOps, run_id: str) -> tuple[float | None, str]:
    """The price and type the run's launch estimate quoted (its "estimate" event)."""
    found = engine.store.events(run_id, kinds=["estimate"])
    if not found:
        return None, ""
    last = found[-1]
    value = last.get("price_per_hour")
    price = float(value) if isinstance(value, int | float) else None
    return price, str(last.get("instance_type") or "")


def at_boot(
    engine: EngineOps,
    spec: LaunchSpec,
    instance: Instance,
    quoted: float | None,
    quoted_type: str = "",
) -> Generator[Event, None, Instance]:
    """Right after the machine is up and in the ledger: compare what it bills with the
    quote; a spot price above the max price ends the launch (BudgetExceeded, exit 4)."""
    try:
        billed = read_back(engine, instance)
    except GpuctlError as exc:  # the run goes on at the price it had; say so
        yield Notice(
            spec.run_id,
            f"could not read back what {instance.id} bills ({exc.one_line()}); "
            "metered at the launch price",
            "warning",
        )
        return instance
    if billed is None:
        return instance
    instance = reprice(engine, instance, billed)
    moved = quoted_type and billed.instance_type != quoted_type
    if differs(quoted, billed.price_per_hour) or moved:
        engine.record_event(
            spec.run_id,
            PRICE_DIFFERS,
            {
                "quoted": quoted,
                "billed": billed.price_per_hour,
                "instance_type": billed.instance_type,
                "market": billed.market,
                "zone": billed.zone,
                "source": billed.source,
            },
        )
        yield Notice(spec.run_id, differs_text(instance.id, quoted, quoted_type, billed), "warning")
    if over_max(billed, spec.max_price):
        assert spec.max_price is not None
        engine.record_event(
            spec.run_id,
            MAX_PRICE_EXCEEDED,
            {"price": billed.price_per_hour, "max_price": spec.max_price},
        )
        raise BudgetExceeded(
            f"the spot price of {instance.id} in {billed.zone} is "
            f"{rate(billed.price_per_hour)}, above the max price {rate(spec.max_price)}; "
            "nothing was started",
            hint="raise --max-price (or max_price_per_hour in the profile), or try later",
        )
    return instance


def differs_text(
    instance_id: str, quoted: float | None, quoted_type: str, billed: BilledPrice
) -> str:
    where = f"{billed.instance_type} {billed.market}"
    if billed.zone:
        where += f" in {billed.zone}"
    shown = "an unknown price" if quoted is None else rate(quoted)
    if quoted_type and quoted_type != billed.instance_type:
        shown += f" for {quoted_type}"
    return (
        f"{instance_id} bills {rate(billed.price_per_hour)} ({where}, {billed.source}), "
        f"not the {shown} quoted; the meter uses {rate(billed.price_per_hour)} from now on"
    )


def watch(engine: EngineOps, run: Run, warned: set[str]) -> Iterator[Event]:
    """One look while a run is followed (the cost tick): a spot machine's price now goes
    into the ledger, and above the run's max price the run is stopped like a budget stop
    (checkpoint first; status `budget`, exit 4)."""
    if not run.status.active or "stop" in warned:
        return
    instance = engine.instance_of(run)
    if instance is None or instance.market != Market.SPOT:
        return
    try:
        billed = read_back(engine, instance, max_age=None)  # the driver's own reuse
    except GpuctlError as exc:  # a failed look never disturbs the run
        log.info("%s: price read-back failed: %s", run.id, exc.one_line())
        return
    if billed is None:
        return
    reprice(engine, instance, billed)
    max_price = _max_price(run)
    if not over_max(billed, max_price):
        return
    assert max_price is not None
    warned.add("stop")
    engine.record_event(
        run.id, MAX_PRICE_EXCEEDED, {"price": billed.price_per_hour, "max_price": max_price}
    )
    why = (
        f"spot price {rate(billed.price_per_hour)} in {billed.zone} is above the max price "
        f"{rate(max_price)}"
    )
    yield Notice(run.id, f"{why}: stopping the run (checkpoint first)", "error")
    engine.store.update_run(run.id, reason=StopReason.BUDGET.value)
    try:
        _instance, host = engine.locate(run)
        RunDir(host, run.id, run.remote_dir).stop(reason=f"{StopReason.BUDGET}: {why}")
    except GpuctlError as exc:
        yield Notice(run.id, f"max price stop failed: {exc.one_line()}", "error")


def _max_price(run: Run) -> float | None:
    value: Any = (run.spec or {}).get("max_price")
    return float(value) if isinstance(value, int | float) and value > 0 else None
