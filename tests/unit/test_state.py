"""The state store: WAL, versioned, shared by processes, never overwrites what is not ours."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from pathlib import Path

import pytest

from gpuctl.errors import NotFoundError, StateError
from gpuctl.models import Instance, InstanceState, PriceSegment, Run, RunStatus
from gpuctl.runs.status import transition
from gpuctl.state import SCHEMA_VERSION, Store


def make_run(run_id: str = "validate-261123-a1b2", **kw: object) -> Run:
    now = time.time()
    fields = {
        "id": run_id,
        "preset": "validate",
        "provider": "local",
        "status": RunStatus.RUNNING,
        "created_at": now,
        "updated_at": now,
        "spec": {"run_id": run_id, "preset": "validate", "provider": "local"},
    }
    fields.update(kw)
    return Run(**fields)  # type: ignore[arg-type]


def test_runs_round_trip_and_prefix_lookup(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.add_run(make_run())
    store.add_run(make_run("fast-261123-ffff", preset="fast"))
    assert transition(store, "validate-261123-a1b2", RunStatus.FINISHED, epoch=2, metric=0.5)
    run = store.get_run("validate-261123-a1b2")
    assert run.status == RunStatus.FINISHED and run.epoch == 2 and run.metric == 0.5
    assert store.get_run("fast-26").id == "fast-261123-ffff"
    assert run.launch_spec.preset == "validate"
    with pytest.raises(NotFoundError, match="no run 'nope'"):
        store.get_run("nope")


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    Store(tmp_path / "state.db").close()
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_listing_marks_vanished_instances_gone(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    a = Instance("aws", "i-a", "a", "us-east-1", "g5.xlarge", InstanceState.RUNNING, run_id="r1")
    b = a.evolve(id="i-b", name="b")
    store.put_instances("aws", [a, b])
    assert {i.id for i in store.instances("aws")} == {"i-a", "i-b"}
    store.put_instances("aws", [a])
    assert [i.id for i in store.instances("aws")] == ["i-a"]
    gone = store.get_instance("aws", "i-b")
    assert gone is not None and gone.state == InstanceState.TERMINATED
    # An incomplete listing (one region failed) must not declare anything gone.
    store.put_instances("aws", [], complete=False)
    assert [i.id for i in store.instances("aws")] == ["i-a"]


def test_segments_close_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    seg = store.open_segment(
        PriceSegment("aws", "i-a", "r1", "g5.xlarge", "us-east-1", "spot", 0.35, start=100.0)
    )
    assert seg.id is not None
    assert store.close_segments("aws", "i-a", 50.0) == 1  # never ends before it started
    assert store.segments(run_id="r1")[0].end == 100.0
    assert store.close_segments("aws", "i-a", 500.0) == 0


def test_foreign_database_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE photos (id INTEGER)")
    db.execute("INSERT INTO photos VALUES (1)")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="belongs to another program"):
        Store(path)
    assert path.read_bytes() == before


def test_corrupt_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    before = path.read_bytes()
    with pytest.raises(StateError, match="not a usable gpuctl state database"):
        Store(path)
    assert path.read_bytes() == before


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer gpuctl"):
        Store(path)


def _writer(path: str, run_id: str, n: int) -> None:
    store = Store(Path(path))
    for i in range(n):
        store.add_event(run_id, "tick", {"i": i})
        store.update_run(run_id, epoch=i)


def test_two_processes_write_without_database_locked(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.add_run(make_run("r-1"))
    store.add_run(make_run("r-2"))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(path), rid, 150)) for rid in ("r-1", "r-2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(store.events("r-1")) == 150 and len(store.events("r-2")) == 150
    assert store.get_run("r-1").epoch == 149


def test_a_machine_reported_alive_again_is_no_longer_gone(tmp_path: Path) -> None:
    """An ssh box reused by a second run has the same id; it must not stay 'terminated'."""
    store = Store(tmp_path / "state.db")
    box = Instance("ssh", "me@10.0.0.5:22", "box", "-", "ssh", InstanceState.RUNNING)
    store.put_instance(box)
    store.mark_instance_gone("ssh", box.id)
    assert store.instances("ssh") == []
    store.put_instance(box)
    (back,) = store.instances("ssh")
    assert back.state == InstanceState.RUNNING


def _racer(path: str, run_id: str, start: float, won: object) -> None:
    store = Store(Path(path))
    while time.time() < start:
        time.sleep(0.001)
    if store.transition_run(
        run_id,
        {RunStatus.STOPPED},
        RunStatus.STARTING,
        event=("owner", {"pid": multiprocessing.current_process().pid}),
    ):
        won.value += 1  # type: ignore[attr-defined]


def test_transition_run_lets_exactly_one_of_several_processes_win(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(path)
    store.add_run(make_run("r-1", status=RunStatus.STOPPED))
    ctx = multiprocessing.get_context("spawn")
    won = ctx.Value("i", 0)
    start = time.time() + 3.0  # all of them at the same moment
    procs = [ctx.Process(target=_racer, args=(str(path), "r-1", start, won)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert won.value == 1
    assert store.get_run("r-1").status == RunStatus.STARTING
    assert len(store.events("r-1", kinds=["owner"])) == 1  # only the winner's claim
    assert not store.transition_run("r-1", {RunStatus.STOPPED}, RunStatus.STARTING)
    with pytest.raises(NotFoundError):
        store.transition_run("nope", {RunStatus.STOPPED}, RunStatus.STARTING)


def test_damaged_pages_behind_a_good_header_are_one_line_not_an_internal_error(
    gpuctl_home: Path,
) -> None:
    from gpuctl.models import Run, RunStatus
    from tests.cli import gpuctl

    path = gpuctl_home / "state.db"
    with Store(path) as store:
        for n in range(200):
            store.add_run(
                Run(f"validate-261203-{n:04x}", "validate", "local", RunStatus.FINISHED, n, n)
            )
    data = bytearray(path.read_bytes())
    data[4096:] = b"\xa5" * (len(data) - 4096)  # the header page survives, the rest does not
    path.write_bytes(bytes(data))
    listed = gpuctl("ls", "--runs")
    assert listed.returncode == 2, (listed.returncode, listed.stderr)
    assert "not a usable gpuctl state database" in listed.stderr
    assert "internal error" not in listed.stderr and "Traceback" not in listed.stderr
    # Refused, not overwritten (past the 100-byte header, whose change counter SQLite
    # itself bumps on open).
    assert path.read_bytes()[100:] == bytes(data)[100:]


def test_opening_a_second_handle_keeps_the_first_handles_lock(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it:
    a second Store opened in this process must not touch state.db's descriptors, or the
    first one's write lock vanishes and another process writes under it."""
    import subprocess
    import sys

    path = tmp_path / "state.db"
    first = Store(path)
    first._db.execute("BEGIN IMMEDIATE")  # the write lock a transition or a migration holds
    try:
        # What a provider or a worker thread does in the same process: open a handle (it
        # waits for the write lock to migrate, and gives up here; its files were touched).
        with pytest.raises(StateError):
            Store(path, timeout=0.2)
        probe = (
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(path)!r}, timeout=0, isolation_level=None)\n"
            "try:\n    db.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError:\n"
            "    sys.exit(0)\nsys.exit(1)\n"
        )
        other = subprocess.run([sys.executable, "-c", probe], timeout=60)
        assert other.returncode == 0, "another process got the write lock the first handle holds"
    finally:
        first._db.execute("ROLLBACK")
        first.close()
