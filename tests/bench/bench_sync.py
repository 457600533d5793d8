"""Benchmark: incremental upload of a 1,000-file / 200 MB tree over a loopback sshd.

Compares gpuctl's `SshHost.put_tree` (manifest + rsync engine, and the SFTP fallback)
with plain `rsync -a` over ssh on three syncs: the first (everything travels), a
no-change re-sync (goal < 0.5 s), and a one-file-changed re-sync. gpuctl's timings
include listing the tree (`walk_tree`), as a launch does. Prints seconds and ratios.

    .venv/bin/python tests/bench/bench_sync.py [--files 1000] [--mb 200]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GOAL_NOCHANGE_S = 0.5


def make_tree(root: Path, files: int, total_mb: int) -> int:
    """90% small source-like files, 10% large binary ones, about total_mb in all."""
    big_count = max(1, files // 10)
    small_count = files - big_count
    small_size = 16 << 10
    big_size = max(1, (total_mb << 20) - small_count * small_size) // big_count
    written = 0
    for i in range(files):
        size = small_size if i < small_count else big_size
        path = root / f"dir{i % 20}" / f"sub{i % 5}" / f"file{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        written += size
    return written


def timed(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gpuctl-bench-sync-"))
    os.environ.update(GPUCTL_HOME=str(work / "home"), GPUCTL_SSH_CONFIG="/dev/null")
    os.environ.pop("SSH_AUTH_SOCK", None)

    from gpuctl.files import walk_tree
    from gpuctl.remote.ssh_host import SshHost
    from gpuctl.settings import load
    from tests.fixtures.sshd import running_sshd, sshd_missing

    if sshd_missing():
        print(f"skipped: {sshd_missing()}")
        return 0
    src = work / "src"
    size = make_tree(src, args.files, args.mb)
    print(f"tree: {args.files} files, {size / 1e6:.0f} MB in {src}")
    settings = load()
    phases = ("first", "no change", "one changed")
    labels = ("rsync -a", "gpuctl (rsync engine)", "gpuctl (sftp engine)")
    samples: dict[str, dict[str, list[float]]] = {x: {p: [] for p in phases} for x in labels}
    try:
        with running_sshd(work / "sshd") as server:
            ssh = shlex.join(server.ssh_argv()[:-1])
            for rnd in range(args.rounds):  # engines interleaved: load changes hit all alike
                for n, label in enumerate(labels):
                    dest = work / f"dest-{rnd}-{n}"
                    changed = src / f"dir{n}/sub{n % 5}/file{20 * rnd + n}.bin"
                    row = samples[label]
                    if label == "rsync -a":

                        def sync(dest: Path = dest) -> None:
                            remote = f"{server.user}@{server.host}:{dest}/"
                            cmd = ["rsync", "-a", "-e", ssh, f"{src}/", remote]
                            subprocess.run(cmd, check=True)

                        for phase in phases:
                            if phase == "one changed":
                                changed.write_bytes(os.urandom(16 << 10))
                            row[phase].append(timed(sync))
                        continue
                    method = "sftp" if "sftp" in label else "auto"
                    host = SshHost(server.target(), settings, sync_method=method)
                    host.connect()  # a launch has the session open already
                    stats: list = []

                    def put(host: SshHost = host, dest: Path = dest, stats: list = stats) -> None:
                        gen = host.put_tree("bench", src, walk_tree(src), str(dest))
                        while True:
                            try:
                                next(gen)
                            except StopIteration as stop:
                                stats.append(stop.value)
                                return

                    for phase in phases:
                        if phase == "one changed":
                            changed.write_bytes(os.urandom(16 << 10))
                        row[phase].append(timed(put))
                    host.close()
                    files = [st.files for st in stats]
                    assert files == [args.files, 0, 1], f"{label}: transferred {files}"
                    assert stats[0].method == ("sftp" if method == "sftp" else "rsync")
                    shutil.rmtree(dest, ignore_errors=True)
                shutil.rmtree(work / f"dest-{rnd}-0", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {x: {p: statistics.median(v) for p, v in samples[x].items()} for x in labels}

    print(f"median of {args.rounds} rounds")
    print(f"{'':24s}" + "".join(f"{p:>14s}" for p in phases))
    for label, row in results.items():
        print(f"{label:24s}" + "".join(f"{row[p]:13.3f}s" for p in phases))
    base = results["rsync -a"]
    for label, row in results.items():
        if label == "rsync -a":
            continue
        ratios = "".join(f"{row[p] / base[p]:13.2f}x" for p in phases)
        print(f"{label + ' / rsync':24s}{ratios}")
    nochange = results["gpuctl (rsync engine)"]["no change"]
    verdict = "met" if nochange < GOAL_NOCHANGE_S else "MISSED"
    print(f"\nno-change re-sync: {nochange:.3f}s (goal < {GOAL_NOCHANGE_S}s: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
