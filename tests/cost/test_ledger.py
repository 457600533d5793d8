"""Ledger arithmetic with frozen clocks: what each provider really bills, to the cent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpuctl import cost
from gpuctl.models import InstanceState, Market, PriceSegment
from gpuctl.settings import load
from gpuctl.state import Store
from tests.cost.conftest import T0, inst, run, settings_with


def spent_at(store: Store, gpuctl_home: Path, now: float, run_id: str | None = None) -> float:
    """Dollars owed at `now` under the config in gpuctl_home (absent = defaults)."""
    return cost.spent(store, load(), run_id=run_id, now=now)[0]


def test_billing_rules_come_from_one_table() -> None:
    table = cost.billing_table()
    assert table["aws"].minimum_seconds == 60 and not table["aws"].billed_when_stopped
    assert table["aws"].storage_gb_month > 0
    assert (
        table["digitalocean"].minimum_seconds == 300 and table["digitalocean"].billed_when_stopped
    )
    assert table["local"].minimum_seconds == 0 and table["ssh"].minimum_seconds == 0


def test_aws_bills_per_second_after_a_60_second_minimum(store: Store, gpuctl_home: Path) -> None:
    cost.open_compute(store, inst(price=3.6), "r1", now=T0)  # $3.60/h = $0.001/s
    assert spent_at(store, gpuctl_home, T0 + 10) == pytest.approx(0.060)  # the minimum
    assert spent_at(store, gpuctl_home, T0 + 59) == pytest.approx(0.060)
    assert spent_at(store, gpuctl_home, T0 + 90) == pytest.approx(0.090)
    assert spent_at(store, gpuctl_home, T0 + 90.2) == pytest.approx(0.091)  # whole seconds
    cost.close_instance(store, inst(), T0 + 3600)
    assert spent_at(store, gpuctl_home, T0 + 99999) == pytest.approx(3.6)  # closed: no more


def test_digitalocean_minimum_is_five_minutes(store: Store, gpuctl_home: Path) -> None:
    droplet = inst("digitalocean", "d-1", price=1.99 * 6)  # $11.94/h
    cost.open_compute(store, droplet, "r1", now=T0)
    cost.close_instance(store, droplet, T0 + 120)  # destroyed after 2 minutes
    assert spent_at(store, gpuctl_home, T0 + 1000) == pytest.approx(11.94 * 300 / 3600)


def test_local_is_the_configured_rate_with_no_minimum(store: Store, gpuctl_home: Path) -> None:
    cost.open_compute(store, inst("local", "local-r1", price=36.0), "r1", now=T0)
    assert spent_at(store, gpuctl_home, T0 + 1) == pytest.approx(0.01)
    assert spent_at(store, gpuctl_home, T0 + 100) == pytest.approx(1.0)


def test_minimum_applies_per_start_not_per_segment(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst(price=3.6)
    cost.open_compute(store, machine, "r1", now=T0)
    assert cost.stop_instance(store, settings, machine, T0 + 20)
    cost.open_compute(store, machine, "r1", T0 + 500, now=T0 + 500, source="restart")
    cost.close_instance(store, machine, T0 + 520)
    # Two starts of 20 s each: AWS bills 60 s for each.
    assert spent_at(store, gpuctl_home, T0 + 9999) == pytest.approx(0.120)


def test_spot_price_change_opens_a_new_segment(store: Store, gpuctl_home: Path) -> None:
    spot = inst(price=0.36, market=Market.SPOT)
    cost.open_compute(store, spot, "r1", now=T0)
    assert cost.record_spot_price(store, spot, 0.36, T0 + 600) is None  # unchanged price
    new = cost.record_spot_price(store, spot, 0.72, T0 + 1800)
    assert new is not None and new.rate_per_hour == 0.72 and new.source == "spot"
    segs = store.segments(instance_id="i-1")
    assert [(s.start, s.end, s.rate_per_hour) for s in segs] == [
        (T0, T0 + 1800, 0.36),
        (T0 + 1800, None, 0.72),
    ]
    # Half an hour at 0.36, then half an hour at 0.72; one session, one minimum (met).
    assert spent_at(store, gpuctl_home, T0 + 3600) == pytest.approx(0.18 + 0.36)
    assert cost.burn_rate(store.segments(), T0 + 3600) == pytest.approx(0.72)


def test_spot_backfill_reprices_the_time_gpuctl_was_closed(store: Store, gpuctl_home: Path) -> None:
    spot = inst(price=0.30, market=Market.SPOT)
    cost.open_compute(store, spot, "r1", now=T0)
    history = [(T0 - 500, 0.30), (T0 + 3600, 0.60), (T0 + 7200, 0.60), (T0 + 10800, 0.15)]
    assert cost.backfill_spot_prices(store, spot, history) == 2
    assert cost.backfill_spot_prices(store, spot, history) == 0  # idempotent
    rates = [s.rate_per_hour for s in store.segments(instance_id="i-1")]
    assert rates == [0.30, 0.60, 0.15]
    assert spent_at(store, gpuctl_home, T0 + 4 * 3600) == pytest.approx(0.30 + 1.20 + 0.15)


def test_stopped_ebs_instance_bills_storage_only(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst(price=1.0, disk_gb=730.0)  # 730 GB x $0.08/GB-month = $0.08/h
    opened = cost.record_launch(store, settings, machine, "r1", now=T0)
    assert sorted(s.kind for s in opened) == ["compute", "storage"]
    assert cost.burn_rate(store.segments(), T0 + 1) == pytest.approx(1.08)
    cost.stop_instance(store, settings, machine, T0 + 3600)
    assert cost.burn_rate(store.segments(), T0 + 3601) == pytest.approx(0.08)
    after_stop = spent_at(store, gpuctl_home, T0 + 3600)
    assert after_stop == pytest.approx(1.08)
    assert spent_at(store, gpuctl_home, T0 + 3 * 3600) == pytest.approx(after_stop + 0.16)
    cost.close_instance(store, machine, T0 + 3 * 3600)  # terminated: the disk goes too
    assert spent_at(store, gpuctl_home, T0 + 10 * 3600) == pytest.approx(after_stop + 0.16)


def test_powered_off_droplet_still_bills_full_price(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    droplet = inst("amd", "d-9", price=1.99)
    cost.record_launch(store, settings, droplet, "r1", now=T0)
    assert not cost.stop_instance(store, settings, droplet, T0 + 3600)  # power off
    assert cost.burn_rate(store.segments(), T0 + 7200) == pytest.approx(1.99)
    assert spent_at(store, gpuctl_home, T0 + 7200) == pytest.approx(2 * 1.99)


def test_provider_clock_ahead_of_ours_is_not_a_future_launch(
    store: Store, gpuctl_home: Path
) -> None:
    # The machine says it launched 10 minutes from now: skew. Bill from our now instead.
    seg = cost.open_compute(
        store, inst("local", "l-1", price=36.0, launched_at=T0 + 600), None, now=T0
    )
    assert seg is not None and seg.start == T0
    assert spent_at(store, gpuctl_home, T0 + 60) == pytest.approx(0.6)
    # A launch time in the past (the provider's truth) is kept as is.
    seg2 = cost.open_compute(
        store, inst("local", "l-2", price=36.0, launched_at=T0 - 100), None, now=T0
    )
    assert seg2 is not None and seg2.start == T0 - 100


def test_segment_from_a_clock_ahead_owes_nothing_until_then() -> None:
    seg = PriceSegment("aws", "i-1", None, "g5", "us", "on-demand", 3.6, start=T0 + 100)
    owed = cost.charges([seg], lambda _p: cost.billing_of_kind("aws"), T0)
    assert sum(c.amount for c in owed) == 0.0
    assert cost.burn_rate([seg], T0) == 0.0


def test_open_compute_is_idempotent_and_needs_a_price(store: Store) -> None:
    first = cost.open_compute(store, inst(), "r1", now=T0)
    again = cost.open_compute(store, inst(), "r1", now=T0 + 50)
    assert first is not None and again is not None and first.id == again.id
    assert cost.open_compute(store, inst("aws", "i-noprice", price=None), "r1", now=T0) is None
    assert len(store.segments()) == 1


def test_meter_splits_today_month_provider_run_instance(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(
        gpuctl_home, "[budget]\nmonthly = 100\n[budget.per_provider]\naws = 10\n"
    )
    day = 86400.0
    # Yesterday 2 h on AWS ($3.60/h), closed; today a local run still going at $36/h.
    cost.open_compute(store, inst(price=3.6, launched_at=T0 - day), "r1", now=T0 - day)
    cost.close_instance(store, inst(), T0 - day + 7200)
    cost.open_compute(store, inst("local", "local-r2", price=36.0, run_id="r2"), "r2", now=T0)
    m = cost.meter(store, settings, now=T0 + 600)
    assert m.total.burn_per_hour == pytest.approx(36.0)
    assert m.total.spent_today == pytest.approx(6.0)
    assert m.total.spent_month == pytest.approx(7.2 + 6.0)
    assert m.total.budget == 100
    by_provider = {p.key: p for p in m.providers}
    assert by_provider["aws"].spent_month == pytest.approx(7.2)
    assert by_provider["aws"].spent_today == 0.0 and by_provider["aws"].budget == 10
    runs = {r.key: r for r in m.runs}
    assert runs["r1"].spent == pytest.approx(7.2) and runs["r1"].hours == pytest.approx(2.0)
    assert runs["r2"].spent == pytest.approx(6.0) and runs["r2"].burn_per_hour == 36.0
    assert {i.key for i in m.instances} == {"aws/i-1", "local/local-r2"}
    assert cost.describe(runs["r1"]) == "2.0 h elapsed, ~$7.20 spent"
    # Next month, the month's spend starts over; a run still going keeps its whole cost,
    # one that ended last month has left the meter (the report still has it).
    later = cost.meter(store, settings, now=T0 + 31 * day)
    assert [r.key for r in later.runs] == ["r2"]
    assert later.runs[0].spent == pytest.approx(31 * 24 * 36.0)
    since_april_1st = T0 + 31 * day - cost.month_start(T0 + 31 * day)  # April 10th, noon
    assert since_april_1st == 9.5 * day
    assert later.total.spent_month == pytest.approx(since_april_1st / 3600 * 36.0)
    by_provider = {p.key: p for p in later.providers}
    assert by_provider["aws"].spent_month == 0.0


def test_meter_line_describes_like_fresnel(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    cost.open_compute(store, inst(price=1.992), "r1", now=T0)

    store.add_run(run("r1", budget=12.0))
    line = cost.run_line(store, settings, "r1", now=T0 + 2.5 * 3600)
    assert cost.describe(line).startswith("2.5 h elapsed, ~$4.98 spent, $1.992/h now")
    assert "42% of $12.00" in cost.describe(line)  # 4.98 / 12


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("abc", "must be a number of USD per hour"),
        ("3.5", "without quotes"),
        ("3 EUR", "unknown currency 'EUR'"),
        ("€3", "unknown currency"),
        ("$3.50/h", "without quotes"),
        (-1.0, "zero or more"),
        (float("nan"), "zero or more"),
        (True, "must be a number"),
    ],
)
def test_bad_price_override_is_a_config_error(value: object, needle: str) -> None:
    from gpuctl.errors import ConfigError
    from gpuctl.settings import Profile

    with pytest.raises(ConfigError) as info:
        cost.profile_price(Profile("local", "local", {"price_per_hour": value}))
    assert needle in info.value.message + " " + info.value.hint


def test_good_price_overrides() -> None:
    from gpuctl.settings import Profile

    assert cost.profile_price(Profile("local", "local", {"price_per_hour": 0})) == 0.0
    assert cost.profile_price(Profile("ssh", "ssh", {"price_per_hour": 2})) == 2.0
    assert cost.profile_price(Profile("aws", "aws", {})) is None


def test_stopped_state_is_not_billed_compute_on_aws(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst(price=3.6, state=InstanceState.STOPPED)
    found = cost.sync_ledger(store, settings, "aws", [machine], now=T0)
    assert found == [] and store.segments() == []


def test_resumed_machine_is_not_billed_twice_for_time_already_closed(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home)
    local = inst("local", "local-r1", price=36.0, launched_at=T0)  # launch time = first boot
    cost.open_compute(store, local, "r1", now=T0)
    cost.stop_instance(store, settings, local, T0 + 100)  # gpuctl stop
    resumed = cost.open_compute(store, local, "r1", now=T0 + 1000, source="restart")
    assert resumed is not None and resumed.start == T0 + 100
    assert spent_at(store, gpuctl_home, T0 + 1000) == pytest.approx(10.0)


def test_agent_limits_ignore_the_machines_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP stepping the machine's clock a day ahead must not fire (or delay) the budget."""
    import json
    import time as time_module

    from gpuctl.agent import agent

    (tmp_path / "agent.json").write_text(json.dumps({"budget_seconds": 100.0}))
    sup = agent.Supervisor(tmp_path)
    wall, mono = time_module.time(), time_module.monotonic()
    monkeypatch.setattr(agent.time, "time", lambda: wall + 86400)
    monkeypatch.setattr(agent.time, "monotonic", lambda: mono + 50)
    assert sup.check_limits() is None
    monkeypatch.setattr(agent.time, "monotonic", lambda: mono + 101)
    reason = sup.check_limits()
    assert reason is not None and reason.startswith("budget reached")


def test_agent_stops_at_once_when_no_budget_is_left(tmp_path: Path) -> None:
    import json

    from gpuctl.agent import agent

    (tmp_path / "agent.json").write_text(json.dumps({"budget_seconds": 0.0}))
    reason = agent.Supervisor(tmp_path).check_limits()
    assert reason is not None and reason.startswith("budget reached")
