"""The progress adapter reads a growing train.log and reports.jsonl the way they arrive
(half lines, tqdm's carriage returns) and writes the trainer's files: what gpuctl shows
as epochs, losses and ETA for a user's own script."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpuctl.agent.progress import Adapter
from gpuctl.trainer import protocol


def write(run_dir: Path, text: str, name: str = protocol.TRAIN_LOG_FILE) -> None:
    with open(run_dir / name, "a") as fh:
        fh.write(text)


def epoch_ends(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / protocol.EVENTS_FILE).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == protocol.TrainerEvent.EPOCH_END]


def status(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / protocol.STATUS_FILE).read_text())


def test_a_line_split_across_reads_is_read_once_whole(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path, epochs=None, resume=False, log_offset=0)
    assert status(tmp_path)["phase"] == protocol.Phase.STARTING
    write(tmp_path, "Epoch 1/2 lo")
    adapter.poll()
    assert epoch_ends(tmp_path) == []
    write(tmp_path, "ss 0.5\rEpoch 2/2 loss 0.25\n")
    adapter.poll()
    assert [(e["epoch"], e["train_loss"]) for e in epoch_ends(tmp_path)] == [(1, 0.5), (2, 0.25)]
    assert status(tmp_path)["phase"] == protocol.Phase.TRAINING
    assert adapter.finish(0, None) == protocol.Phase.FINISHED


def test_a_json_report_turns_the_text_fallback_off(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path, epochs=5, resume=False, log_offset=0)
    write(tmp_path, json.dumps({"gpuctl": "epoch", "epoch": 1, "loss": 0.3}) + "\n")
    write(tmp_path, "Epoch 2/5 loss 0.2\n")  # a log line that is no report now
    adapter.poll()
    assert [e["epoch"] for e in epoch_ends(tmp_path)] == [1]
    assert epoch_ends(tmp_path)[0]["epochs"] == 5


def test_steady_epochs_give_an_eta_and_only_the_first_is_warm_up(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path, epochs=4, resume=False, log_offset=0)
    for epoch in (1, 2, 3):
        report = {"gpuctl": "epoch", "epoch": epoch, "metric": epoch / 10}
        write(tmp_path, json.dumps(report) + "\n", protocol.REPORTS_FILE)
        adapter.poll()
    ends = epoch_ends(tmp_path)
    assert [e["warmup"] for e in ends] == [True, False, False]
    now = status(tmp_path)
    assert now["epochs_done"] == 3 and now["eta_seconds"] is not None
    assert now["best_metric"] == 0.3


def test_a_resume_keeps_the_carried_history_and_events(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "train_loss": 0.5, "val_loss": None, "val_metric": 0.6}]
    (tmp_path / protocol.HISTORY_FILE).write_text(json.dumps(rows))
    old = {"event": protocol.TrainerEvent.EPOCH_END, "epoch": 1, "epochs": 3}
    (tmp_path / protocol.EVENTS_FILE).write_text(json.dumps(old) + "\n")
    write(tmp_path, "Epoch 1/3 loss 0.5\n")  # the log carried from the other machine
    size = (tmp_path / protocol.TRAIN_LOG_FILE).stat().st_size
    adapter = Adapter(tmp_path, epochs=3, resume=True, log_offset=size)
    write(tmp_path, "Epoch 1/3 loss 0.5\nEpoch 2/3 loss 0.4\n")  # a repeat, then new
    adapter.poll()
    assert [e["epoch"] for e in epoch_ends(tmp_path)] == [1, 2]
    assert epoch_ends(tmp_path)[1]["warmup"] is True  # the first of this start
    history = json.loads((tmp_path / protocol.HISTORY_FILE).read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    assert status(tmp_path)["best_metric"] == 0.6


def test_a_stop_is_interrupted_and_a_crash_names_its_last_line(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path, epochs=3, resume=False, log_offset=0)
    write(tmp_path, "Epoch 1/3 loss 0.5\n")
    assert adapter.finish(-15, protocol.StopReason.USER) == protocol.Phase.INTERRUPTED
    assert status(tmp_path)["reason"] == protocol.StopReason.USER
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    adapter = Adapter(crashed, epochs=3, resume=False, log_offset=0)
    write(crashed, "Epoch 1/3 loss 0.5\nKilled")  # no newline at the end
    assert adapter.finish(137, None) == protocol.Phase.FAILED
    assert status(crashed)["reason"] == "exit code 137: Killed"


def test_every_epoch_reported_is_finished_whatever_the_exit(tmp_path: Path) -> None:
    adapter = Adapter(tmp_path, epochs=1, resume=False, log_offset=0)
    write(tmp_path, json.dumps({"gpuctl": "epoch", "epoch": 1}) + "\n", protocol.REPORTS_FILE)
    assert adapter.finish(1, protocol.StopReason.USER) == protocol.Phase.FINISHED


def test_absurd_epoch_numbers_are_no_progress_and_break_nothing(tmp_path: Path) -> None:
    # An epoch of 1e308 once reached the state DB and failed every `gpuctl ls --runs`;
    # a 5,000-digit one would make int() raise in the agent.
    reports, text = tmp_path / "reports", tmp_path / "text"
    reports.mkdir()
    text.mkdir()
    adapter = Adapter(reports, epochs=None, resume=False, log_offset=0)
    garbage = [
        {"gpuctl": "epoch", "epoch": 1e308, "epochs": -5, "loss": 0.1},
        {"gpuctl": "epoch", "epoch": 10**30, "loss": 0.1},
        {"gpuctl": "epoch", "epoch": 1, "epochs": 10**30, "loss": 0.2},
    ]
    write(reports, "".join(json.dumps(g) + "\n" for g in garbage), protocol.REPORTS_FILE)
    adapter.poll()
    from_text = Adapter(text, epochs=None, resume=False, log_offset=0)
    write(text, f"Epoch {'9' * 5000}/3 loss 1\nEpoch 2/{'7' * 5000} loss 1\n")
    write(text, f"Epoch 1/3 step {'9' * 5000}/{'9' * 5000}\nEpoch 1/3 loss 0.5\n")
    from_text.poll()
    for run_dir in (reports, text):
        assert [e["epoch"] for e in epoch_ends(run_dir)] == [1]
        now = status(run_dir)
        assert now["epoch"] == 1
        assert all(abs(v) < 2**63 for v in now.values() if isinstance(v, int))
    assert status(reports)["epochs"] is None and status(text)["epochs"] == 3
