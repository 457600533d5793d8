"""Reconciling the ledger with what the providers list: nothing billed twice or missed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpuctl import cost
from gpuctl.lifecycle import Engine
from gpuctl.models import Instance, InstanceState, Market
from gpuctl.providers.base import Capability, Listing
from gpuctl.state import Store
from tests.cost.conftest import T0, inst, run, settings_with

H = 3600.0


def test_running_instance_the_ledger_thought_gone_is_flagged_and_metered(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst(price=3.6, launched_at=T0)
    cost.open_compute(store, machine, "r1", now=T0)
    cost.close_instance(store, machine, T0 + H)  # e.g. a terminate that did not take
    found = cost.sync_ledger(store, settings, "aws", [machine], now=T0 + 3 * H)
    assert [f.action for f in found] == ["metered"]
    assert "ledger had it gone" in found[0].message
    segs = store.segments(instance_id="i-1")
    assert [(s.start, s.end, s.source) for s in segs] == [
        (T0, T0 + H, "launch"),
        (T0 + H, None, "reconcile"),  # from where the ledger stopped: never twice
    ]
    assert cost.spent(store, settings, now=T0 + 3 * H)[0] == pytest.approx(3 * 3.6)
    assert cost.meter(store, settings, now=T0 + 3 * H).flagged == ("aws/i-1",)
    assert cost.sync_ledger(store, settings, "aws", [machine], now=T0 + 4 * H) == []


def test_unrecorded_instance_is_metered_from_the_providers_launch_time(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    # Created by gpuctl (tagged) two hours ago by the provider's clock; a crash came
    # between the create call and the ledger write.
    machine = inst(price=1.0, launched_at=T0 - 2 * H, run_id="r7")
    found = cost.sync_ledger(store, settings, "aws", [machine], now=T0)
    assert [f.action for f in found] == ["metered"]
    (seg,) = store.segments(instance_id="i-1")
    assert seg.start == T0 - 2 * H and seg.run_id == "r7" and seg.source == "reconcile"
    assert cost.spent(store, settings, now=T0)[0] == pytest.approx(2.0)


def test_launch_time_ahead_of_our_clock_is_clamped(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst(price=1.0, launched_at=T0 + 900)  # provider clock 15 min ahead of ours
    cost.sync_ledger(store, settings, "aws", [machine], now=T0)
    (seg,) = store.segments()
    assert seg.start == T0
    assert cost.spent(store, settings, now=T0 + H)[0] == pytest.approx(1.0)


def test_unmanaged_unknown_instances_are_left_alone(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    theirs = inst(price=1.0).evolve(managed=False, run_id=None)
    assert cost.sync_ledger(store, settings, "aws", [theirs], now=T0) == []
    assert store.segments() == []


def test_vanished_instance_closes_no_later_than_its_runs_limit(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    store.add_run(run("r1", max_hours=2.0, idle_minutes=30.0))
    cost.open_compute(store, inst(price=1.0), "r1", now=T0)
    # An incomplete listing (a region failed) proves nothing.
    assert cost.sync_ledger(store, settings, "aws", [], complete=False, now=T0 + 100 * H) == []
    # Gone a week later: the agent's 2 h limit (+ 30 min idle) bounds what it could cost.
    found = cost.sync_ledger(
        store, settings, "aws", [], last_seen={"i-1": T0 + 600}, now=T0 + 168 * H
    )
    assert [f.action for f in found] == ["closed"]
    (seg,) = store.segments()
    assert seg.end == T0 + 2.5 * H


def test_vanished_instance_seen_recently_closes_when_last_seen(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    cost.open_compute(store, inst(price=1.0, run_id=None), None, now=T0)
    cost.sync_ledger(store, settings, "aws", [], last_seen={"i-1": T0 + 5 * H}, now=T0 + 6 * H)
    assert store.segments()[0].end == T0 + 6 * H  # no limit known: now, never less
    cost.open_compute(store, inst("aws", "i-2", price=1.0, run_id=None), None, now=T0)
    store.add_run(run("r2", max_hours=1.0))
    cost.open_compute(store, inst("aws", "i-3", price=1.0, run_id="r2"), "r2", now=T0)
    cost.sync_ledger(store, settings, "aws", [], last_seen={"i-3": T0 + 5 * H}, now=T0 + 6 * H)
    ends = {s.instance_id: s.end for s in store.segments()}
    assert ends["i-3"] == T0 + 5 * H  # seen billing then: at least that long


def test_stopped_aws_keeps_storage_and_stopped_droplet_keeps_billing(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    ebs = inst(price=1.0, disk_gb=100.0)
    cost.record_launch(store, settings, ebs, "r1", now=T0)
    stopped = ebs.evolve(state=InstanceState.STOPPED)
    found = cost.sync_ledger(
        store, settings, "aws", [stopped], last_seen={"i-1": T0 + H}, now=T0 + 2 * H
    )
    assert [f.action for f in found] == ["stopped"]
    open_kinds = {s.kind for s in store.segments(open_only=True)}
    assert open_kinds == {"storage"}
    droplet = inst("digitalocean", "d-1", price=2.0, run_id="r2")
    cost.record_launch(store, settings, droplet, "r2", now=T0)
    off = droplet.evolve(state=InstanceState.STOPPED)
    assert cost.sync_ledger(store, settings, "digitalocean", [off], now=T0 + H) == []
    assert cost.burn_rate(store.segments(provider="digitalocean"), T0 + H) == 2.0


class FakeProvider:
    kind = "aws"
    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    def list_instances(self, *, include_unmanaged: bool = False) -> Listing:
        return Listing("aws", tuple(self.instances))


def test_refresh_reconciles_and_records_a_flag(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, 'providers = ["aws"]\n')
    eng = Engine(settings, store)
    machine = inst(price=2.0, launched_at=T0)
    eng._providers["aws"] = FakeProvider([machine])
    eng.refresh(["aws"])
    events: list[dict[str, Any]] = store.events(kinds=["reconciled"])
    assert [e["action"] for e in events] == ["metered"] and events[0]["run_id"] == "r1"
    assert store.segments()[0].start == T0
    eng._providers["aws"] = FakeProvider([])
    eng.refresh(["aws"])
    assert [e["action"] for e in store.events(kinds=["reconciled"])] == ["metered", "closed"]
    assert store.segments(open_only=True) == []


class SpotProvider(FakeProvider):
    capabilities = frozenset({Capability.SPOT_PRICE_HISTORY})

    def __init__(self, instances: list[Instance], points: list[tuple[float, float]]) -> None:
        super().__init__(instances)
        self.points = points
        self.asked: list[float] = []

    def spot_price_history(self, instance: Instance, since: float) -> list[tuple[float, float]]:
        self.asked.append(since)
        return [p for p in self.points if p[0] >= since]


def test_refresh_samples_spot_prices_from_the_provider(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, 'providers = ["aws"]\n')
    eng = Engine(settings, store)
    spot = inst(price=0.30, market=Market.SPOT, launched_at=T0)
    cost.open_compute(store, spot, "r1", now=T0)
    fake = SpotProvider([spot], [(T0 + H, 0.45), (T0 + 2 * H, 0.45), (T0 + 3 * H, 0.20)])
    eng._providers["aws"] = fake
    eng.refresh(["aws"])
    assert fake.asked == [T0]
    assert [s.rate_per_hour for s in store.segments()] == [0.30, 0.45, 0.20]
    eng.refresh(["aws"])  # the same history again changes nothing
    assert len(store.segments()) == 3
    assert cost.spent(store, settings, now=T0 + 4 * H)[0] == pytest.approx(0.30 + 0.90 + 0.20)
