"""Two gpuctl processes (two engines, two store handles) seeing the same event: one POST."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpuctl.lifecycle import Engine
from gpuctl.models import Run, RunStatus
from gpuctl.settings import load
from gpuctl.state import Store
from tests.notify.receiver import receiver


def engine(home: Path) -> Engine:
    return Engine(load(), Store(home / "state.db"))


def test_two_processes_seeing_the_same_end_send_one_message(gpuctl_home: Path) -> None:
    with receiver() as rx:
        (gpuctl_home / "config.toml").write_text(f"[notify]\nurls = [{json.dumps(rx.url())}]\n")
        cli, tui = engine(gpuctl_home), engine(gpuctl_home)
        now = time.time()
        cli.store.add_run(Run("r-1", "validate", "local", RunStatus.RUNNING, now, now))
        event = {"status": "interrupted", "reason": "spot interruption"}
        for eng in (cli, tui, cli):
            eng.record_event("r-1", "ended", event)
        for eng in (cli, tui):
            assert eng.notifier is not None
            eng.notifier.flush(10)
        time.sleep(0.5)
        messages = rx.messages()
    assert len(messages) == 1, messages
    assert "r-1" in messages[0]["message"] and "interrupted" in messages[0]["title"]


def test_unmapped_or_unwanted_events_send_nothing(gpuctl_home: Path) -> None:
    with receiver() as rx:
        (gpuctl_home / "config.toml").write_text(
            f'[notify]\nurls = [{json.dumps(rx.url())}]\nevents = ["finished"]\n'
        )
        eng = engine(gpuctl_home)
        now = time.time()
        eng.store.add_run(Run("r-2", "validate", "local", RunStatus.RUNNING, now, now))
        eng.record_event("r-2", "epoch", {"epoch": 1})
        eng.record_event("r-2", "ended", {"status": "failed", "reason": "boom"})
        assert eng.notifier is not None
        eng.notifier.flush(10)
        time.sleep(0.3)
        assert rx.messages() == []
