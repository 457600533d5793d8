"""Benchmark: how fast `gpuctl --help` and a cached `gpuctl ls` start.

Each command runs as a fresh process, as a user types it, against a state store holding
1,000 cached instances. The baseline is a bare `python -c pass` in the same venv, timed
in the same loop, so the ratio is the cost of gpuctl itself. Also prints Python's own
import-time total for each path and checks that the heavy SDKs (boto3, pydo, torch,
textual, paramiko) are not imported on them. Goal: well under a second each.

    .venv/bin/python tests/bench/bench_startup.py
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 15
HEAVY = ("boto3", "botocore", "pydo", "torch", "textual", "paramiko")


def seed(home: Path) -> None:
    os.environ["GPUCTL_HOME"] = str(home)
    from gpuctl.models import Instance, InstanceState
    from gpuctl.settings import load
    from gpuctl.state import Store

    store = Store(load().state_path)
    rows = [
        Instance(
            "local",
            f"local-run-{i:04d}",
            f"run-{i:04d}",
            "local",
            "local",
            InstanceState.RUNNING,
            run_id=f"run-{i:04d}",
            managed=True,
        )
        for i in range(1000)
    ]
    store.put_instances("local", rows, complete=False)
    store.set_provider_status("local", True, "")


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def imports(argv: list[str], env: dict[str, str]) -> tuple[float, set[str]]:
    """(total import time in seconds, heavy top-level packages imported)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True
    )
    total = 0
    heavy = set()
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if not m:
            continue
        if m.group(2) == " ":  # top level
            total += int(m.group(1))
        name = m.group(3).split(".")[0]
        if name in HEAVY:
            heavy.add(name)
    return total / 1e6, heavy


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="gpuctl-bench-startup-"))
    seed(home)
    env = {**os.environ, "GPUCTL_HOME": str(home)}
    gpuctl = str(Path(sys.executable).parent / "gpuctl")
    commands = {
        "gpuctl --help": [gpuctl, "--help"],
        "gpuctl ls --cached": [gpuctl, "ls", "--cached"],
    }
    baseline_cmd = [sys.executable, "-c", "pass"]
    samples: dict[str, list[float]] = {name: [] for name in commands}
    base: list[float] = []
    for _ in range(ROUNDS):  # interleaved, so load affects both alike
        base.append(timed(baseline_cmd, env))
        for name, argv in commands.items():
            samples[name].append(timed(argv, env))
    b = statistics.median(base)
    print(f"python -c pass (baseline)   median {b * 1000:7.1f} ms")
    ok = True
    for name, times in samples.items():
        m = statistics.median(times)
        module_args = ["-m", "gpuctl", *commands[name][1:]]
        total, heavy = imports(module_args, env)
        ok &= not heavy and m < 1.0
        print(
            f"{name:27s} median {m * 1000:7.1f} ms  ({m / b:4.1f}x baseline, "
            f"+{(m - b) * 1000:.0f} ms); imports {total * 1000:.0f} ms; heavy SDKs: "
            f"{', '.join(sorted(heavy)) or 'none'}"
        )
    print("goal: each well under 1 s with no heavy SDK imported:", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
