"""The budget guard through the real CLI on the local provider, priced at $1 a second."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import gpuctl, json_lines

pytestmark = pytest.mark.slow

# $1/s: seconds cost dollars. Budgets of $60 leave the trainer time to start (and install
# its SIGTERM handler, so it checkpoints) even on a busy test machine.
PRICED = "[profiles.local]\nprice_per_hour = 3600.0\n"
LONG = ["--set", "epochs=500", "--set", "train_samples=1024", "--set", "val_samples=64"]


def priced(home: Path, extra: str = "") -> None:
    (home / "config.toml").write_text(PRICED + extra)


def nothing_created(home: Path) -> bool:
    runs_dir = home / "local" / "runs"
    no_dirs = not runs_dir.exists() or not any(runs_dir.iterdir())
    db = home / "state.db"
    return no_dirs and (not db.exists() or Store(db).list_runs() == [])


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("command", ["run", "launch"])
def test_launch_whose_estimate_exceeds_the_budget_is_refused(
    gpuctl_home: Path, command: str
) -> None:
    priced(gpuctl_home)
    proc = gpuctl(command, "validate", *LONG, "--budget", "5")
    assert proc.returncode == 4, (proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "exceeds the run budget of $5.00" in errors[0]
    assert "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert nothing_created(gpuctl_home)
    as_json = json_lines(gpuctl(command, "validate", *LONG, "--budget", "5", "--json").stdout)
    assert as_json[0]["event"] == "resolved" and as_json[0]["estimate_cost"] > 5
    assert as_json[-1]["event"] == "failed" and as_json[-1]["exit_code"] == 4
    assert nothing_created(gpuctl_home)


def test_monthly_budget_already_spent_refuses_a_launch(gpuctl_home: Path) -> None:
    priced(gpuctl_home, "[budget]\nmonthly = 10\n")
    from gpuctl import cost
    from tests.cost.conftest import inst

    store = Store(gpuctl_home / "state.db")
    old = inst("local", "local-old", price=3600.0, run_id=None, launched_at=time.time() - 60)
    cost.open_compute(store, old, None)
    cost.close_instance(store, old, time.time() - 45)  # $15 this month
    proc = gpuctl("launch", "validate")
    assert proc.returncode == 4 and "monthly budget ($10.00) is used up" in proc.stderr
    assert store.list_runs() == []


def test_budget_stop_checkpoints_downloads_and_exits_4(gpuctl_home: Path) -> None:
    priced(gpuctl_home)
    proc = gpuctl("run", "validate", *LONG, "--budget", "60", "--force", "--json", timeout=400)
    events = json_lines(proc.stdout)
    assert proc.returncode == 4, proc.stdout[-3000:] + proc.stderr
    notices = [e for e in events if e["event"] == "notice"]
    assert any("launching anyway (--force)" in n["message"] for n in notices)
    assert any(n["message"].startswith("rough estimate:") for n in notices)
    # 80%: one warning; the follower ticks early when a threshold is near, so it lands
    # between the warning line and the stop.
    warnings = [n for n in notices if n["level"] == "warning" and "has spent" in n["message"]]
    assert len(warnings) == 1 and "of $60.00 (8" in warnings[0]["message"]
    final = events[-1]
    assert final["event"] == "finished" and final["status"] == "budget"
    assert final["epochs"] < 500
    results = Path(final["results_dir"])
    assert (results / "last.pt").is_file()  # the trainer checkpointed on the way out
    history = json.loads((results / "history.json").read_text())
    assert len(history) < 500
    store = Store(gpuctl_home / "state.db")
    run = store.get_run(final["run_id"])
    assert run.status.value == "budget"
    assert any(e["event"] == "torn_down" and e["action"] == "terminated" for e in events)
    assert not (gpuctl_home / "local" / "runs" / run.id).exists()  # on_exceed = terminate
    assert store.segments(open_only=True) == []  # billing ended with the instance
    assert final["cost"] >= 0.8 * 60  # it ran into its budget, not into an error
    status = gpuctl("status", run.id)
    assert "status    budget" in status.stdout


def test_agent_enforces_the_budget_with_gpuctl_closed(gpuctl_home: Path) -> None:
    priced(gpuctl_home)
    proc = gpuctl("launch", "validate", *LONG, "--budget", "60", "--force")
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    run_dir = gpuctl_home / "local" / "runs" / run_id
    agent = json.loads((run_dir / "agent.json").read_text())
    assert 0 < agent["budget_seconds"] <= 60  # remaining dollars / $1 per second
    # Nobody follows the run: the agent alone stops it when the money is gone.
    status_file = run_dir / "agent_status.json"
    wait_for(
        lambda: json.loads(status_file.read_text()).get("state") == "exited",
        240,
        "the agent to stop the trainer",
    )
    status = json.loads(status_file.read_text())
    assert status["reason"].startswith("budget reached")
    assert (run_dir / "last.pt").is_file()
    trainer = json.loads((run_dir / "status.json").read_text())
    assert trainer["phase"] == "interrupted" and trainer["epoch"] < 500
    follow = gpuctl("logs", run_id, "-f", "--json", timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert Store(gpuctl_home / "state.db").get_run(run_id).status.value == "budget"
    down = gpuctl("down", run_id)
    assert down.returncode == 0


@pytest.mark.parametrize(
    ("config", "args", "needle"),
    [
        ('[profiles.local]\nprice_per_hour = "abc"\n', [], "must be a number of USD per hour"),
        ("[profiles.local]\nprice_per_hour = -2.0\n", [], "must be zero or more"),
        ('[profiles.local]\nprice_per_hour = "2 EUR"\n', [], "unknown currency 'EUR'"),
        ('[budget]\ncurrency = "GBP"\n', [], "unknown currency 'GBP'"),
        ("[budget]\nmonthly = 0\n", [], "budget.monthly must be positive"),
        ("", ["--budget", "0"], "--budget must be a positive number"),
    ],
)
def test_bad_money_input_is_one_line_and_creates_nothing(
    gpuctl_home: Path, config: str, args: list[str], needle: str
) -> None:
    (gpuctl_home / "config.toml").write_text(config)
    proc = gpuctl("run", "validate", *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert nothing_created(gpuctl_home)


def test_bad_price_is_one_line_for_every_command(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text('[profiles.local]\nprice_per_hour = "abc"\n')
    offers = gpuctl("offers", "-p", "local")
    assert offers.returncode == 2 and "Traceback" not in offers.stderr
    assert "price_per_hour must be a number of USD per hour" in offers.stderr
    ls = gpuctl("ls", "--refresh")
    assert "Traceback" not in ls.stderr and "price_per_hour" in ls.stderr
