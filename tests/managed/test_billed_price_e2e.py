"""The price that is billed, end to end on moto + the local sshd: a spot machine that
lands at a price other than the quote says so and is metered at the real figure; when its
zone's price rises above the profile's max_price_per_hour while `gpuctl run` follows it,
the run is stopped like a budget stop (checkpoint first, results kept, exit 4)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gpuctl.errors import EXIT_BUDGET
from gpuctl.state import Store
from tests.cli import gpuctl
from tests.fakes.imds import FakeImds
from tests.fixtures.sshd import SshdServer

from .conftest import Stream, aws_profile, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.sshd]

ZONE = ("us-east-1", "g4dn.xlarge", "us-east-1a")


def test_a_spot_price_above_max_price_per_hour_stops_the_run_like_a_budget(
    aws: str,
    spot_prices: Any,
    gpuctl_home: Path,
    sshd: SshdServer,
    imds: FakeImds,
    tmp_path: Path,
) -> None:
    spot_prices[ZONE] = 0.21
    aws_profile(
        gpuctl_home,
        aws,
        sshd.port,
        sshd,
        metadata_url=imds.url,
        spot_poll_seconds=0.2,
        max_price_per_hour=0.25,
        spot_history_seconds=0,
    )
    shown = gpuctl("offers", "-p", "aws-test", "--gpu", "T4")  # the quote the user saw
    assert shown.returncode == 0 and "$0.210" in shown.stdout, shown.stdout + shown.stderr
    spot_prices[ZONE] = 0.23  # the zone's price a moment later, when the machine lands
    remote = tmp_path / "remote"
    env = {"GPUCTL_REMOTE_BASE": str(remote), "GPUCTL_REMOTE_PYTHON": sys.executable}
    argv = ["run", "validate", "--provider", "aws-test", "--spot", "--json"]
    argv += ["--set", "epochs=400", "--set", "train_samples=256", "--set", "val_samples=32"]
    argv += ["--idle-minutes", "0"]
    run = Stream(argv, env)
    try:
        wait_for(lambda: run.first("epoch", epoch=1), 240, "epoch 1")
        spot_prices[ZONE] = 0.31  # the market rises above the profile's cap mid-run
        rc, stderr = run.wait(timeout=300)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    events = run.events
    tail = stderr[-3000:] + json.dumps(events[-6:])
    assert rc == EXIT_BUDGET, tail
    notices = [e["message"] for e in events if e["event"] == "notice"]
    (quote,) = [m for m in notices if m.startswith("rough estimate")]
    assert "$0.210/h: spot live API, " in quote, quote  # the estimate names its price's source
    assert any("$0.230/h" in m and "$0.210/h quoted" in m for m in notices), notices
    assert any("above the max price $0.250/h" in m for m in notices), notices
    final = events[-1]
    assert final["status"] == "budget", final
    results = Path(final["results_dir"])
    assert (results / "last.pt").is_file()  # stopped gracefully: checkpoint first
    with Store(gpuctl_home / "state.db") as store:
        run_id = final["run_id"]
        (differs,) = store.events(run_id, kinds=["price_differs"])
        assert differs["quoted"] == pytest.approx(0.21)
        assert differs["billed"] == pytest.approx(0.23)
        assert (differs["market"], differs["zone"]) == ("spot", "us-east-1a")
        (exceeded,) = store.events(run_id, kinds=["max_price_exceeded"])
        assert exceeded["price"] == pytest.approx(0.31)
        assert exceeded["max_price"] == pytest.approx(0.25)
        assert store.get_run(run_id).status.value == "budget"
        rates = [s.rate_per_hour for s in store.segments(run_id=run_id) if s.market == "spot"]
        assert rates[0] == pytest.approx(0.23)  # the real figure from the start, not the quote
        assert rates[-1] == pytest.approx(0.31)  # and the risen one once it was read back
