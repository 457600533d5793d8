"""The ledger's storage: survives kill -9 mid-write, and upgrades an older state.db."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gpuctl.state import _MIGRATIONS, APPLICATION_ID, SCHEMA_VERSION, Store
from tests.conftest import REPO

WRITER = textwrap.dedent(
    """
    import sys
    from gpuctl import cost
    from gpuctl.models import Instance, InstanceState, Market
    from gpuctl.state import Store

    store = Store(sys.argv[1])
    spot = Instance("aws", "i-spot", "i-spot", "us-east-1", "g5.xlarge",
                    InstanceState.RUNNING, price_per_hour=0.30, market=Market.SPOT,
                    launched_at=1000.0, run_id="r1")
    cost.open_compute(store, spot, "r1", now=1000.0)
    i = len(store.events("r1", kinds=["tick"]))  # a restart goes on where it was killed
    while True:
        i += 1
        cost.record_spot_price(store, spot, 0.30 + (i % 2) * 0.05, 1000.0 + i)
        store.add_event("r1", "tick", {"i": i, "pad": "x" * 2000})
        store.fire_alert("run", f"r{i}", "warn", 1.0, 2.0, 1000.0 + i)
    """
)


def write_until_killed(db: Path, segments: int) -> None:
    """Run the writer until the ledger holds `segments` segments, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
    )
    reader = Store(db)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(reader.segments()) < segments:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reader.close()


def assert_consistent(db: Path) -> int:
    store = Store(db)  # opens: not refused as corrupt
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    segs = store.segments(instance_id="i-spot")
    # Every re-pricing closed one segment and opened the next in one transaction: the
    # chain has no gap, no overlap, and exactly one open end (billed once, not zero times).
    assert [s.end for s in segs].count(None) == 1 and segs[-1].end is None
    for prev, nxt in itertools.pairwise(segs):
        assert prev.end == nxt.start
        assert prev.rate_per_hour != nxt.rate_per_hour
    ticks = store.events("r1", kinds=["tick"])
    assert [e["i"] for e in ticks] == list(range(1, len(ticks) + 1))
    assert all(len(e["pad"]) == 2000 for e in ticks)
    assert len(segs) - 1 in (len(ticks), len(ticks) + 1)  # the kill fell between the two
    store.close()
    return len(segs)


def test_kill_9_during_ledger_writes_leaves_no_torn_rows(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    Store(db).close()
    count = 0
    for _ in range(4):  # several kills, each at whatever write it lands on
        write_until_killed(db, count + 100)
        count = assert_consistent(db)
    assert count >= 400
    # And it is still writable.
    from gpuctl import cost
    from gpuctl.models import Instance, InstanceState

    store = Store(db)
    spot = Instance("aws", "i-spot", "i-spot", "us-east-1", "g5", InstanceState.RUNNING)
    cost.close_instance(store, spot, 1e9)
    assert store.segments(open_only=True) == []


def test_schema_1_database_is_upgraded_in_place(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.executescript(_MIGRATIONS[1])
    con.execute(
        "INSERT INTO price_segments (provider, instance_id, run_id, instance_type, region, "
        "market, rate_per_hour, start, end, kind) VALUES "
        "('aws', 'i-old', 'r0', 'g5.xlarge', 'us-east-1', 'on-demand', 1.0, 0, 3600, 'compute')"
    )
    con.execute(f"PRAGMA application_id={APPLICATION_ID}")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    store = Store(db)
    (seg,) = store.segments()
    assert seg.instance_id == "i-old" and seg.source == "launch" and seg.end == 3600
    assert store.fire_alert("month", "2026-03", "warn", 8.0, 10.0, 1.0) is True
    assert store.fire_alert("month", "2026-03", "warn", 9.0, 10.0, 2.0) is False
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
