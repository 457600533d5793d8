"""The UI's data layer without a terminal: rows, meter levels, chips, event folding."""

from __future__ import annotations

from dataclasses import replace

from rich.text import Text

from gpuctl.events import (
    EpochDone,
    Event,
    Failed,
    Finished,
    InstanceUp,
    LogLines,
    Resolved,
    SyncProgress,
    TrainerStarted,
)
from gpuctl.format import duration
from gpuctl.tui.feed import RunFeed
from gpuctl.tui.model import Live, Meter, Row, chip_for, text_bar
from gpuctl.tui.widgets.instances import fit_columns
from gpuctl.tui.widgets.meter import CostMeter
from gpuctl.views import Totals


def row(**changes: object) -> Row:
    base = Row(
        key="run:r1",
        provider="aws",
        region="us-east-1",
        name="r1",
        instance_type="g5.xlarge",
        gpus="1x A10G",
        state="training",
        tone="ok",
        started_at=1000.0,
        price_per_hour=1.0,
        ledger_cost=None,
        preset="fast",
        epoch=3,
        epochs=10,
        eta_seconds=700.0,
        run_id="r1",
        instance_id="i-1",
        live_instance=True,
        billed=True,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_cells_say_unknown_as_a_dash_and_estimates_with_a_tilde() -> None:
    cells = row().cells(1000.0 + 3600)
    assert cells["uptime"] == "1h00m" and cells["cost"] == "~1.00"
    assert cells["epoch"] == "3/10 11m40s"
    cells = row(ledger_cost=0.5).cells(4600.0)
    assert cells["cost"] == "0.50"  # from the ledger: no tilde
    gone = row(live_instance=False, started_at=None, price_per_hour=None)
    assert gone.cells(5000.0)["uptime"] == "-" and gone.cells(5000.0)["price"] == "-"
    assert row(warmup=True, epoch=1).cells(1.0)["epoch"] == "1/10 warm-up"


def test_live_overlay_moves_an_active_row_but_never_a_finished_one() -> None:
    live = Live(phase="syncing 3/10", epoch=4, epochs=10, eta_seconds=60.0)
    assert row(state="provisioning").with_live(live).state == "syncing 3/10"
    assert row(state="finished").with_live(live).state == "finished"
    assert row().with_live(None) == row()


def test_budget_levels_are_words_as_well_as_colours() -> None:
    assert Totals(spent_month=10, budget=100).level == "ok"
    assert Totals(spent_month=80, budget=100).level == "warn"
    assert Totals(spent_month=100, budget=100).level == "over"
    assert Totals(spent_month=5).level == "none"
    for month, word in ((10, "ok"), (85, "WARN"), (120, "OVER BUDGET")):
        meter = CostMeter()
        meter.meter = Meter(Totals(burn_now=2.0, spent_month=month, budget=100))
        text = meter._line(100, compact=False)
        assert isinstance(text, Text)
        assert word in text.plain and f"{month}%" in text.plain
    assert text_bar(0.5, 10) == "█████░░░░░"


def test_chips_tell_missing_credentials_from_other_errors() -> None:
    assert chip_for("aws", None).state == "unchecked"
    assert chip_for("aws", (True, "", 0.0)).label == "aws: ok"
    creds = chip_for("amd", (False, "AMD_DEVCLOUD_TOKEN is not set (export it)", 0.0))
    assert creds.state == "nocreds" and creds.label == "amd: no credentials"
    assert chip_for("aws", (False, "us-west-2: timed out", 0.0)).state == "error"


def test_feed_folds_a_launch_into_phases_log_and_epochs() -> None:
    feed = RunFeed("r1")
    events: list[Event] = [
        Resolved("r1", "fast", "local"),
        InstanceUp("r1", "i-1", 0.0),
        SyncProgress("r1", 3, 10, 300, 1000),
        TrainerStarted("r1", "local"),
        LogLines("r1", ("a", "b")),
        EpochDone("r1", 1, 2, 2.0, 2.1, 0.1, 9.0, None, True),
    ]
    phases = []
    for ev in events:
        feed.apply(ev)
        phases.append(feed.live().phase)
    assert phases[:4] == ["provisioning", "up", "syncing 3/10", "training"]
    assert list(feed.lines) == ["a", "b"] and feed.live().warmup
    feed.apply(Finished("r1", "finished"))
    assert feed.final == "finished" and feed.live().phase == "finished"
    assert feed.lines[-1].startswith("── run r1 finished")
    # The end shows at once, over a snapshot read while it still trained...
    assert row(state="training").with_live(feed.live()).state == "finished"
    # ...and a newer snapshot that knows more (its machine kept up) is not overwritten.
    assert row(state="finished, running").with_live(feed.live()).state == "finished, running"
    other = RunFeed("r2")
    other.apply(Failed("r2", "boom", "try again", 1, ("last line",)))
    assert "last line" in other.lines and other.phase == "failed"


def test_history_backfills_without_duplicates() -> None:
    feed = RunFeed("r1")
    feed.apply(EpochDone("r1", 2, 3, 1.0, 1.1, 0.5))
    feed.load_history(["x"], [{"epoch": 1, "epochs": 3}, {"epoch": 2, "epochs": 3}])
    assert sorted(feed.epochs) == [1, 2] and feed.epochs[2].train_loss == 1.0
    assert list(feed.lines) == ["x"]


def test_columns_fit_the_terminal() -> None:
    for width in (80, 100, 120, 200):
        cols = fit_columns(width)
        assert sum(c.width + 2 for c in cols) <= width - 1
        assert {"name", "state", "epoch"} <= {c.key for c in cols}
    assert len(fit_columns(200)) == 11
    assert duration(59) == "59s" and duration(3600 * 30) == "1d06h"


def test_a_powered_off_droplet_reads_still_billing(gpuctl_home) -> None:  # type: ignore[no-untyped-def]
    import time

    from gpuctl.models import Instance, InstanceState
    from gpuctl.settings import load
    from gpuctl.state import Store
    from gpuctl.tui.model import build_snapshot

    (gpuctl_home / "config.toml").write_text('providers = ["amd", "aws"]\n')
    settings = load()
    store = Store(settings.state_path)
    for provider in ("amd", "aws"):
        store.put_instance(
            Instance(
                provider,
                "1",
                "n",
                "r",
                "t",
                InstanceState.STOPPED,
                price_per_hour=1.99,
                managed=True,
            )
        )
    rows = {r.provider: r for r in build_snapshot(store, settings, time.time()).rows}
    assert rows["amd"].state.startswith("off, still billing $1.990/h")  # a droplet bills off
    assert rows["amd"].tone == "warn" and rows["amd"].billed
    assert rows["aws"].state.startswith("stopped")  # an EC2 instance does not
