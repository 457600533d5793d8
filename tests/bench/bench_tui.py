"""Benchmark: the control center with 1,000 cached instances.

1. First paint, in-process: from create_app() (state store read, snapshot built) to the
   first frame the compositor hands to the terminal with the table's rows in it.
2. Cold start, the real `gpuctl` in tmux (when tmux is installed): process start,
   Python and Textual imports included, until "1,000 rows" is on the terminal.
3. Keypress to render: cursor moves (down) while background refreshes run back to back
   (a fake provider listing 1,000 instances after 200 ms of simulated API latency, the
   store written, the snapshot rebuilt and diffed into the table). Measured from the
   key event to the frame that shows the moved cursor.

Goals: first paint < 0.5 s, p95 keypress < 50 ms (this machine).

    .venv/bin/python tests/bench/bench_tui.py
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

COUNT = 1000
SIZE = (120, 40)
PAINT_ROUNDS = 5
PRESSES = 200
GOAL_PAINT_S = 0.5
GOAL_P95_MS = 50.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed(home: Path, latency: float = 0.0) -> None:
    from tests.tui import demo

    demo.seed(home, count=COUNT).close()
    config = (home / "config.toml").read_text()
    config = config.replace('providers = ["local", "fake", "aws"]', 'providers = ["local", "fake"]')
    (home / "config.toml").write_text(config + f"latency = {latency}\n")


def watch_frames(app: Any) -> list[tuple[float, int]]:
    """Record (time, cursor row) each time a frame goes to the terminal (rendered in full)."""
    frames: list[tuple[float, int]] = []
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)  # the bytes a real terminal would get
        try:
            row = app.main.table.cursor_row if app.main.table.row_count else -1
        except Exception:
            row = -1
        frames.append((time.perf_counter(), row))
        original(screen, renderable)

    app._display = display
    return frames


async def first_paint() -> float:
    from gpuctl.lifecycle import Engine
    from gpuctl.tui.app import create_app

    t0 = time.perf_counter()
    app = create_app(Engine(), live=False)
    frames = watch_frames(app)
    async with app.run_test(size=SIZE, headless=True) as pilot:
        while not any(row >= 0 for _, row in frames):
            await asyncio.sleep(0.001)
        painted = next(t for t, row in frames if row >= 0)
        assert app.main.table.row_count >= COUNT
        await pilot.pause()
    return painted - t0


async def keypresses() -> tuple[list[float], int]:
    from gpuctl.lifecycle import Engine
    from gpuctl.tui.app import create_app

    app = create_app(Engine(), live=True, refresh_seconds=0.25)
    frames = watch_frames(app)
    latencies: list[float] = []
    async with app.run_test(size=SIZE, headless=True) as pilot:
        while app.listed_at is None:
            await asyncio.sleep(0.01)
        refreshed = 0
        last = app.listed_at
        table = app.main.table
        table.move_cursor(row=0)
        await pilot.pause()
        for i in range(PRESSES):
            if i and i % 150 == 0:
                table.move_cursor(row=0)
                await pilot.pause()
            expected = table.cursor_row + 1
            seen = len(frames)
            t0 = time.perf_counter()
            app.post_message(_key("down"))
            while not any(row == expected for _, row in frames[seen:]):
                await asyncio.sleep(0.0005)
            t1 = next(t for t, row in frames[seen:] if row == expected)
            latencies.append((t1 - t0) * 1000)
            if app.listed_at != last:
                refreshed += 1
                last = app.listed_at
            await asyncio.sleep(0.02 + (i % 5) * 0.01)  # a typist, not a flood
    return latencies, refreshed


def _key(name: str) -> Any:
    from textual import events

    return events.Key(name, None)


def cold_start(home: Path) -> float | None:
    """Real process in tmux: start until the 1,000 rows are on the terminal."""
    if shutil.which("tmux") is None:
        return None
    socket = f"gpuctl-bench-{os.getpid()}"
    env = f"GPUCTL_HOME={shlex.quote(str(home))} TERM=xterm-256color"
    # The fake provider lives in the tests: register it, then start the real entry point.
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); "
        "from gpuctl.driver_registry import register; "
        "register('fake', 'tests.tui.fake_provider:FakeProvider'); "
        "from gpuctl.cli import main; sys.argv = ['gpuctl']; main()"
    )
    command = f"env {env} {shlex.quote(sys.executable)} -c {shlex.quote(code)}"
    tmux = ["tmux", "-L", socket]
    t0 = time.perf_counter()
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "40", "-s", "b", command])
    try:
        deadline = t0 + 30
        while time.perf_counter() < deadline:
            screen = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True
            ).stdout
            if "1,00" in screen and "rows" in screen:
                return time.perf_counter() - t0
            time.sleep(0.01)
        return None
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="gpuctl-bench-tui-"))
    os.environ["GPUCTL_HOME"] = str(home)
    from gpuctl.driver_registry import register

    register("fake", "tests.tui.fake_provider:FakeProvider")
    seed(home, latency=0.2)

    t = time.perf_counter()
    import gpuctl.tui.app  # noqa: F401  (imports are part of a cold start, not of a paint)

    import_s = time.perf_counter() - t
    paints = [asyncio.run(first_paint()) for _ in range(PAINT_ROUNDS)]
    cold = cold_start(home)
    latencies, refreshes = asyncio.run(keypresses())
    shutil.rmtree(home, ignore_errors=True)

    paint = statistics.median(paints)
    p50, p95 = pct(latencies, 0.5), pct(latencies, 0.95)
    print(f"instances cached           {COUNT}")
    print(f"imports (gpuctl.tui.app)   {import_s:.3f} s (once per process)")
    print(
        f"first paint, in-process    median {paint:.3f} s  (min {min(paints):.3f}, "
        f"max {max(paints):.3f}, {PAINT_ROUNDS} rounds)   goal < {GOAL_PAINT_S} s  "
        + ("OK" if paint < GOAL_PAINT_S else "MISSED")
    )
    if cold is not None:
        print(
            f"cold start, real gpuctl    {cold:.3f} s  (process start to rows on a tmux terminal)"
        )
    print(
        f"keypress to render         p50 {p50:.1f} ms  p95 {p95:.1f} ms  "
        f"max {max(latencies):.1f} ms"
        f"  ({len(latencies)} cursor moves, {refreshes} background refreshes meanwhile)"
        f"   goal p95 < {GOAL_P95_MS:.0f} ms  " + ("OK" if p95 < GOAL_P95_MS else "MISSED")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
