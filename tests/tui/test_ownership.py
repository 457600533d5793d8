"""The control center ends only what this installation created: an attached machine is
released (or terminated once its name is typed), a colleague's is named with its owner."""

from __future__ import annotations

from pathlib import Path

from gpuctl.models import Run, RunStatus
from gpuctl.state import Store
from gpuctl.tui.screens.confirm import ConfirmScreen
from gpuctl.tui.screens.main import MainScreen
from tests.tui import demo
from tests.tui.conftest import SIZE, wait_for
from tests.tui.fake_provider import make_instance

ATTACHED = "fast-260101-9a9b"
COLLEAGUE = "0123456789abcdef"


def add_attached_run(home: Path) -> None:
    """A finished run that used the user's own box i-00002 (`--instance i-00002`)."""
    spec = {"run_id": ATTACHED, "preset": "fast", "provider": "fake", "instance_id": "i-00002"}
    with Store(home / "state.db") as store:
        store.add_run(
            Run(
                ATTACHED,
                "fast",
                "fake",
                RunStatus.FINISHED,
                demo.NOW - 600,
                demo.NOW - 60,
                instance_id="i-00002",
                spec=spec,
            )
        )


async def test_x_on_an_attached_run_releases_unless_the_name_is_typed(seeded, make_app, fake_state):
    add_attached_run(seeded)
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        app.main.table.select_key(f"run:{ATTACHED}")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        dialog = app.screen
        assert dialog.require == "box-0002" and "NOT created by gpuctl" in dialog.body
        assert dialog.query_one("#confirm").disabled
        await pilot.click("#alternative")
        await wait_for(lambda: isinstance(app.screen, MainScreen))
        await wait_for(
            lambda: any(e["action"] == "released" for e in teardowns(seeded)), what="release"
        )
        assert fake_state.calls == []  # nothing stopped or terminated

        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press(*"box-0002", "enter")
        await wait_for(lambda: ("terminate", "i-00002") in fake_state.calls, what="terminate")


def teardowns(home: Path) -> list[dict]:
    with Store(home / "state.db") as store:
        return store.events(ATTACHED, kinds=["teardown"])


async def test_a_colleagues_machine_shows_its_owner_and_needs_its_name(
    seeded, make_app, fake_state
):
    theirs = make_instance("fake", 5).evolve(
        id="i-90000", name="their-box", run_id="fast-260101-beef", managed=True, owner=COLLEAGUE
    )
    with Store(seeded / "state.db") as store:
        store.put_instance(theirs)
    app = make_app(live=False, clock=lambda: demo.NOW)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        row = app.main.snapshot.row("inst:fake/i-90000")
        assert row is not None and "foreign" in row.state and "orphan" not in row.state
        assert COLLEAGUE in row.name
        app.main.table.select_key("inst:fake/i-90000")
        await pilot.press("x")
        await wait_for(lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.require == "their-box" and COLLEAGUE in app.screen.body
        await pilot.press("escape")
        assert fake_state.calls == []
