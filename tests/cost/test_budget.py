"""Budgets: thresholds fire once each, launches over budget are refused, the agent's limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gpuctl import cost, follow
from gpuctl.errors import EXIT_BUDGET
from gpuctl.events import CostTick, Notice
from gpuctl.lifecycle import Engine
from gpuctl.models import LaunchSpec, RunStatus
from gpuctl.state import Store
from tests.cost.conftest import T0, inst, run, settings_with

DAY = 86400.0


def spend(store: Store, provider: str, iid: str, run_id: str, dollars: float, at: float) -> None:
    """A segment ending at `at` that cost exactly `dollars`: $36/h, 100 s a dollar (whole
    seconds, and past every provider's billing minimum for the amounts used here)."""
    start = at - round(dollars * 100)
    machine = inst(provider, iid, price=36.0, run_id=run_id, launched_at=start)
    cost.open_compute(store, machine, run_id, now=start)
    cost.close_instance(store, machine, at)


def levels(alerts: list[cost.Alert]) -> list[tuple[str, str]]:
    return [(a.state.scope, a.level) for a in alerts]


def test_run_thresholds_fire_once_each_across_processes(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)  # warn_fraction 0.8
    r = run("r1", provider="local", budget=100.0)
    store.add_run(r)
    other = Store(gpuctl_home / "state.db")  # the TUI following the same run

    spend(store, "local", "l-1", "r1", 79.0, T0)
    assert cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0 + 100), T0) == []
    spend(store, "local", "l-2", "r1", 2.0, T0 + 200)  # 81%
    fired = cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0 + 300), T0)
    assert levels(fired) == [("run", "warn")]
    assert "has spent $81.00 of $100.00 (81%)" in fired[0].message
    assert cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0 + 300), T0) == []
    assert cost.fire_alerts(other, cost.run_budgets(other, settings, r, T0 + 300), T0) == []

    spend(store, "local", "l-3", "r1", 20.0, T0 + 400)  # 101%
    states = cost.run_budgets(other, settings, r, T0 + 500)
    assert cost.exceeded(states) is not None
    fired = cost.fire_alerts(other, states, T0)
    assert levels(fired) == [("run", "stop")] and "budget reached" in fired[0].message
    assert cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0 + 600), T0) == []


def test_a_jump_past_100_percent_reports_the_stop_only(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 10\n")
    r = run("r1", provider="local")
    spend(store, "local", "l-1", "r1", 12.0, T0)
    fired = cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0 + 60), T0)
    assert levels(fired) == [("month", "stop")]
    assert {a["level"] for a in store.alerts(scope="month")} == {"warn", "stop"}


def test_provider_budget_is_per_month_and_fires_again_next_month(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home, "[budget.per_provider]\naws = 10\n")
    r = run("r1", provider="aws")
    spend(store, "aws", "i-1", "r1", 9.0, T0)
    assert levels(cost.fire_alerts(store, cost.run_budgets(store, settings, r, T0), T0)) == [
        ("provider", "warn")
    ]
    # Another provider's spend does not count against aws.
    spend(store, "local", "l-1", "r2", 50.0, T0 + 100)
    states = cost.run_budgets(store, settings, r, T0 + 200)
    assert [s.level for s in states] == ["warn"]
    later = T0 + 31 * DAY
    spend(store, "aws", "i-2", "r1", 8.5, later)
    fired = cost.fire_alerts(store, cost.run_budgets(store, settings, r, later + 60), later)
    assert levels(fired) == [("provider", "warn")]


def spec(budget: float | None = None, provider: str = "local") -> LaunchSpec:
    return LaunchSpec(run_id="new-run", preset="fast", provider=provider, budget=budget)


def test_launch_over_the_run_budget_is_refused(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    assert cost.launch_refusal(store, settings, spec(), 1e6, now=T0) is None  # no budget
    refusal = cost.launch_refusal(store, settings, spec(budget=5.0), 7.5, now=T0)
    assert refusal is not None and refusal.exit_code == EXIT_BUDGET
    assert refusal.message == "estimated $7.50 exceeds the run budget of $5.00"
    assert "--force" in refusal.hint
    assert cost.launch_refusal(store, settings, spec(budget=5.0), 4.0, now=T0) is None


def test_launch_over_what_is_left_this_month_is_refused(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 10\n")
    spend(store, "local", "l-1", "old", 8.0, T0 - 2 * DAY)  # same month
    spend(store, "local", "l-0", "older", 500.0, T0 - 40 * DAY)  # last month: not counted
    refusal = cost.launch_refusal(store, settings, spec(budget=50.0), 3.0, now=T0)
    assert refusal is not None
    assert "monthly budget ($10.00): $2.00 left" in refusal.message
    assert cost.launch_refusal(store, settings, spec(budget=50.0), 1.5, now=T0) is None
    # Used up: refused even when nothing is known about the cost of the new run.
    spend(store, "local", "l-2", "old", 2.5, T0 - DAY)
    refusal = cost.launch_refusal(store, settings, spec(), None, now=T0)
    assert refusal is not None and "used up ($0.50 over)" in refusal.message


def test_launch_over_the_provider_budget_is_refused(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[budget.per_provider]\namd = 20\n")
    spend(store, "amd", "d-1", "old", 15.0, T0 - DAY)
    refusal = cost.launch_refusal(store, settings, spec(provider="amd"), 6.0, now=T0)
    assert refusal is not None and "amd budget ($20.00/month): $5.00 left" in refusal.message
    assert cost.launch_refusal(store, settings, spec(provider="local"), 6.0, now=T0) is None


def test_agent_time_limit_is_remaining_budget_over_price(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    machine = inst("aws", "i-1", price=2.0, run_id="new-run", launched_at=T0)
    cost.open_compute(store, machine, "new-run", now=T0)
    # $10 budget, 30 minutes at $2/h already spent: $9 left = 4.5 h, less the time a stop
    # takes to end the bill on AWS.
    seconds = cost.agent_budget_seconds(store, settings, spec(budget=10.0), machine, now=T0 + 1800)
    assert seconds == pytest.approx(4.5 * 3600 - cost.billing_of_kind("aws").stop_margin_seconds)
    assert cost.agent_budget_seconds(store, settings, spec(), machine, now=T0) is None
    free = machine.evolve(price_per_hour=0.0)
    assert cost.agent_budget_seconds(store, settings, spec(budget=10.0), free, now=T0) is None


def test_agent_time_limit_counts_the_disk_and_the_tightest_budget(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 3\n")
    machine = inst("aws", "i-1", price=0.92, disk_gb=730.0, run_id="new-run")  # +$0.08/h disk
    seconds = cost.agent_budget_seconds(store, settings, spec(budget=50.0), machine, now=T0)
    # The month's $3 at $1.00/h, less the stop margin.
    assert seconds == pytest.approx(3 * 3600 - cost.billing_of_kind("aws").stop_margin_seconds)
    spend(store, "local", "l-1", "other", 3.5, T0 - 100)
    assert cost.agent_budget_seconds(store, settings, spec(budget=50.0), machine, now=T0) == 0.0


def test_next_threshold_comes_sooner_at_a_high_burn() -> None:
    state = cost.BudgetState("run", "r1", 10.0, 7.0, 0.8)
    assert cost.seconds_to_threshold([state], 3600.0) == pytest.approx(1.0)  # $1 to 80%
    past_warn = cost.BudgetState("run", "r1", 10.0, 9.0, 0.8)
    assert cost.seconds_to_threshold([past_warn], 3600.0) == pytest.approx(1.0)  # to 100%
    assert cost.seconds_to_threshold([state], 0.0) is None


def test_followers_warn_once_and_stop_at_the_budget(store: Store, gpuctl_home: Path) -> None:
    """Two engines (CLI and TUI) tick the same run: one warning, one stop notice in all."""
    settings = settings_with(gpuctl_home, "[profiles.local]\nprice_per_hour = 36.0\n")
    now = time.time()
    store.add_run(run("r1", provider="local", budget=1.0, created=now))
    machine = inst("local", "local-r1", price=36.0, launched_at=now - 85, run_id="r1")
    cost.open_compute(store, machine, "r1", now=now)  # $0.85 of $1 spent
    cli, tui = Engine(settings, store), Engine(settings, Store(gpuctl_home / "state.db"))
    first = list(follow.cost_tick(cli, "r1", set()))
    assert isinstance(first[0], CostTick) and first[0].budget == 1.0
    assert first[0].spent == pytest.approx(0.85, abs=0.02)
    warnings = [e for e in first if isinstance(e, Notice)]
    assert [w.level for w in warnings] == ["warning"]
    assert not [e for e in list(follow.cost_tick(tui, "r1", set())) if isinstance(e, Notice)]
    assert not [e for e in list(follow.cost_tick(cli, "r1", set())) if isinstance(e, Notice)]
    # Over budget: the run is marked for a budget stop (no machine here, so it says so).
    spend(store, "local", "local-old", "r1", 0.5, now - 3600)
    events = list(follow.cost_tick(tui, "r1", set()))
    texts = [e.message for e in events if isinstance(e, Notice)]
    assert any(t.startswith("budget reached: run r1") for t in texts)
    assert any("budget stop failed" in t for t in texts)
    assert store.get_run("r1").reason == "budget"
    assert store.get_run("r1").status == RunStatus.RUNNING  # the follower records the end


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[budget]\nmonthly = 0\n", "budget.monthly must be positive"),
        ("[budget]\nmonthly = -5\n", "budget.monthly must be positive"),
        ('[budget]\ncurrency = "EUR"\n', "unknown currency 'EUR'"),
        ("[budget.per_provider]\naws = -1\n", "budget.per_provider.aws must be a positive"),
        ('[budget]\non_exceed = "pause"\n', "must be 'terminate' or 'stop'"),
    ],
)
def test_bad_budget_config_is_one_clear_error(gpuctl_home: Path, toml: str, needle: str) -> None:
    from gpuctl.errors import ConfigError

    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        settings_with(gpuctl_home, toml)


class TeardownProvider:
    """Just enough of a provider for Engine.finish: it records what was asked of it."""

    kind = "aws"
    capabilities: frozenset[object] = frozenset()

    def __init__(self) -> None:
        from gpuctl.providers.aws import AwsProvider

        self.billing = AwsProvider.billing
        self.calls: list[str] = []

    def host(self, instance: object) -> object:
        from gpuctl.errors import RemoteError

        raise RemoteError("unreachable in this test")

    def stop(self, instance: object) -> None:
        self.calls.append("stop")

    def terminate(self, instance: object, *, wait: bool = True) -> None:
        self.calls.append("terminate")


@pytest.mark.parametrize(("policy", "action"), [("stop", "stopped"), ("terminate", "terminated")])
def test_budget_end_tears_down_by_the_on_exceed_policy(
    store: Store, gpuctl_home: Path, policy: str, action: str
) -> None:
    from gpuctl.events import TornDown

    settings = settings_with(gpuctl_home, f'[budget]\non_exceed = "{policy}"\n')
    r = run("r1", provider="aws", budget=5.0, teardown="keep")  # --teardown keep: overridden
    store.add_run(r.evolve(instance_id="i-1"))
    machine = inst(price=1.0, disk_gb=100.0)
    store.put_instance(machine)
    cost.record_launch(store, settings, machine, "r1", now=time.time() - 60)
    eng = Engine(settings, store)
    fake = TeardownProvider()
    eng._providers["aws"] = fake
    events = list(eng.finish("r1", RunStatus.BUDGET))
    assert fake.calls == [policy]
    assert [e.action for e in events if isinstance(e, TornDown)] == [action]
    open_kinds = {s.kind for s in store.segments(open_only=True)}
    # Stopped on AWS: the disk still bills. Terminated: nothing does.
    assert open_kinds == ({"storage"} if policy == "stop" else set())
