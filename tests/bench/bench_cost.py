"""Benchmark: the cost meter over a year of ledger, as the TUI header redraws it.

Fills a state store with a year of runs (spot re-pricing included: ~18,000 segments),
then times `cost.meter()` (this month's segments and the runs they belong to) against a
baseline that meters the whole ledger with `compute_meter`, and `cost.report` for the
last 30 days. Goal: the meter within 0.3x of the whole-ledger baseline, since the
header redraws every refresh and history only grows.

    .venv/bin/python tests/bench/bench_cost.py
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

MONTHS = 12
RUNS_PER_MONTH = 150
REPRICES = 10
ROUNDS = 7
GOAL = 0.3


def main() -> int:
    os.environ["GPUCTL_HOME"] = tempfile.mkdtemp(prefix="gpuctl-bench-cost-")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from gpuctl import cost
    from gpuctl.models import Instance, InstanceState, Market, Run, RunStatus
    from gpuctl.settings import load
    from gpuctl.state import Store

    settings = load()
    store = Store(settings.state_path)
    rng = random.Random(7)
    now = time.time()
    for n in range(MONTHS * RUNS_PER_MONTH):
        start = now - rng.random() * MONTHS * 30 * 86400
        run_id = f"fast-{n:05d}"
        store.add_run(Run(run_id, "fast", "aws", RunStatus.FINISHED, start, start, budget=10.0))
        inst = Instance(
            "aws", f"i-{n:05d}", run_id, "us-east-1", "g5.xlarge", InstanceState.RUNNING,
            launched_at=start, price_per_hour=0.35, market=Market.SPOT, run_id=run_id,
        )  # fmt: skip
        cost.open_compute(store, inst, run_id, now=now)
        t = start
        for _ in range(REPRICES):
            t += rng.random() * 1800
            cost.record_spot_price(store, inst, 0.2 + rng.random() * 0.3, t)
        if t + 600 < now:
            cost.close_instance(store, inst, t + 600)
    segments = store.segments()
    runs = store.list_runs()

    def timed(fn) -> float:  # type: ignore[no-untyped-def]
        samples = []
        for _ in range(ROUNDS):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    baseline = timed(lambda: cost.compute_meter(store.segments(), runs, settings, now))
    meter = timed(lambda: cost.meter(store, settings, now))
    report = timed(lambda: cost.report(store, settings, since=now - 30 * 86400, now=now))
    ratio = meter / baseline
    print(f"ledger: {len(segments)} segments, {len(runs)} runs")
    print(f"whole-ledger meter (baseline): {baseline * 1000:7.1f} ms")
    print(f"cost.meter (this month):       {meter * 1000:7.1f} ms  ({ratio:.2f}x baseline)")
    print(f"cost.report --since 30d:       {report * 1000:7.1f} ms")
    ok = ratio <= GOAL
    print(f"goal <= {GOAL}x: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
