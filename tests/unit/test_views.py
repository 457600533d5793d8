"""The rules behind the numbers every front end shows (gpuctl.views): what a run will
cost, what a machine cost so far, what is left of a budget and of max hours."""

from __future__ import annotations

from dataclasses import replace

from gpuctl import cost
from gpuctl.estimate import Estimate
from gpuctl.models import RunStatus
from gpuctl.views import Totals, cost_so_far, max_hours_left
from tests.unit.test_state import make_run


def test_a_projection_needs_every_part_and_an_ended_run_costs_what_it_spent() -> None:
    assert cost.projected(2.0, 1.2, 1800.0, ended=False) == 2.0 + 0.6
    assert cost.projected(2.0, 1.2, -60.0, ended=False) == 2.0  # an overdue ETA adds nothing
    # Unknown burn or ETA: no projection (shown as N/A), never the spent sum passed off as one.
    assert cost.projected(2.0, None, 1800.0, ended=False) is None
    assert cost.projected(2.0, 1.2, None, ended=False) is None
    assert cost.projected(2.0, 1.2, 1800.0, ended=True) == 2.0


def test_a_machine_the_ledger_does_not_know_costs_its_listed_price_as_an_estimate() -> None:
    assert cost_so_far(4.5, 3.6, 7200.0) == (4.5, False)  # the ledger wins
    assert cost_so_far(None, 3.6, 1800.0) == (1.8, True)
    assert cost_so_far(None, None, 1800.0) == (None, False)  # unknown, never $0
    assert cost_so_far(None, 3.6, None) == (None, False)


def test_budget_left_and_its_level_read_the_month_against_the_monthly_budget() -> None:
    assert Totals(spent_month=30.0, budget=100.0).budget_left == 70.0
    assert Totals(spent_month=130.0, budget=100.0).budget_left == -30.0
    assert Totals(spent_month=130.0, budget=100.0).level == "over"
    assert Totals(spent_month=80.0, budget=100.0, warn_fraction=0.8).level == "warn"
    assert Totals(spent_month=5.0).budget_left is None and Totals().level == "none"


def test_max_hours_left_counts_from_the_runs_creation_and_stops_at_its_end() -> None:
    run = make_run(created_at=1000.0, spec={"max_hours": 2})
    assert max_hours_left(run, 1000.0 + 1800) == 2 * 3600 - 1800
    assert max_hours_left(run, 1000.0 + 3 * 3600) == 0.0  # past the limit: none left
    assert max_hours_left(make_run(created_at=1000.0), 2000.0) is None  # no limit
    ended = make_run(created_at=1000.0, spec={"max_hours": 2}, status=RunStatus.FINISHED)
    assert max_hours_left(ended, 2000.0) is None


def test_the_launch_forms_estimate_says_the_most_a_run_costs_and_what_a_budget_buys() -> None:
    est = Estimate(
        hours=2.0, cost=7.2, price_per_hour=3.6, gpu_class="A10G", instance_type="g5.xlarge",
        epochs=10, epoch_seconds=600.0, warmup_seconds=60.0, setup_seconds=120.0,
        basis="table", max_hours=4.0,
    )  # fmt: skip
    assert est.max_cost == 4.0 * 3.6
    assert est.seconds_for(9.0) == 2.5 * 3600
    unpriced = replace(est, price_per_hour=None, cost=None)
    assert unpriced.max_cost is None and unpriced.seconds_for(9.0) is None  # never "free"
    assert replace(est, max_hours=None).max_cost is None
