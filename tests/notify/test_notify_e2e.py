"""Notifications through the real CLI on the local provider, to a receiver on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from gpuctl.state import Store
from tests.cli import GPUCTL, gpuctl, json_lines
from tests.notify.receiver import closed_port, hanging, receiver

pytestmark = pytest.mark.slow

SMALL = ["--set", "epochs=2", "--set", "train_samples=128", "--set", "val_samples=32"]


def configure(home: Path, *urls: str, extra: str = "") -> None:
    listed = ", ".join(json.dumps(u) for u in urls)
    (home / "config.toml").write_text(f"{extra}\n[notify]\nurls = [{listed}]\n")


def about(messages: list[dict], word: str) -> list[dict]:
    return [m for m in messages if word in m.get("title", "")]


def test_a_finished_run_sends_one_finished_message(gpuctl_home: Path) -> None:
    with receiver() as rx:
        configure(gpuctl_home, rx.url())
        proc = gpuctl("run", "validate", *SMALL, "--json")
        assert proc.returncode == 0, proc.stderr
        final = json_lines(proc.stdout)[-1]
        run_id = final["run_id"]
        messages = rx.wait(1)
        time.sleep(1.0)  # a second one would have come by now
        finished = about(rx.messages(), "finished")
    assert len(finished) == 1, rx.messages()
    body = finished[0]["message"]
    assert run_id in body and "status finished" in body
    assert "cost $" in body and "metric " in body and "epochs 2/2" in body
    assert [m for m in messages if "failed" in m["title"]] == []
    store = Store(gpuctl_home / "state.db")
    rows = store.notifications()
    assert [(r["event"], r["outcome"]) for r in rows if r["event"] == "finished"] == [
        ("finished", "sent")
    ]


BROKEN = """\
[project]
name = "broken"

[modes.broken]
command = "python fail.py"
"""


def test_a_failing_run_sends_one_failed_message_with_its_last_log_lines(
    gpuctl_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "gpuctl.toml").write_text(BROKEN)
    (project / "fail.py").write_text(
        "import sys\nprint('loading the data')\nprint('the end of a bad run')\nsys.exit(3)\n"
    )
    monkeypatch.chdir(project)
    with receiver() as rx:
        configure(gpuctl_home, rx.url())
        proc = gpuctl("run", "broken", "--json")
        assert proc.returncode == 1, proc.stderr
        run_id = json_lines(proc.stdout)[-1]["run_id"]
        rx.wait(1)
        time.sleep(1.0)
        failed = about(rx.messages(), "failed")
        assert about(rx.messages(), "finished") == []
    assert len(failed) == 1, rx.messages()
    body = failed[0]["message"]
    assert run_id in body and "status failed" in body
    assert "last log:" in body and "the end of a bad run" in body


@pytest.mark.parametrize("target", ["down", "hangs"])
def test_a_receiver_that_is_down_or_hangs_never_blocks_or_fails_a_run(
    gpuctl_home: Path, target: str
) -> None:
    with hanging() as hung_port:
        port = closed_port() if target == "down" else hung_port
        configure(gpuctl_home, f"json://127.0.0.1:{port}/hook")
        # A hung receiver costs each sender its short timeout, never the run's end.
        proc = gpuctl("run", "validate", *SMALL, "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    final = json_lines(proc.stdout)[-1]
    assert final["event"] == "finished" and final["status"] == "finished"
    assert "Traceback" not in proc.stderr
    # The agent tried it (at most its timeout), the laptop then sent it and logged why not.
    log = (gpuctl_home / "gpuctl.log").read_text()
    assert log.count("notification to json://127.0.0.1") == 1, log[-2000:]
    assert str(port) in log and "/hook" not in log  # the URL's path (its secret) is never logged


def test_a_detached_run_is_notified_by_its_agent_once(gpuctl_home: Path) -> None:
    with receiver() as rx:
        configure(gpuctl_home, rx.url())
        proc = gpuctl("launch", "validate", *SMALL)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.strip().splitlines()[-1]
        # Nobody follows the run: the agent on the machine sends its end itself.
        messages = rx.wait(1, timeout=120)
        assert len(about(messages, "finished")) == 1, messages
        assert rx.posts[0]["agent"] == "gpuctl-agent"
        status = json.loads(
            (gpuctl_home / "local" / "runs" / run_id / "agent_status.json").read_text()
        )
        assert status["notified"] == ["finished"]
        # A later look records the end and sends nothing again.
        seen = gpuctl("status", run_id)
        assert seen.returncode == 0 and "finished" in seen.stdout, seen.stdout
        gpuctl("ls", "--runs")
        time.sleep(1.5)
        assert len(rx.messages()) == 1, rx.messages()
    rows = Store(gpuctl_home / "state.db").notifications()
    assert [(r["event"], r["sent_by"]) for r in rows] == [("finished", "agent")]
    agent_cfg = (gpuctl_home / "local" / "runs" / run_id / "agent.json").read_text()
    assert str(rx.port) not in agent_cfg  # the webhook travelled on the secret pipe only


def test_an_end_the_agent_could_not_deliver_is_sent_once_by_whoever_looks_first(
    gpuctl_home: Path,
) -> None:
    with receiver(refuse_agent=True) as rx:
        configure(gpuctl_home, rx.url())
        proc = gpuctl("launch", "validate", *SMALL)
        assert proc.returncode == 0, proc.stderr
        run_id = proc.stdout.strip().splitlines()[-1]
        status_file = gpuctl_home / "local" / "runs" / run_id / "agent_status.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            status_file.exists() and json.loads(status_file.read_text()).get("state") == "exited"
        ):
            time.sleep(0.2)
        assert len(rx.refused) == 1  # the agent tried, the receiver said no
        assert "notified" not in json.loads(status_file.read_text())
        # Two gpuctl processes look at the same ended run at once: one message.
        looks = [
            subprocess.Popen(
                [GPUCTL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for args in (["status", run_id], ["ls", "--runs"], ["status", run_id])
        ]
        for look in looks:
            _out, err = look.communicate(timeout=120)
            assert look.returncode == 0, err
        time.sleep(1.0)
        messages = rx.messages()
    assert len(messages) == 1, messages
    assert "finished" in messages[0]["title"] and run_id in messages[0]["message"]
    assert rx.posts[0]["agent"] != "gpuctl-agent"  # apprise, from the laptop
    rows = Store(gpuctl_home / "state.db").notifications()
    assert [(r["event"], r["sent_by"], r["outcome"]) for r in rows] == [
        ("finished", "gpuctl", "sent")
    ]


def test_budget_80_and_100_arrive_once_each(gpuctl_home: Path) -> None:
    long = ["--set", "epochs=500", "--set", "train_samples=1024", "--set", "val_samples=64"]
    with receiver() as rx:
        configure(gpuctl_home, rx.url(), extra="[profiles.local]\nprice_per_hour = 3600.0\n")
        proc = gpuctl("run", "validate", *long, "--budget", "30", "--force", "--json", timeout=300)
        assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr
        rx.wait(2)
        time.sleep(1.5)
        messages = rx.messages()
    assert len(about(messages, "budget 80")) == 1, messages
    assert len(about(messages, "budget 100")) == 1, messages
    assert len(messages) == 2, messages
    warn = about(messages, "budget 80")[0]["message"]
    assert "of $30.00" in warn and "cost $" in warn


def test_notify_test_says_ok_or_the_error_per_url(gpuctl_home: Path) -> None:
    proc = gpuctl("notify", "test")
    assert proc.returncode == 2 and "no notification URLs configured" in proc.stderr
    with receiver() as rx:
        dead = f"json://127.0.0.1:{closed_port()}/x"
        configure(gpuctl_home, rx.url(), dead)
        proc = gpuctl("notify", "test")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert lines[0] == f"json://127.0.0.1:{rx.port}: ok"
        assert lines[1].startswith("json://127.0.0.1:") and ": error: " in lines[1]
        assert len(rx.messages()) == 1 and "test" in rx.messages()[0]["title"]
    configure(gpuctl_home, dead)
    proc = gpuctl("notify", "test")
    assert proc.returncode == 3 and "error:" in proc.stdout
