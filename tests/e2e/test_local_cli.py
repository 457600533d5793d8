"""The whole local slice through the real CLI: the real trainer, agent and state store."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, gpuctl, json_lines

pytestmark = pytest.mark.slow

# Long enough to act on mid-run (about a second an epoch here), short enough for CI.
EPOCHS = 12
SLOW = ["--set", f"epochs={EPOCHS}", "--set", "train_samples=1024", "--set", "val_samples=128"]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def run_status(home: Path, run_id: str) -> str:
    return Store(home / "state.db").get_run(run_id).status.value


def test_run_validate_json_ends_finished_with_results(gpuctl_home: Path) -> None:
    proc = gpuctl("run", "validate", "--json")
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "resolved"
    assert kinds[-1] == "finished"
    for expected in ("instance_up", "trainer_started", "log", "epoch", "downloaded"):
        assert expected in kinds
    final = events[-1]
    assert final["status"] == "finished" and final["epochs"] == 2
    results = Path(final["results_dir"])
    for name in ("best.pt", "last.pt", "history.json", "train.log", "events.jsonl"):
        assert (results / name).is_file(), name
    history = json.loads((results / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "Traceback" not in proc.stderr
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    # The local instance is torn down by the default policy; the run is remembered.
    ls = gpuctl("ls", "--runs", "--json")
    runs = json_lines(ls.stdout)
    assert runs[0]["id"] == final["run_id"] and runs[0]["status"] == "finished"


def test_launch_detaches_and_the_run_survives_the_cli(gpuctl_home: Path) -> None:
    proc = gpuctl("launch", "validate", *SLOW)
    assert proc.returncode == 0, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    assert run_id.startswith("validate-")
    # The CLI has exited; the trainer keeps writing its log.
    log = gpuctl_home / "local" / "runs" / run_id / "train.log"
    wait_for(lambda: log.exists() and "epoch 2/" in log.read_text(), 90, "epoch 2 in the log")
    ls = gpuctl("ls", "--json")
    rows = json_lines(ls.stdout)
    assert any(r["run_id"] == run_id and r["state"] == "running" for r in rows)
    status = gpuctl("status", run_id)
    assert "status    running" in status.stdout
    assert "agent     running, trainer alive" in status.stdout
    follow = gpuctl("logs", run_id, "-f", "--json", timeout=240)
    assert follow.returncode == 0, follow.stderr
    lines = [ln for e in json_lines(follow.stdout) if e["event"] == "log" for ln in e["lines"]]
    assert any(f"finished {EPOCHS} epochs" in ln for ln in lines)
    assert run_status(gpuctl_home, run_id) == "finished"
    down = gpuctl("down", run_id)
    assert down.returncode == 0 and "terminated" in down.stdout
    assert not (gpuctl_home / "local" / "runs" / run_id).exists()


def test_stop_checkpoints_and_resume_finishes_every_epoch_once(gpuctl_home: Path) -> None:
    proc = gpuctl("launch", "validate", *SLOW)
    run_id = proc.stdout.strip().splitlines()[-1]
    run_dir = gpuctl_home / "local" / "runs" / run_id
    wait_for(
        lambda: (
            (run_dir / "history.json").exists()
            and len(json.loads((run_dir / "history.json").read_text() or "[]")) >= 2
        ),
        120,
        "two epochs",
    )
    stop = gpuctl("stop", run_id)
    assert stop.returncode == 0, stop.stderr
    assert "stopped" in stop.stdout
    # The laptop bills nothing once its trainer exited: no "still up and billing ($0/h)".
    said = stop.stdout + stop.stderr
    assert "bills nothing more" in said and "billing" not in said, said
    assert (run_dir / "last.pt").is_file()
    assert json.loads((run_dir / "status.json").read_text())["phase"] == "interrupted"
    assert run_status(gpuctl_home, run_id) == "stopped"
    stopped_at = len(json.loads((run_dir / "history.json").read_text()))
    assert stopped_at < EPOCHS

    resumed = gpuctl("resume", run_id, "--json", timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr
    events = json_lines(resumed.stdout)
    assert events[-1]["event"] == "finished" and events[-1]["status"] == "finished"
    started = [e for e in events if e["event"] == "trainer_started"]
    assert started and started[0]["resumed"] is True
    results = Path(events[-1]["results_dir"])
    history = json.loads((results / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    log = (results / "train.log").read_text()
    resumed_line = next(ln for ln in log.splitlines() if "resumed from epoch" in ln)
    # Stopped mid-epoch or at its end: it picks up at the checkpoint, not from scratch.
    assert f"epoch {stopped_at}" in resumed_line or f"epoch {stopped_at + 1} step" in resumed_line


def test_two_ls_at_once_while_a_run_writes_events(gpuctl_home: Path) -> None:
    run_id = gpuctl("launch", "validate", *SLOW).stdout.strip().splitlines()[-1]
    follower = subprocess.Popen(
        [GPUCTL, "logs", run_id, "-f", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        for _ in range(5):
            pair = [
                subprocess.Popen(
                    [GPUCTL, "ls", "--refresh", "--json"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            for p in pair:
                out, err = p.communicate(timeout=60)
                assert p.returncode == 0, err
                assert "locked" not in err and "Traceback" not in err
                assert any(r.get("run_id") == run_id for r in json_lines(out))
        # The run was still writing the whole time: it is stopped here, not finished.
        assert run_status(gpuctl_home, run_id) == "running"
    finally:
        stop = gpuctl("stop", run_id)
        follower.communicate(timeout=240)
    assert stop.returncode == 0, stop.stderr
    assert follower.returncode == 0


def test_the_cost_a_kept_run_ends_with_is_the_cost_gpuctl_says_later(gpuctl_home: Path) -> None:
    """`--teardown keep`: the machine stays, but it billed only while its trainer ran
    (local). The total printed at the end is the one `status` and `cost` show after."""
    (gpuctl_home / "config.toml").write_text("[profiles.local]\nprice_per_hour = 36\n")
    ran = gpuctl("run", "validate", "--set", "epochs=2", "--teardown", "keep", "--json")
    assert ran.returncode == 0, ran.stderr
    final = json_lines(ran.stdout)[-1]
    assert final["event"] == "finished" and final["cost"] > 0, final
    time.sleep(1.0)  # a meter still open at the end would now have grown
    status = json.loads(gpuctl("status", final["run_id"], "--json").stdout)
    assert status["spent"] == final["cost"], (status["spent"], final["cost"])
    cost = json.loads(gpuctl("cost", "--json").stdout)
    assert round(cost["total"]["spent_month"], 2) == round(final["cost"], 2), (cost, final)


# -- bad input: one line, exit 2, nothing created, state intact -----------------------------------


def assert_clean_failure(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    assert needle in error_lines[0], proc.stderr


def nothing_created(home: Path) -> bool:
    runs_dir = home / "local" / "runs"
    no_dirs = not runs_dir.exists() or not any(runs_dir.iterdir())
    db = home / "state.db"
    no_runs = not db.exists() or Store(db).list_runs() == []
    return no_dirs and no_runs


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "validat"], "unknown preset 'validat'"),
        (["run", "validate", "--set", "epoch=2"], "unknown key 'epoch'"),
        (["run", "validate", "--set", "epochs=two"], "'epochs' must be"),
        (["run", "validate", "--provider", "awss"], "unknown provider 'awss'"),
        (["launch", "validate", "--budget", "-3"], "--budget must be a positive number"),
        (["run", "validate", "--workdir", "/nonexistent/dir"], "does not exist"),
        (["status", "validate-000000-dead"], "no run 'validate-000000-dead'"),
        (["logs", "validate-000000-dead"], "no run 'validate-000000-dead'"),
        (["stop", "validate-000000-dead"], "no run 'validate-000000-dead'"),
        (["down", "validate-000000-dead"], "no run or instance"),
        (["resume", "validate-000000-dead"], "no run 'validate-000000-dead'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(
    gpuctl_home: Path, args: list[str], needle: str
) -> None:
    proc = gpuctl(*args)
    assert_clean_failure(proc, needle)
    assert nothing_created(gpuctl_home)


def test_json_mode_reports_errors_as_json(gpuctl_home: Path) -> None:
    proc = gpuctl("run", "validat", "--json")
    assert proc.returncode == 2
    (err,) = json_lines(proc.stdout)
    assert err["event"] == "error" and "unknown preset" in err["error"] and err["hint"]


def test_malformed_config_says_file_and_line(gpuctl_home: Path) -> None:
    cfg = gpuctl_home / "config.toml"
    cfg.write_text('default_provider = "local"\n[budget\nmonthly = 5\n')
    proc = gpuctl("ls")
    assert_clean_failure(proc, str(cfg))
    assert "line 2" in proc.stderr
    assert cfg.read_text().startswith('default_provider = "local"')


def test_logs_of_a_run_that_never_started(gpuctl_home: Path) -> None:
    store = Store(gpuctl_home / "state.db")
    from tests.unit.test_state import make_run

    store.add_run(make_run("fast-261123-0bad", status="failed", reason="no capacity"))
    proc = gpuctl("logs", "fast-261123-0bad")
    assert_clean_failure(proc, "never started")
    assert "no capacity" in proc.stderr


@pytest.mark.parametrize("content", [b"garbage" * 200, "foreign"], ids=["corrupt", "foreign"])
def test_corrupt_or_foreign_state_is_refused_untouched(gpuctl_home: Path, content: object) -> None:
    db = gpuctl_home / "state.db"
    if content == "foreign":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (body TEXT)")
        con.commit()
        con.close()
    else:
        db.write_bytes(content)  # type: ignore[arg-type]
    before = db.read_bytes()
    proc = gpuctl("ls")
    assert_clean_failure(proc, str(db))
    assert db.read_bytes() == before
    proc = gpuctl("run", "validate")
    assert proc.returncode == 2 and db.read_bytes() == before


def test_a_reader_going_away_does_not_abandon_the_run(gpuctl_home: Path) -> None:
    """`gpuctl run validate | head -1`: the run still finishes and nothing is left billing."""
    proc = subprocess.run(
        f"{GPUCTL} run validate | head -1", shell=True, capture_output=True, text=True, timeout=300
    )
    assert proc.stdout.startswith("run validate-")
    runs = json_lines(gpuctl("ls", "--runs", "--json").stdout)
    assert [r["status"] for r in runs] == ["finished"]
    live = json_lines(gpuctl("ls", "--json").stdout)
    assert [i for i in live if i.get("state") != "terminated"] == []


def test_the_data_dir_and_everything_in_it_is_the_users_only(gpuctl_home: Path) -> None:
    home = gpuctl_home / "fresh"  # gpuctl creates it (pytest's own tmp dirs are 0700)
    proc = gpuctl("run", "validate", "--json", env={"GPUCTL_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    results = Path(json_lines(proc.stdout)[-1]["results_dir"])
    assert results.is_relative_to(home / "results") and (results / "best.pt").is_file()
    seen = [home, *home.rglob("*")]
    open_to_others = [
        f"{p.relative_to(home)} {oct(p.lstat().st_mode & 0o777)}"
        for p in seen
        if not p.is_symlink() and p.lstat().st_mode & 0o077
    ]
    assert open_to_others == []
    names = {p.name for p in seen}
    assert {"state.db", "gpuctl.log", "best.pt", "history.json", "cache"} <= names


def test_a_garbage_line_in_events_jsonl_is_skipped_with_one_warning(gpuctl_home: Path) -> None:
    proc = subprocess.Popen(
        [GPUCTL, "run", "validate", "--json", "--set", "epochs=4", *SLOW[2:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        runs = gpuctl_home / "local" / "runs"
        wait_for(lambda: runs.is_dir() and any(runs.iterdir()), 90, "the run dir")
        (run_dir,) = runs.iterdir()
        events = run_dir / "events.jsonl"
        wait_for(lambda: events.exists() and events.stat().st_size > 0, 120, "a first event")
        with open(events, "a") as fh:  # what a broken or hostile machine could write
            fh.write('garbage{"event": \n{"event": "epoch_end", "epoch": "two"}\n[1, 2]\n')
        try:
            out, err = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"gpuctl run did not end:\n{out[-3000:]}\n{err[-2000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    events_out = json_lines(out)
    final = events_out[-1]
    assert final["event"] == "finished" and final["status"] == "finished"
    assert (Path(final["results_dir"]) / "best.pt").is_file()  # downloaded
    assert not run_dir.exists()  # torn down by the default policy
    warnings = [
        e["message"]
        for e in events_out
        if e["event"] == "notice" and e.get("level") == "warning" and "malformed" in e["message"]
    ]
    assert len(warnings) == 1, warnings
    assert "events.jsonl" in warnings[0]
    assert [e["epoch"] for e in events_out if e["event"] == "epoch"] == [1, 2, 3, 4]
