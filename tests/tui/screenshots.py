"""Write the README screenshots: SVG (Textual's save_screenshot) and PNG (rsvg-convert).

    .venv/bin/python -m tests.tui.screenshots            # into tui/screenshots/

Uses the demo state (tests/tui/demo.py) at its frozen clock, so the pictures change
only when the UI does.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from textual.pilot import Pilot

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tui" / "screenshots"


async def shoot(
    name: str, size: tuple[int, int], steps: Callable[[object, Pilot], Awaitable[None]]
) -> Path:
    from gpuctl.lifecycle import Engine
    from gpuctl.tui.app import create_app
    from tests.tui import demo

    home = Path(tempfile.mkdtemp(prefix="gpuctl-shot-"))
    os.environ["GPUCTL_HOME"] = str(home)
    demo.seed(home, count=14, monthly=5.5).close()
    app = create_app(Engine(), live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await steps(app, pilot)
        await pilot.pause(0.2)
        path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(OUT)))
    shutil.rmtree(home, ignore_errors=True)
    return path


async def main_screen(app: object, pilot: Pilot) -> None:
    from tests.tui import demo

    app.main.table.select_key(f"run:{demo.TRAINING}")  # type: ignore[attr-defined]


async def run_screen(app: object, pilot: Pilot) -> None:
    from gpuctl.tui.messages import RunEvent
    from tests.tui import demo

    app.main.table.select_key(f"run:{demo.TRAINING}")  # type: ignore[attr-defined]
    await pilot.press("enter")
    await pilot.pause()
    app.following.add(demo.TRAINING)  # type: ignore[attr-defined]
    for ev in demo.training_events():
        app.post_message(RunEvent(ev))  # type: ignore[attr-defined]
    await pilot.pause(0.3)


async def launch_modal(app: object, pilot: Pilot) -> None:
    from textual.widgets import Select

    await pilot.press("l")
    await pilot.pause(0.3)
    app.screen.query_one("#provider", Select).value = "fake"  # type: ignore[attr-defined]
    await pilot.pause(0.5)
    await pilot.press("tab", "tab")
    await pilot.pause(0.2)


def to_png(svg: Path) -> Path | None:
    """rsvg-convert needs xml:space="preserve" to keep the SVG's leading spaces."""
    tool = shutil.which("rsvg-convert")
    if tool is None:
        return None
    fixed = svg.with_suffix(".tmp.svg")
    fixed.write_text(svg.read_text().replace("<svg ", '<svg xml:space="preserve" ', 1))
    png = svg.with_suffix(".png")
    subprocess.run([tool, str(fixed), "-o", str(png)], check=True)
    fixed.unlink()
    return png


def main() -> int:
    sys.path.insert(0, str(REPO))
    from gpuctl.driver_registry import register

    register("fake", "tests.tui.fake_provider:FakeProvider")
    OUT.mkdir(parents=True, exist_ok=True)
    shots = [
        ("main", (120, 32), main_screen),
        ("run", (120, 32), run_screen),
        ("launch", (100, 30), launch_modal),
    ]
    for name, size, steps in shots:
        svg = asyncio.run(shoot(name, size, steps))
        png = to_png(svg)
        print(svg.relative_to(REPO), png.relative_to(REPO) if png else "(no rsvg-convert)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
