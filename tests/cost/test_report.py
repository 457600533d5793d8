"""The report: from the ledger alone, gone instances included, rows adding to the total."""

from __future__ import annotations

import csv
import io
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gpuctl import cost
from gpuctl.errors import ConfigError
from gpuctl.models import Market, PriceSegment, RunStatus
from gpuctl.state import Store
from tests.cli import gpuctl, json_lines
from tests.cost.conftest import T0, inst, run, settings_with

H = 3600.0
DAY = 86400.0


def build_ledger(store: Store, base: float) -> None:
    """Three runs on three providers over two days; two machines are long gone."""
    store.add_run(run("aws-run", provider="aws", status=RunStatus.FINISHED, created=base - DAY))
    store.add_run(run("amd-run", provider="amd", status=RunStatus.BUDGET, created=base - DAY))
    store.add_run(run("local-run", provider="local", created=base))
    # AWS spot across midnight, re-priced once; terminated; its instance row is gone.
    spot = inst("aws", "i-spot", price=0.40, market=Market.SPOT, run_id="aws-run")
    cost.open_compute(store, spot, "aws-run", base - 15 * H, now=base - 15 * H)
    cost.record_spot_price(store, spot, 0.80, base - 13 * H)
    cost.close_instance(store, spot, base - 9 * H)
    store.put_instance(spot)
    store.mark_instance_gone("aws", "i-spot")
    # A droplet for 3 h yesterday.
    drop = inst("amd", "d-1", price=1.99, run_id="amd-run")
    cost.open_compute(store, drop, "amd-run", base - DAY + H, now=base - DAY + H)
    cost.close_instance(store, drop, base - DAY + 4 * H)
    # A local run still going, and an instance with no run at all.
    cost.open_compute(store, inst("local", "l-1", price=0.5, run_id="local-run"), "local-run", base)
    cost.open_compute(store, inst("aws", "i-lost", price=1.0, run_id=None), None, base + H)


def segments_sum(segs: list[PriceSegment], now: float, since: float = float("-inf")) -> float:
    """The arithmetic a spreadsheet would do: every segment's seconds in the window x rate."""
    total = 0.0
    for s in segs:
        end = min(s.end if s.end is not None else now, now)
        total += max(0.0, end - max(s.start, since)) * s.rate_per_hour / 3600.0
    return total


@pytest.mark.parametrize("by", ["run", "day", "provider"])
def test_report_totals_equal_the_sum_of_segments(store: Store, gpuctl_home: Path, by: str) -> None:
    settings = settings_with(gpuctl_home)
    build_ledger(store, T0)
    now = T0 + 5 * H
    segs = store.segments()
    rep = cost.report(store, settings, since=T0 - 30 * DAY, by=by, now=now)
    expected = segments_sum(segs, now)
    assert rep.total == pytest.approx(expected)
    assert sum(r.cost for r in rep.rows) == pytest.approx(rep.total)
    assert rep.hours == pytest.approx(
        sum(max(0.0, min(s.end or now, now) - s.start) for s in segs) / 3600.0
    )
    if by == "run":
        rows = {r.key: r for r in rep.rows}
        assert rows["aws-run"].cost == pytest.approx(2 * 0.40 + 4 * 0.80)  # gone, still here
        assert rows["aws-run"].status == "finished" and rows["aws-run"].provider == "aws"
        assert rows["amd-run"].cost == pytest.approx(3 * 1.99)
        assert rows["(no run) i-lost"].cost == pytest.approx(4 * 1.0)
    if by == "day":
        days = {r.key: r.cost for r in rep.rows}
        assert list(days) == ["2026-03-09", "2026-03-10"]
        # The spot run crossed midnight: 21:00-23:00 at 0.40 and 23:00-24:00 at 0.80.
        assert days["2026-03-09"] == pytest.approx(3 * 1.99 + 2 * 0.40 + 1 * 0.80)
        assert days["2026-03-10"] == pytest.approx(3 * 0.80 + 5 * 0.5 + 4 * 1.0)
    if by == "provider":
        assert {r.key for r in rep.rows} == {"aws", "amd", "local"}


def test_since_clips_the_window(store: Store, gpuctl_home: Path) -> None:
    settings = settings_with(gpuctl_home)
    build_ledger(store, T0)
    now = T0 + 5 * H
    since = T0  # today only
    rep = cost.report(store, settings, since=since, by="provider", now=now)
    assert rep.total == pytest.approx(segments_sum(store.segments(), now, since))
    assert "amd" not in {r.key for r in rep.rows}  # all of it was yesterday


def test_since_spans() -> None:
    assert cost.parse_since("30d", T0) == T0 - 30 * DAY
    assert cost.parse_since("12h", T0) == T0 - 12 * H
    assert cost.parse_since("month", T0) == cost.month_start(T0)
    assert cost.parse_since("2026-03-01", T0) == cost.month_start(T0)
    with pytest.raises(ConfigError, match="cannot read 'yesterday-ish'"):
        cost.parse_since("yesterday-ish", T0)


def test_cli_report_csv_and_json_agree_with_the_ledger(gpuctl_home: Path) -> None:
    store = Store(gpuctl_home / "state.db")
    base = time.time() - 10 * H
    build_ledger(store, base)
    proc = gpuctl("cost", "report", "--since", "30d", "--csv")
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert {r["run"] for r in rows} >= {"aws-run", "amd-run", "local-run"}
    as_json = json_lines(gpuctl("cost", "report", "--by", "day", "--json").stdout)
    total = as_json[-1]
    assert total["event"] == "total"
    assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(total["cost"], abs=0.01)
    assert sum(r["cost"] for r in as_json[:-1]) == pytest.approx(total["cost"])
    text = gpuctl("cost", "report", "--by", "provider")
    assert text.returncode == 0 and text.stdout.splitlines()[0].split() == [
        "PROVIDER",
        "HOURS",
        "COST",
    ]
    assert "total $" in text.stdout
    bad = gpuctl("cost", "report", "--since", "soon")
    assert bad.returncode == 2 and "error: --since: cannot read 'soon'" in bad.stderr


def test_cli_meter_json_and_watch(gpuctl_home: Path) -> None:
    (gpuctl_home / "config.toml").write_text("[budget]\nmonthly = 100\n")
    store = Store(gpuctl_home / "state.db")
    now = time.time()
    store.add_run(run("fast-1", provider="aws", created=now - 9000, budget=12.0))
    cost.open_compute(store, inst("aws", "i-1", price=1.992, run_id="fast-1"), "fast-1", now - 9000)
    meter = json_lines(gpuctl("cost", "--json").stdout)[0]
    assert meter["total"]["burn_per_hour"] == pytest.approx(1.992)
    assert meter["total"]["budget"] == 100
    assert meter["runs"][0]["key"] == "fast-1"
    assert meter["runs"][0]["spent"] == pytest.approx(4.98, abs=0.01)
    assert [b["scope"] for b in meter["budgets"]] == ["month", "run"]
    watch = gpuctl("cost", "--watch", "--interval", "0.1", "--iterations", "2")
    assert watch.returncode == 0, watch.stderr
    frames = [ln for ln in watch.stdout.splitlines() if ln.startswith("fast-1: ")]
    assert len(frames) == 2
    assert frames[0].startswith("fast-1: 2.5 h elapsed, ~$4.98 spent, $1.992/h now")
    assert sum(ln.startswith("total: $1.992/h now") for ln in watch.stdout.splitlines()) == 2
    table = gpuctl("cost")
    assert "month   $" in table.stdout and "of $100.00" in table.stdout
    assert "fast-1" in table.stdout and "$12.00 (42%)" in table.stdout


def test_cli_refresh_closes_what_the_provider_no_longer_has(gpuctl_home: Path) -> None:
    store = Store(gpuctl_home / "state.db")
    ghost = inst("local", "local-ghost", price=36.0, run_id=None, launched_at=time.time() - H)
    cost.open_compute(store, ghost, None)
    assert json_lines(gpuctl("cost", "--json").stdout)[0]["total"]["burn_per_hour"] == 36.0
    proc = gpuctl("cost", "--refresh")
    assert proc.returncode == 0, proc.stderr
    assert "reconciled: local local-ghost is gone" in proc.stderr
    assert "now     $0.000/h burning on 0 instances" in proc.stdout
    assert store.segments(open_only=True) == []


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 143)])
def test_watch_ends_on_ctrl_c_with_0_and_on_sigterm_with_143(
    gpuctl_home: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C is how a person ends --watch; a script's `timeout` is a signal, and says so."""
    from tests.cli import GPUCTL

    proc = subprocess.Popen(
        [GPUCTL, "cost", "--watch", "--interval", "0.2"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert "gpuctl cost" in proc.stdout.readline()  # the first frame: it is watching
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
