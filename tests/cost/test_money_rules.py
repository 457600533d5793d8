"""What the money numbers mean: config caps, shared budgets, stop margins, unknown prices,
the meter ending where the trainer ended, one answer in `ls` and `cost`, and the wording."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpuctl import cost, start
from gpuctl.estimate import estimate
from gpuctl.events import Notice, Resolved
from gpuctl.lifecycle import Engine
from gpuctl.models import InstanceState, LaunchSpec, RunStatus
from gpuctl.state import Store
from tests.cli import gpuctl, json_lines
from tests.cost.conftest import T0, inst, run, settings_with

# -- config caps -----------------------------------------------------------------------------


def test_config_max_hours_and_idle_minutes_cap_the_presets(gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[defaults]\nmax_hours = 2\nidle_minutes = 10\n")
    eng = Engine(settings, Store(gpuctl_home / "state.db"))
    full = eng.resolve("full")  # the preset says 48 h and 30 min
    assert (full.max_hours, full.idle_minutes) == (2.0, 10.0)
    validate = eng.resolve("validate")  # the preset's own 1 h is already below the cap
    assert validate.max_hours == 1.0
    # A flag on the command line is the user's explicit choice, above the cap or below.
    assert eng.resolve("full", max_hours=5.0, idle_minutes=45.0).max_hours == 5.0
    assert eng.resolve("full", max_hours=0.5).max_hours == 0.5
    # No [defaults] in config.toml: every preset keeps its own limits.
    plain = Engine(settings_with(gpuctl_home), Store(gpuctl_home / "state.db"))
    assert (plain.resolve("full").max_hours, plain.resolve("full").idle_minutes) == (48.0, 30.0)


@pytest.mark.slow
def test_config_cap_reaches_the_agent_on_the_machine(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text("[defaults]\nmax_hours = 2\n")
    tiny = ["epochs=1", "train_samples=32", "val_samples=16", "image_size=32", "width=8"]
    tiny += ["depth=2", "compile=false", "batch_size=16"]
    proc = gpuctl("launch", "full", *[a for t in tiny for a in ("--set", t)])
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    agent = json.loads((gpuctl_home / "local" / "runs" / run_id / "agent.json").read_text())
    assert agent["max_seconds"] == 7200  # not the full preset's 48 h
    status = gpuctl("status", run_id)
    assert "watchdog  max 2 h" in status.stdout


# -- budgets shared by concurrent runs --------------------------------------------------------


def spec(
    run_id: str = "new-run", budget: float | None = None, provider: str = "local"
) -> LaunchSpec:
    return LaunchSpec(run_id=run_id, preset="fast", provider=provider, budget=budget)


def test_agent_limits_of_concurrent_runs_add_up_to_the_monthly_budget(
    store: Store, gpuctl_home: Path
) -> None:
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 100\n")
    eng = Engine(settings, store)
    now = time.time()
    limits = []
    for i in range(4):
        rid = f"r{i}"
        store.add_run(run(rid, provider="local", created=now))
        machine = inst("local", f"local-{rid}", price=3600.0, run_id=rid, launched_at=now)
        cost.open_compute(store, machine, rid, now=now)
        agent = start.agent_config(eng, spec(rid), machine, 1, {"action": "none"})
        limits.append(agent["budget_seconds"])
    # $1 a second: the four agents' limits never add up to more than the $100.
    assert sum(limits) <= 100.0
    assert limits[0] == pytest.approx(100.0 - 10.0, abs=1.0)  # the first gets it, less its stop
    assert limits[1:] == [0.0, 0.0, 0.0]
    refusal = cost.launch_refusal(store, settings, spec("r9"), 5.0)
    assert refusal is not None and "held for 4 active runs" in refusal.message


def test_a_launch_still_provisioning_holds_its_estimate_against_the_budget(
    gpuctl_home: Path,
) -> None:
    """Each estimate ($15.45 at $1/s) fits the $25 left; both together do not. The first
    launch is admitted and stops before its machine bills (as a cloud create or boot wait
    takes minutes): the second, in another gpuctl, is refused for what the first holds."""
    from gpuctl.settings import load as load_settings

    (gpuctl_home / "config.toml").write_text(
        "[profiles.local]\nprice_per_hour = 3600.0\n[budget]\nmonthly = 25\n"
    )
    first = Engine(load_settings(), Store(gpuctl_home / "state.db"))
    launching = first.launch(first.resolve("validate"))
    seen = next(launching)
    while not isinstance(seen, Resolved):  # admitted: its run is recorded, nothing billed
        seen = next(launching)
    try:
        with Store(gpuctl_home / "state.db") as store:
            (admitted,) = store.list_runs(active=True)
            assert store.segments(run_id=admitted.id) == []
            second = Engine(load_settings(), store)
            events = list(second.launch(second.resolve("validate")))
            refused = [e for e in events if e.kind == "failed"]
            assert refused and "held for 1 active run" in refused[0].error, events
            assert [r.id for r in store.list_runs()] == [admitted.id]  # nothing recorded
    finally:
        launching.close()  # the interrupted launch is undone, as after a Ctrl-C
    with Store(gpuctl_home / "state.db") as store:
        assert [r.status for r in store.list_runs()] == [RunStatus.FAILED]
        assert cost.launch_refusal(store, first.settings, spec("later"), 15.45) is None


@pytest.mark.slow
def test_four_detached_runs_cannot_spend_four_monthly_budgets(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text(
        "[profiles.local]\nprice_per_hour = 3600.0\n[budget]\nmonthly = 60\n"
    )
    limits: list[float] = []
    launched: list[str] = []
    try:
        for _ in range(4):
            runs_dir = gpuctl_home / "local" / "runs"
            before = set(runs_dir.iterdir()) if runs_dir.exists() else set()
            proc = gpuctl("launch", "validate")
            if proc.returncode == 4:  # refused: one line, nothing created
                assert "held for 1 active run" in proc.stderr, proc.stderr
                assert set(runs_dir.iterdir()) == before
                continue
            assert proc.returncode == 0, proc.stderr
            run_id = proc.stdout.strip().splitlines()[-1]
            launched.append(run_id)
            agent = json.loads((runs_dir / run_id / "agent.json").read_text())
            limits.append(agent["budget_seconds"])
    finally:
        for run_id in launched:
            gpuctl("stop", run_id)
    assert launched, "the first launch fits the budget"
    assert sum(limits) * 1.0 <= 60.0  # $1 a second


# -- a budget stop stays within the budget ----------------------------------------------------


def test_stop_line_comes_early_by_what_stopping_costs(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[profiles.aws]\nstop_margin_seconds = 60\n")
    r = run("r1", provider="aws", budget=10.0)
    store.add_run(r)
    machine = inst("aws", "i-1", price=36.0, run_id="r1", launched_at=T0)
    cost.open_compute(store, machine, "r1", now=T0)
    # $0.01 a second, a 60 s stop: the stop line is $9.40; at $9.39 it is still a warning.
    states = cost.run_budgets(store, settings, r, T0 + 939)
    assert [(s.level, round(s.stop_at, 2)) for s in states] == [("warn", 9.4)]
    assert cost.seconds_to_threshold(states, 36.0) == pytest.approx(1.0)
    assert cost.exceeded(cost.run_budgets(store, settings, r, T0 + 941)) is not None
    # The agent's limit is shorter by the same margin.
    at = T0 + 100  # $1 spent, $9 left: 900 s at $0.01 a second, less the 60 s stop
    seconds = cost.agent_budget_seconds(store, settings, spec("r1", 10.0, "aws"), machine, now=at)
    assert seconds == pytest.approx(900.0 - 60.0)


def test_budget_below_the_minimum_charge_is_refused(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    refusal = cost.launch_refusal(
        store, settings, spec(budget=0.03, provider="aws"), 0.05, price_per_hour=3.0
    )
    assert refusal is not None and refusal.exit_code == 4
    assert "below the provider's minimum charge: $0.05 (60 s at $3.000/h)" in refusal.message
    assert cost.launch_refusal(store, settings, spec(budget=1.0, provider="aws"), 0.05) is None


def test_a_warning_crossed_in_the_last_stretch_is_reported(store: Store, gpuctl_home: Path) -> None:
    """No tick came between 80% and the end: the run's end reports it from the ledger."""
    settings = settings_with(gpuctl_home, "[profiles.local]\nprice_per_hour = 36.0\n")
    now = time.time()
    ended = run("r1", provider="local", budget=1.0, created=now - 90, status=RunStatus.FINISHED)
    store.add_run(ended.evolve(instance_id="x"))
    machine = inst("local", "x", price=36.0, run_id="r1", launched_at=now - 85)
    store.put_instance(machine)
    cost.open_compute(store, machine, "r1", now=now - 85)  # $0.85 of $1 when it ends
    eng = Engine(settings, store)
    events = list(eng.finish("r1", RunStatus.FINISHED))
    warnings = [e.message for e in events if isinstance(e, Notice) and "has spent" in e.message]
    assert len(warnings) == 1 and "of $1.00 (8" in warnings[0]
    assert [e["level"] for e in store.events("r1", kinds=["budget"])] == ["warn"]


@pytest.mark.slow
def test_budget_stopped_run_ends_within_its_budget(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text(
        "[profiles.local]\nprice_per_hour = 3600.0\n[budget]\nwarn_fraction = 0.5\n"
    )
    long = ["--set", "epochs=500", "--set", "train_samples=1024", "--set", "val_samples=64"]
    proc = gpuctl("run", "validate", *long, "--budget", "60", "--force", "--json", timeout=400)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr
    final = json_lines(proc.stdout)[-1]
    assert final["status"] == "budget"
    meter = json.loads(gpuctl("cost", "--json").stdout)
    (line,) = [r for r in meter["runs"] if r["key"] == final["run_id"]]
    assert line["spent"] <= 60.0  # the stop came early by what stopping costs
    assert final["cost"] <= 60.0
    store = Store(gpuctl_home / "state.db")
    assert "warn" in [e["level"] for e in store.events(final["run_id"], kinds=["budget"])]


# -- the meter bills what ran; an unknown price is not $0 -------------------------------------


def _local_run_dir(home: Path, run_id: str, ended_at: float) -> None:
    run_dir = home / "local" / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "agent_status.json").write_text(
        json.dumps({"state": "exited", "ended_at": ended_at, "agent_pid": None})
    )


def test_local_billing_ends_when_the_trainer_exited(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[profiles.local]\nprice_per_hour = 3600.0\n")
    eng = Engine(settings, store)
    now = time.time()
    _local_run_dir(gpuctl_home, "r1", ended_at=now - 40)  # ran 5 s, 40 s ago
    store.add_run(run("r1", provider="local", created=now - 45))
    machine = inst("local", "local-r1", price=3600.0, run_id="r1", launched_at=now - 45)
    cost.open_compute(store, machine, "r1", now=now - 45)
    eng.refresh(["local"])  # the listing sees it stopped: billed to the exit, not to now
    (seg,) = store.segments(run_id="r1")
    assert seg.end == pytest.approx(now - 40)
    spent, _ = cost.spent(store, settings, run_id="r1")
    assert spent == pytest.approx(5.0, abs=0.01)


def test_every_view_bills_a_finished_local_run_to_its_exit_without_a_listing(
    store: Store, gpuctl_home: Path
) -> None:
    """No `gpuctl ls` in between: `cost`, `status` and a budget check all see the run's
    machine stop billing when its trainer exited (it was shown billing $1/s for ever)."""
    (gpuctl_home / "config.toml").write_text(
        "[profiles.local]\nprice_per_hour = 3600.0\n[budget]\nmonthly = 30\n"
    )
    now = time.time()
    _local_run_dir(gpuctl_home, "r3", ended_at=now - 40)  # ran 5 s, 40 s ago
    store.add_run(run("r3", provider="local", created=now - 45))
    machine = inst("local", "local-r3", price=3600.0, run_id="r3", launched_at=now - 45)
    store.put_instance(machine)
    cost.open_compute(store, machine, "r3", now=now - 45)
    shown = json.loads(gpuctl("cost", "--json").stdout)
    assert shown["burn_now"] == 0.0
    assert shown["total"]["spent_today"] == pytest.approx(5.0, abs=0.05)  # not 45 s
    status = gpuctl("status", "r3", "--json")
    assert json.loads(status.stdout)["burn_per_hour"] == 0.0, status.stdout
    # $25 of the $30 is left, so a ~$15 launch is admitted (it was refused on $45 "spent").
    launched = gpuctl("launch", "validate")
    assert launched.returncode == 0, launched.stderr
    gpuctl("stop", launched.stdout.strip().splitlines()[-1])


def test_local_teardown_bills_to_the_trainer_exit(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[profiles.local]\nprice_per_hour = 3600.0\n")
    eng = Engine(settings, store)
    now = time.time()
    _local_run_dir(gpuctl_home, "r2", ended_at=now - 40)
    machine = inst("local", "local-r2", price=3600.0, run_id="r2", launched_at=now - 45)
    machine = machine.evolve(owner=settings.installation_id)  # this installation's machine
    cost.open_compute(store, machine, "r2", now=now - 45)
    list(eng.teardown("r2", machine, "terminate"))
    assert cost.spent(store, settings, run_id="r2")[0] == pytest.approx(5.0, abs=0.01)


def test_an_unknown_price_is_not_free_for_a_budget(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 50\n")
    for s in (spec(budget=5.0), spec()):  # a run budget, or the month's
        refusal = cost.launch_refusal(store, settings, s, None)
        assert refusal is not None and refusal.exit_code == 4
        assert "price of this machine is unknown" in refusal.message
        assert "cannot be checked" in refusal.message and "--force" in refusal.hint
    no_budget = settings_with(gpuctl_home)
    assert cost.launch_refusal(store, no_budget, spec(), None) is None  # warned, not refused


def test_a_known_price_without_an_estimate_is_not_called_unknown(
    store: Store, gpuctl_home: Path
) -> None:
    """A project command's first run has a price but no pace yet: the budget guard on the
    machine stops it at the budget; refusing it as 'price unknown' would be untrue."""
    settings = settings_with(gpuctl_home, "[budget]\nmonthly = 50\n")
    for price in (0.0, 1.2):
        assert (
            cost.launch_refusal(store, settings, spec(budget=5.0), None, price_per_hour=price)
            is None
        )
    refusal = cost.launch_refusal(store, settings, spec(budget=-1.0), None, price_per_hour=1.2)
    assert refusal is not None and "used up" in refusal.message  # nothing left still refuses


# -- one meaning for the money in `ls` and `cost` ---------------------------------------------


def test_ls_and_cost_agree_on_what_is_billing(gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home, 'providers = ["local", "aws"]\n')
    store = Store(settings.state_path)
    now = time.time()
    store.add_run(run("r1", provider="aws", created=now - 600))
    store.add_run(run("r2", provider="aws", created=now - 900, status=RunStatus.STOPPED))
    running = inst("aws", "i-run", price=36.0, run_id="r1", launched_at=now - 600)
    stopped = inst("aws", "i-stop", price=36.0, run_id="r2", launched_at=now - 900).evolve(
        state=InstanceState.STOPPED
    )
    hand = inst("aws", "i-hand", price=36.0, run_id=None).evolve(managed=False)
    foreign = inst("aws", "i-foreign", price=36.0, run_id="theirs-1", launched_at=now - 60)
    cost.open_compute(store, running, "r1", now=now - 600)
    cost.open_compute(store, stopped, "r2", now=now - 900)
    cost.stop_instance(store, settings, stopped, now - 300)
    store.put_instances("aws", [running, stopped, hand, foreign], complete=True)
    store.put_instances("local", [], complete=True)

    rows = {r["id"]: r for r in json_lines(gpuctl("ls", "--cached", "--all", "--json").stdout)}
    meter = json.loads(gpuctl("cost", "--json").stdout)
    burning = [r for r in rows.values() if r["burn_per_hour"]]
    assert sum(r["burn_per_hour"] for r in burning) == pytest.approx(
        meter["total"]["burn_per_hour"]
    )
    assert len(burning) == len([i for i in meter["instances"] if i["burn_per_hour"] > 0]) == 1
    assert rows["i-stop"]["burn_per_hour"] == 0.0
    for iid in ("i-hand", "i-foreign"):
        assert rows[iid]["burn_per_hour"] is None and not rows[iid]["metered"]
    assert "not created by gpuctl" in rows["i-hand"]["meter_note"]
    assert "another gpuctl's run (theirs-1)" in rows["i-foreign"]["meter_note"]
    text = gpuctl("ls", "--cached", "--all").stdout
    hand_line = next(line for line in text.splitlines() if "i-hand" in line)
    assert "$36.000" in hand_line and "not metered: not created by gpuctl" in hand_line
    assert "$36.000" not in next(line for line in text.splitlines() if "i-stop" in line)


# -- wording ----------------------------------------------------------------------------------


def test_short_estimates_read_in_seconds_or_minutes_and_name_the_minimum() -> None:
    resolved = Resolved("r1", "validate", "local", estimate_hours=15.45 / 3600, estimate_cost=15.45)
    assert resolved.text().endswith("estimate ~15 s / $15.45")
    short = estimate({"epochs": 1}, price_per_hour=3.0, minimum_seconds=60.0, provider_kind="local")
    assert short.hours * 3600 < 60 and short.minimum_note == "60 s minimum"
    assert "~$0.05 (60 s minimum)" in short.text()
    three = Resolved(
        "r1", "validate", "aws", estimate_hours=0.05, estimate_cost=0.05, estimate_note=""
    )
    assert "estimate ~3 min / $0.05" in three.text()


def test_counts_agree_with_their_words() -> None:
    from gpuctl.console import plural

    assert [plural(n, "offer") for n in (0, 1, 2)] == ["0 offers", "1 offer", "2 offers"]
    assert plural(1, "try", "tries") == "1 try" and plural(3, "try", "tries") == "3 tries"
