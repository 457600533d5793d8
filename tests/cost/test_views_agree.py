"""One view of the money: `gpuctl cost --json`, `gpuctl cost`, `gpuctl status --json` and
the control center's header and run screen say the same numbers for the same state
(gpuctl.views builds them once), listed machines gpuctl does not meter included (a
forgotten box bills as much as a run does)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpuctl import cost
from gpuctl.format import money, rate
from gpuctl.lifecycle import Engine
from gpuctl.models import InstanceState
from gpuctl.settings import load
from gpuctl.state import Store
from gpuctl.tui.app import create_app
from gpuctl.tui.model import build_snapshot
from gpuctl.tui.screens.run import RunScreen
from tests.cli import gpuctl
from tests.cost.conftest import inst, run
from tests.tui.conftest import screen_text, wait_for


def test_cost_json_cost_text_and_the_tui_header_agree(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text('providers = ["local"]\n')
    now = time.time()
    with Store(gpuctl_home / "state.db") as store:
        store.add_run(run("r1", provider="local", created=now - 600))
        metered = inst("local", "local-r1", price=1.2, run_id="r1", launched_at=now - 600)
        store.put_instance(metered)
        cost.open_compute(store, metered, "r1", now=now - 600)
        # Not gpuctl's and never metered: it still burns money now.
        store.put_instance(inst("local", "box-1", price=0.8, run_id=None, launched_at=now))
        # Off, on a provider where off does not bill: not burning.
        off = inst("local", "box-2", price=5.0, run_id=None, state=InstanceState.STOPPED)
        store.put_instance(off)
        header = build_snapshot(store, load(), time.time()).meter.totals

    shown = json.loads(gpuctl("cost", "--json").stdout)
    assert shown["unmetered"] == ["local/box-1"]
    assert round(shown["burn_now"], 6) == round(1.2 + 0.8, 6)
    assert round(header.burn_now, 6) == round(shown["burn_now"], 6)
    text = gpuctl("cost").stdout
    assert "$2.000/h burning on 2 instances" in text, text
    assert "$0.800/h of it on 1 listed machine gpuctl does not meter" in text, text


async def test_cost_status_and_the_control_center_say_the_same_numbers(gpuctl_home: Path) -> None:
    """Burn, spent today and this month, the budget left, and one run's cost so far and
    projected total: `gpuctl cost --json`, `gpuctl status --json`, the header and the run
    screen of the control center, all from one state. Money moves while they are read
    (a machine bills by the second): each pair may differ by at most what the burn adds
    between the first read and the last."""
    (gpuctl_home / "config.toml").write_text('providers = ["local"]\n[budget]\nmonthly = 100.0\n')
    now = time.time()
    with Store(gpuctl_home / "state.db") as store:
        store.add_run(run("r1", provider="local", budget=50.0, created=now - 7200))
        store.update_run("r1", eta_seconds=1800.0)
        metered = inst("local", "local-r1", price=1.2, run_id="r1", launched_at=now - 3600)
        store.put_instance(metered)
        store.update_run("r1", instance_id=metered.id)
        cost.open_compute(store, metered, "r1", now=now - 3600)
        store.put_instance(inst("local", "box-1", price=0.8, run_id=None, launched_at=now))

    first = time.time()
    shown = json.loads(gpuctl("cost", "--json").stdout)
    status = json.loads(gpuctl("status", "r1", "--json").stdout)
    app = create_app(Engine(), live=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        header = screen_text(app)[0]
        totals = app.snapshot.meter.totals
        app.main.table.select_key("run:r1")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, RunScreen), what="the run screen")
        await pilot.pause()
        run_screen = "\n".join(screen_text(app))
        summary = app.snapshot.runs["r1"]
        await pilot.press("escape")
        await pilot.press("c")
        await wait_for(lambda: "burning" in "".join(screen_text(app)), what="the cost screen")
        cost_screen = "\n".join(screen_text(app))
    slack = 2.0 * (time.time() - first) / 3600.0  # $2/h burning, over the reads

    assert round(shown["burn_now"], 6) == round(totals.burn_now, 6) == 2.0
    assert abs(shown["total"]["spent_today"] - totals.spent_today) <= slack
    assert abs(shown["total"]["spent_month"] - totals.spent_month) <= slack
    assert shown["total"]["budget"] == totals.budget == 100.0
    assert totals.budget_left == 100.0 - totals.spent_month
    assert f"{rate(totals.burn_now)} now · today {money(totals.spent_today)}" in header, header
    assert f"month {money(totals.spent_month)} of $100" in header, header
    # The run: what `gpuctl status` says is what the run screen says.
    assert status["burn_per_hour"] == summary.burn_per_hour == 1.2
    assert abs(status["spent"] - summary.spent) <= slack + 0.0001  # status rounds to 4
    assert status["projected_total"] is not None and summary.projected_total is not None
    assert abs(status["projected_total"] - summary.projected_total) <= slack
    assert round(summary.projected_total - summary.spent, 6) == round(1.2 * 1800 / 3600, 6)
    assert f"cost {money(summary.spent)} so far  {rate(1.2)}" in run_screen, run_screen
    assert f"projected {money(summary.projected_total)}" in run_screen, run_screen
    # The cost screen (c) leads with the same burn as the header and `gpuctl cost`.
    assert f"burning {rate(2.0)} ({rate(0.8)} on 1 listed, unmetered)" in cost_screen, cost_screen
