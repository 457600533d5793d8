"""Benchmark: following a fast-growing log over a loopback sshd, gpuctl vs `ssh tail -F`.

gpuctl follows a log by reading byte ranges over its open SFTP session
(`SshHost.read_bytes(path, offset, 1 MiB)`, what `gpuctl.tail.Tail` does), so a
dropped link resumes at the offset. The baseline is `ssh host tail -c +1 -F log`.
Two measurements, each reader in its own process (for its peak RSS):

* live: a writer appends lines at --rate MB/s for --seconds; throughput is the bytes
  delivered over the time from the first write until the reader has them all (goal:
  gpuctl >= 0.8x the baseline);
* catch-up: the log already holds --catchup-mb; how fast can each reader drain it.

    .venv/bin/python tests/bench/bench_tail.py [--rate 20] [--seconds 8] [--catchup-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

GOAL = 0.8
GROWTH: list[int] = []  # gpuctl reader RSS growth while reading (bounded: chunk-sized)
CHUNK = 1 << 20
LINE = b"2026-01-01 12:00:00 epoch 3/50 step 1234/5000 loss 0.123456 lr 0.000300 " + b"x" * 25


def writer(path: Path, rate_mb: float, seconds: float) -> None:
    """Append LINE-sized lines at rate_mb MB/s in 10 ms bursts (a chatty trainer, x1000)."""
    line = LINE + b"\n"
    per_tick = max(1, int(rate_mb * 1e6 / 100 / len(line)))
    burst = line * per_tick
    started = time.perf_counter()
    with open(path, "ab", buffering=0) as fh:
        tick = 0
        while time.perf_counter() - started < seconds:
            fh.write(burst)
            tick += 1
            delay = started + tick / 100 - time.perf_counter()
            if delay > 0:
                time.sleep(delay)


def gpuctl_reader(args: argparse.Namespace) -> None:
    """Child process: follow by offset until `total` bytes arrived; print a JSON result."""
    import psutil

    from gpuctl.models import SshTarget
    from gpuctl.remote.ssh_host import SshHost
    from gpuctl.settings import load

    host = SshHost(
        SshTarget(host="127.0.0.1", port=args.port, user=args.user, key_path=args.key), load()
    )
    host.connect()
    print("ready", flush=True)
    me = psutil.Process()
    sys.stdin.readline()  # the parent starts the writer, then says go
    offset, peak = 0, me.memory_info().rss
    start_rss = peak
    while offset < args.total:
        data = host.read_bytes(args.path, offset, CHUNK)
        if data:
            offset += len(data)
            peak = max(peak, me.memory_info().rss)
        else:
            time.sleep(0.01)
    end = time.time()
    print(
        json.dumps({"bytes": offset, "end": end, "rss": peak, "growth": peak - start_rss}),
        flush=True,
    )
    host.close()


def run_gpuctl(server: object, path: Path, total: int, start_writer: object) -> tuple[float, int]:
    """(end wall time, peak RSS bytes) of a gpuctl reader process."""
    cmd = [sys.executable, __file__, "--reader", "--path", str(path), "--total", str(total)]
    cmd += ["--port", str(server.port), "--user", server.user, "--key", str(server.key_path)]  # type: ignore[attr-defined]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout
    assert proc.stdout.readline().strip() == "ready"
    start_writer()  # type: ignore[operator]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = json.loads(proc.stdout.readline())
    proc.wait()
    assert result["bytes"] >= total
    GROWTH.append(int(result["growth"]))
    return float(result["end"]), int(result["rss"])


def run_ssh_tail(server: object, path: Path, total: int, start_writer: object) -> tuple[float, int]:
    """(end wall time, peak RSS bytes) of `ssh host tail -c +1 -F path`."""
    import psutil

    argv = server.ssh_argv(f"tail -c +1 -F {shlex.quote(str(path))}")  # type: ignore[attr-defined]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    start_writer()  # type: ignore[operator]
    got = peak = 0
    fd = proc.stdout.fileno()
    ssh = psutil.Process(proc.pid)
    next_sample = 0
    while got < total:
        block = os.read(fd, 1 << 20)
        if not block:
            break
        got += len(block)
        if got >= next_sample:  # sampling every MB costs the baseline nothing noticeable
            peak = max(peak, ssh.memory_info().rss)
            next_sample = got + (1 << 20)
    end = time.time()
    proc.kill()
    proc.wait()
    assert got >= total, f"ssh tail delivered {got} of {total}"
    return end, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="MB/s the log grows")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--catchup-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--user", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        gpuctl_reader(args)
        return 0

    work = Path(tempfile.mkdtemp(prefix="gpuctl-bench-tail-"))
    os.environ.update(GPUCTL_HOME=str(work / "home"), GPUCTL_SSH_CONFIG="/dev/null")
    os.environ.pop("SSH_AUTH_SOCK", None)
    from tests.fixtures.sshd import running_sshd, sshd_missing

    if sshd_missing():
        print(f"skipped: {sshd_missing()}")
        return 0
    import multiprocessing

    live: dict[str, list[float]] = {"gpuctl": [], "ssh tail -F": []}
    catch: dict[str, list[float]] = {"gpuctl": [], "ssh tail -F": []}
    rss: dict[str, int] = {"gpuctl": 0, "ssh tail -F": 0}
    readers = {"gpuctl": run_gpuctl, "ssh tail -F": run_ssh_tail}
    with running_sshd(work / "sshd") as server:
        for rnd in range(args.rounds):
            for name, reader in readers.items():
                # live: the log grows while the reader follows it
                log = work / f"live-{rnd}-{name[:3]}.log"
                log.write_bytes(b"")
                line = len(LINE) + 1
                per_tick = max(1, int(args.rate * 1e6 / 100 / line))
                total = per_tick * line * int(args.seconds * 100)
                proc = multiprocessing.Process(target=writer, args=(log, args.rate, args.seconds))
                began: list[float] = []

                def start(proc: multiprocessing.Process = proc, began: list = began) -> None:
                    began.append(time.time())
                    proc.start()

                end, peak = reader(server, log, total, start)
                proc.join()
                total = log.stat().st_size if log.stat().st_size < total else total
                live[name].append(total / (end - began[0]) / 1e6)
                rss[name] = max(rss[name], peak)
                log.unlink()
                # catch-up: drain an existing big log
                big = work / f"big-{rnd}-{name[:3]}.log"
                with open(big, "wb") as fh:
                    block = (LINE + b"\n") * (CHUNK // (len(LINE) + 1))
                    while fh.tell() < args.catchup_mb * 1e6:
                        fh.write(block)
                size = big.stat().st_size
                t0: list[float] = []
                end, peak = reader(server, big, size, lambda t0=t0: t0.append(time.time()))
                catch[name].append(size / (end - t0[0]) / 1e6)
                rss[name] = max(rss[name], peak)
                big.unlink()

    print(
        f"median of {args.rounds} rounds; live log grows {args.rate:g} MB/s for {args.seconds:g}s"
    )
    print(f"{'':14s}{'live MB/s':>12s}{'catch-up MB/s':>16s}{'peak RSS':>12s}")
    med = {n: (statistics.median(live[n]), statistics.median(catch[n])) for n in readers}
    for n in readers:
        print(f"{n:14s}{med[n][0]:12.1f}{med[n][1]:16.1f}{rss[n] / 1e6:10.1f} MB")
    ratio_live = med["gpuctl"][0] / med["ssh tail -F"][0]
    ratio_catch = med["gpuctl"][1] / med["ssh tail -F"][1]
    print(f"{'gpuctl / ssh':14s}{ratio_live:11.2f}x{ratio_catch:15.2f}x")
    print(f"gpuctl reader RSS growth while reading: max {max(GROWTH) / 1e6:.1f} MB")
    verdict = "met" if ratio_live >= GOAL else "MISSED"
    print(f"\nlive tail throughput ratio {ratio_live:.2f}x (goal >= {GOAL}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
