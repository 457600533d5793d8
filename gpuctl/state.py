"""The local state store: SQLite in WAL mode, safe under several gpuctl processes.

It holds what gpuctl knows when the network is not asked: runs, the cached instance
listing (instant first paint, fast `gpuctl ls`), price segments (the cost ledger),
events, and per-provider health. Every write is one short transaction started with
BEGIN IMMEDIATE, so two processes queue on the write lock instead of failing with
"database is locked", and a crash mid-write leaves no torn row.

A file that is not ours (another app's database, a corrupt file, a newer schema) is
refused, never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import NotFoundError, StateError
from .models import Instance, InstanceState, PriceSegment, Run, RunStatus
from .private import private_dir, private_file
from .runs.status import IllegalTransition, sources

APPLICATION_ID = 0x67707563  # "gpuc"
SCHEMA_VERSION = 3

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        preset TEXT NOT NULL,
        provider TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        instance_id TEXT,
        spec TEXT NOT NULL DEFAULT '{}',
        remote_dir TEXT,
        results_dir TEXT,
        epoch INTEGER NOT NULL DEFAULT 0,
        epochs INTEGER NOT NULL DEFAULT 0,
        metric REAL,
        eta_seconds REAL,
        reason TEXT NOT NULL DEFAULT '',
        budget REAL,
        attempt INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX runs_status ON runs(status);
    CREATE TABLE instances (
        provider TEXT NOT NULL,
        id TEXT NOT NULL,
        data TEXT NOT NULL,
        run_id TEXT,
        state TEXT NOT NULL,
        seen_at REAL NOT NULL,
        gone_at REAL,
        PRIMARY KEY (provider, id)
    );
    CREATE INDEX instances_run ON instances(run_id);
    CREATE TABLE price_segments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        provider TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        run_id TEXT,
        instance_type TEXT NOT NULL,
        region TEXT NOT NULL,
        market TEXT NOT NULL,
        rate_per_hour REAL NOT NULL,
        start REAL NOT NULL,
        end REAL,
        kind TEXT NOT NULL DEFAULT 'compute'
    );
    CREATE INDEX segments_instance ON price_segments(provider, instance_id);
    CREATE INDEX segments_run ON price_segments(run_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_run ON events(run_id, id);
    CREATE TABLE provider_status (
        provider TEXT PRIMARY KEY,
        ok INTEGER NOT NULL,
        message TEXT NOT NULL,
        checked_at REAL NOT NULL
    );
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        stored_at REAL NOT NULL
    );
    """,
    # 2: where a ledger segment came from (launch, spot, reconcile...), and budget alerts
    # that fire once each, even with the CLI and the TUI following the same run.
    2: """
    ALTER TABLE price_segments ADD COLUMN source TEXT NOT NULL DEFAULT 'launch';
    CREATE TABLE budget_alerts (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        level TEXT NOT NULL,
        fired_at REAL NOT NULL,
        spent REAL NOT NULL,
        budget REAL NOT NULL,
        PRIMARY KEY (scope, key, level)
    );
    """,
    # 3: notifications, each claimed once (run + event) before it is sent, by whichever
    # process sees it first, or marked as sent by the agent on the machine.
    3: """
    CREATE TABLE notifications (
        key TEXT PRIMARY KEY,
        run_id TEXT,
        event TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        sent_by TEXT NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX notifications_at ON notifications(at);
    """,
}

# Told of every event recorded through this handle, after its transaction commits.
EventListener = Callable[[str | None, str, Mapping[str, Any]], None]

_RUN_COLUMNS = (
    "id",
    "preset",
    "provider",
    "status",
    "created_at",
    "updated_at",
    "instance_id",
    "spec",
    "remote_dir",
    "results_dir",
    "epoch",
    "epochs",
    "metric",
    "eta_seconds",
    "reason",
    "budget",
    "attempt",
)


class Store:
    """Thread-safe handle on state.db; cheap to open, so each process opens its own."""

    def __init__(self, path: Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self.listeners: list[EventListener] = []  # e.g. gpuctl.notify's Notifier
        try:
            private_dir(self.path.parent)
            if self.path.is_dir():
                raise StateError(
                    f"{self.path} is a directory, not gpuctl's state database",
                    hint="move it aside, or set GPUCTL_HOME to another directory",
                )
            existed = self.path.exists() and self.path.stat().st_size > 0
            # sqlite gives -wal and -shm the database file's mode: 0600 makes all three private.
            for suffix in ("", "-wal", "-shm"):
                name = self.path.with_name(self.path.name + suffix)
                if not suffix or name.exists():
                    private_file(name)
        except OSError as exc:
            raise _place_error(self.path, exc) from None
        try:
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._check_ours(existed)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            # Say what is wrong with the place before blaming the file: a database in a
            # read-only or full directory is fine, and moving it aside loses all history.
            place = _unwritable(self.path.parent)
            if place is not None:
                raise _place_error(self.path, place) from None
            if isinstance(exc, sqlite3.OperationalError):
                raise _write_error(self.path, exc) from None
            raise _damaged(self.path, exc) from None

    # -- opening -------------------------------------------------------------------

    def _check_ours(self, existed: bool) -> None:
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if not existed:
            return
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if app_id != APPLICATION_ID and (tables or version):
            raise StateError(
                f"{self.path} belongs to another program (not a gpuctl state database)",
                hint="refusing to overwrite it: move it aside or set GPUCTL_HOME elsewhere",
            )
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer gpuctl (schema {version}, "
                f"this one knows {SCHEMA_VERSION})",
                hint="upgrade gpuctl (pip install -U gpuctl)",
            )

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _split_sql(_MIGRATIONS[target]):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version={target}")
                self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
                self._db.execute("COMMIT")
            except BaseException:
                # An interrupt may land before BEGIN took effect: no transaction to roll
                # back is no second error hiding the first (a Ctrl-C is not a disk fault).
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken up front (no upgrade deadlock).

        A disk that filled up or went read-only since opening is one StateError, not a
        traceback; the transaction is rolled back, so no row is torn.
        """
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise _write_error(self.path, exc) from None
            except sqlite3.DatabaseError as exc:  # pages damaged past a good header
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise _damaged(self.path, exc) from None

    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(args)).fetchall()
            except sqlite3.OperationalError as exc:
                raise _write_error(self.path, exc) from None
            except sqlite3.DatabaseError as exc:  # pages damaged past a good header
                raise _damaged(self.path, exc) from None

    # -- runs ------------------------------------------------------------------------

    def add_run(self, run: Run) -> Run:
        row = _run_row(run)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _RUN_COLUMNS)})",
                [row[c] for c in _RUN_COLUMNS],
            )
        return run

    def update_run(self, run_id: str, **changes: Any) -> Run:
        if not changes:
            return self.get_run(run_id)
        changes.setdefault("updated_at", time.time())
        for key in changes:
            if key not in _RUN_COLUMNS or key == "id":
                raise ValueError(f"not a run column: {key}")
        if "spec" in changes:
            changes["spec"] = json.dumps(dict(changes["spec"]), sort_keys=True, default=str)
        if "status" in changes:
            raise IllegalTransition(
                "a run's status changes through gpuctl.runs.status.transition, not update_run"
            )
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                [*changes.values(), run_id],
            )
            if cur.rowcount == 0:
                raise _no_run(run_id)
        return self.get_run(run_id)

    def transition_run(
        self,
        run_id: str,
        expected: Iterable[RunStatus],
        to: RunStatus,
        *,
        event: tuple[str, Mapping[str, Any]] | None = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set on a run's status, in one transaction: True only for the caller
        that found the run in one of `expected` and moved it to `to` (with `fields`).

        Two processes racing for the same run (two `gpuctl resume`, the TUI and the CLI)
        cannot both win. `event` (kind, data) is recorded in the same transaction, so
        whoever loses can already read who won.
        """
        # Only from where the state machine allows: the table, not the caller, has the
        # last word (a finished run never moves again).
        wanted = sorted(s.value for s in sources(to, expected))
        if not wanted:
            return False
        changes = {**fields, "status": RunStatus(to).value}
        changes.setdefault("updated_at", time.time())
        for key in changes:
            if key not in _RUN_COLUMNS or key == "id":
                raise ValueError(f"not a run column: {key}")
        if "spec" in changes:
            changes["spec"] = json.dumps(dict(changes["spec"]), sort_keys=True, default=str)
        marks = ", ".join("?" for _ in wanted)
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in changes)} "
                f"WHERE id = ? AND status IN ({marks})",
                [*changes.values(), run_id, *wanted],
            )
            if cur.rowcount == 0:
                if db.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone() is None:
                    raise _no_run(run_id)
                return False
            if event is not None:
                kind, data = event
                db.execute(
                    "INSERT INTO events (run_id, time, kind, data) VALUES (?, ?, ?, ?)",
                    [run_id, time.time(), kind, json.dumps(dict(data), default=str)],
                )
        if event is not None:
            self._tell(run_id, *event)
        return True

    def get_run(self, run_id: str) -> Run:
        if not run_id.strip():  # "" is a prefix of every id: never "the only run"
            raise NotFoundError(
                "no run id given (empty)",
                hint="name the run: `gpuctl ls --runs` lists them",
            )
        rows = self._query("SELECT * FROM runs WHERE id = ?", [run_id])
        if not rows:
            rows = self._query(
                "SELECT * FROM runs WHERE id LIKE ? ESCAPE '\\' ORDER BY created_at DESC",
                [_like_prefix(run_id)],
            )
            if len(rows) > 1:
                names = ", ".join(r["id"] for r in rows[:5])
                raise NotFoundError(
                    f"run id '{run_id}' is ambiguous ({names})", hint="type more of the id"
                )
        if not rows:
            raise _no_run(run_id)
        return _row_run(rows[0])

    def find_run(self, run_id: str) -> Run | None:
        try:
            return self.get_run(run_id)
        except NotFoundError:
            return None

    def end_run(
        self, run_id: str, status: RunStatus, event: Mapping[str, Any], **changes: Any
    ) -> bool:
        """Move an active run to its final status and record its "ended" event, once.

        A compare-and-set on the status, in one transaction with the event: a follower,
        `gpuctl status`, a reconcile and the TUI may all see the same trainer exit, and
        only the first records it (True); the others get False and read what it wrote.
        """
        active = {s for s in RunStatus if s.active}
        try:
            return self.transition_run(run_id, active, status, event=("ended", event), **changes)
        except NotFoundError:
            return False

    def list_runs(
        self, *, active: bool | None = None, since: float | None = None, limit: int | None = None
    ) -> list[Run]:
        sql = "SELECT * FROM runs"
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("updated_at >= ?")
            args.append(since)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        runs = [_row_run(r) for r in self._query(sql, args)]
        if active is not None:
            runs = [r for r in runs if r.status.active == active]
        return runs

    # -- instances (the cached listing) -------------------------------------------------

    def put_instances(
        self, provider: str, instances: Iterable[Instance], *, complete: bool = True
    ) -> None:
        """Record a provider's listing; with `complete`, ones it no longer reports are gone."""
        now = time.time()
        items = list(instances)
        with self._tx() as db:
            for inst in items:
                gone = now if inst.state == InstanceState.TERMINATED else None
                db.execute(
                    "INSERT INTO instances (provider, id, data, run_id, state, seen_at, gone_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(provider, id) DO UPDATE SET "
                    "data = excluded.data, run_id = excluded.run_id, state = excluded.state, "
                    "seen_at = excluded.seen_at, gone_at = CASE WHEN excluded.gone_at IS NULL "
                    "THEN NULL ELSE COALESCE(instances.gone_at, excluded.gone_at) END",
                    [provider, inst.id, inst.to_json(), inst.run_id, inst.state.value, now, gone],
                )
            if complete:
                seen = [inst.id for inst in items]
                marks = ",".join("?" for _ in seen) or "''"
                db.execute(
                    f"UPDATE instances SET gone_at = ?, state = 'terminated' WHERE provider = ? "
                    f"AND gone_at IS NULL AND id NOT IN ({marks})",
                    [now, provider, *seen],
                )

    def put_instance(self, inst: Instance) -> None:
        self.put_instances(inst.provider, [inst], complete=False)

    def mark_instance_gone(
        self, provider: str, instance_id: str, when: float | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE instances SET gone_at = COALESCE(gone_at, ?), state = 'terminated' "
                "WHERE provider = ? AND id = ?",
                [when or time.time(), provider, instance_id],
            )

    def instances(
        self, provider: str | None = None, *, include_gone: bool = False
    ) -> list[Instance]:
        sql = "SELECT data, state, gone_at FROM instances"
        where, args = [], []
        if provider:
            where.append("provider = ?")
            args.append(provider)
        if not include_gone:
            where.append("gone_at IS NULL")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY provider, id"
        out = []
        for row in self._query(sql, args):
            inst = Instance.from_dict(json.loads(row["data"]))
            if row["gone_at"] is not None and inst.state != InstanceState.TERMINATED:
                inst = inst.evolve(state=InstanceState.TERMINATED)
            out.append(inst)
        return out

    def get_instance(self, provider: str, instance_id: str) -> Instance | None:
        rows = self._query(
            "SELECT data, gone_at FROM instances WHERE provider = ? AND id = ?",
            [provider, instance_id],
        )
        if not rows:
            return None
        inst = Instance.from_dict(json.loads(rows[0]["data"]))
        if rows[0]["gone_at"] is not None:
            inst = inst.evolve(state=InstanceState.TERMINATED)
        return inst

    def seen_times(self, provider: str) -> dict[str, float]:
        """When each cached instance of a provider was last listed (the ledger closes a
        vanished one there)."""
        rows = self._query("SELECT id, seen_at FROM instances WHERE provider = ?", [provider])
        return {r["id"]: r["seen_at"] for r in rows}

    def listing_age(self, provider: str) -> float | None:
        rows = self._query("SELECT checked_at FROM provider_status WHERE provider = ?", [provider])
        return time.time() - rows[0]["checked_at"] if rows else None

    # -- price segments (the ledger) ---------------------------------------------------

    def open_segment(self, seg: PriceSegment) -> PriceSegment:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO price_segments (provider, instance_id, run_id, instance_type, region, "
                "market, rate_per_hour, start, end, kind, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    seg.provider,
                    seg.instance_id,
                    seg.run_id,
                    seg.instance_type,
                    seg.region,
                    seg.market,
                    seg.rate_per_hour,
                    seg.start,
                    seg.end,
                    seg.kind,
                    seg.source,
                ],
            )
            return seg.evolve(id=cur.lastrowid)

    def close_segments(
        self, provider: str, instance_id: str, end: float, *, kind: str | None = None
    ) -> int:
        """End every open segment of an instance (at `end`, never before its start)."""
        sql = (
            "UPDATE price_segments SET end = MAX(start, ?) WHERE provider = ? AND instance_id = ? "
            "AND end IS NULL"
        )
        args: list[Any] = [end, provider, instance_id]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        with self._tx() as db:
            return db.execute(sql, args).rowcount

    def split_segment(
        self, segment_id: int, at: float, rate_per_hour: float, *, source: str = "spot"
    ) -> PriceSegment | None:
        """Re-price a segment from `at` on: end it there and continue at the new rate.

        One transaction, so a crash leaves either the old segment or both halves, never an
        instance with no open segment (unbilled) or two (billed twice).
        """
        with self._tx() as db:
            row = db.execute("SELECT * FROM price_segments WHERE id = ?", [segment_id]).fetchone()
            if row is None:
                return None
            old = PriceSegment.from_dict(dict(row))
            if at <= old.start or (old.end is not None and at >= old.end):
                return None
            db.execute("UPDATE price_segments SET end = ? WHERE id = ?", [at, segment_id])
            new = old.evolve(id=None, start=at, rate_per_hour=rate_per_hour, source=source)
            cur = db.execute(
                "INSERT INTO price_segments (provider, instance_id, run_id, instance_type, region, "
                "market, rate_per_hour, start, end, kind, source) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    new.provider,
                    new.instance_id,
                    new.run_id,
                    new.instance_type,
                    new.region,
                    new.market,
                    new.rate_per_hour,
                    new.start,
                    new.end,
                    new.kind,
                    new.source,
                ],
            )
            return new.evolve(id=cur.lastrowid)

    def segments(
        self,
        *,
        run_id: str | None = None,
        provider: str | None = None,
        instance_id: str | None = None,
        since: float | None = None,
        open_only: bool = False,
    ) -> list[PriceSegment]:
        where, args = [], []
        for column, value in (
            ("run_id", run_id),
            ("provider", provider),
            ("instance_id", instance_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("(end IS NULL OR end >= ?)")
            args.append(since)
        if open_only:
            where.append("end IS NULL")
        sql = "SELECT * FROM price_segments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start, id"
        return [PriceSegment.from_dict(dict(r)) for r in self._query(sql, args)]

    # -- events --------------------------------------------------------------------------

    def add_event(self, run_id: str | None, kind: str, data: Mapping[str, Any]) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (run_id, time, kind, data) VALUES (?, ?, ?, ?)",
                [run_id, time.time(), kind, json.dumps(dict(data), default=str)],
            )
            event_id = int(cur.lastrowid or 0)
        self._tell(run_id, kind, data)
        return event_id

    def _tell(self, run_id: str | None, kind: str, data: Mapping[str, Any]) -> None:
        """Every listener hears the event; none can break the write that recorded it."""
        for listener in list(self.listeners):
            try:
                listener(run_id, kind, data)
            except Exception:
                logging.getLogger("gpuctl.state").exception("event listener failed on %s", kind)

    # -- notifications (each sent once) -------------------------------------------------

    def claim_notification(
        self, key: str, run_id: str | None, event: str, title: str, message: str, sent_by: str
    ) -> bool:
        """True only for the first claimant of `key`, in any process, ever."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO notifications "
                "(key, run_id, event, title, message, sent_by, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [key, run_id, event, title, message, sent_by, time.time()],
            )
            return cur.rowcount == 1

    def notification_outcome(self, key: str, outcome: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE notifications SET outcome = ? WHERE key = ?", [outcome, key])

    def notifications(self, *, after: float = 0.0, limit: int = 200) -> list[dict[str, Any]]:
        """The newest notifications first (what the control center lists)."""
        rows = self._query(
            "SELECT * FROM notifications WHERE at > ? ORDER BY at DESC LIMIT ?",
            [after, int(limit)],
        )
        return [dict(r) for r in rows]

    def events(
        self, run_id: str | None = None, *, after_id: int = 0, kinds: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        sql = "SELECT id, run_id, time, kind, data FROM events WHERE id > ?"
        args: list[Any] = [after_id]
        if run_id is not None:
            sql += " AND run_id = ?"
            args.append(run_id)
        kinds = list(kinds or [])
        if kinds:
            sql += f" AND kind IN ({','.join('?' for _ in kinds)})"
            args.extend(kinds)
        sql += " ORDER BY id"
        return [
            {
                "id": r["id"],
                "run_id": r["run_id"],
                "time": r["time"],
                "kind": r["kind"],
                **json.loads(r["data"]),
            }
            for r in self._query(sql, args)
        ]

    # -- budget alerts (each fires once) -------------------------------------------------

    def fire_alert(
        self, scope: str, key: str, level: str, spent: float, budget: float, at: float
    ) -> bool:
        """Record a budget threshold crossing; True only for the first caller, ever."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO budget_alerts (scope, key, level, fired_at, spent, budget) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [scope, key, level, at, spent, budget],
            )
            return cur.rowcount == 1

    def alerts(self, scope: str | None = None, key: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM budget_alerts"
        where, args = [], []
        for column, value in (("scope", scope), ("key", key)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [dict(r) for r in self._query(sql + " ORDER BY fired_at", args)]

    # -- provider health and small caches ---------------------------------------------

    def set_provider_status(self, provider: str, ok: bool, message: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO provider_status (provider, ok, message, checked_at) VALUES (?,?,?,?) "
                "ON CONFLICT(provider) DO UPDATE SET ok = excluded.ok, message = excluded.message, "
                "checked_at = excluded.checked_at",
                [provider, int(ok), message, time.time()],
            )

    def provider_statuses(self) -> dict[str, tuple[bool, str, float]]:
        return {
            r["provider"]: (bool(r["ok"]), r["message"], r["checked_at"])
            for r in self._query("SELECT * FROM provider_status")
        }

    def cache_get(self, key: str, max_age: float | None = None) -> Any:
        rows = self._query("SELECT value, stored_at FROM cache WHERE key = ?", [key])
        if not rows:
            return None
        if max_age is not None and time.time() - rows[0]["stored_at"] > max_age:
            return None
        return json.loads(rows[0]["value"])

    def cache_put(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO cache (key, value, stored_at) VALUES (?, ?, ?) ON CONFLICT(key) "
                "DO UPDATE SET value = excluded.value, stored_at = excluded.stored_at",
                [key, json.dumps(value, default=str), time.time()],
            )


def _unwritable(directory: Path) -> OSError | None:
    """Why nothing can be created in `directory` (read-only, full, not a directory), if so.

    Asked by trying: as root, permission bits say nothing, and only a real write tells
    a full disk apart.
    """
    probe = directory / f".gpuctl-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc
    try:
        os.write(fd, b"x" * 4096)
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def _place_error(path: Path, exc: OSError) -> StateError:
    """The directory that should hold state.db cannot: say which and why, keep the data."""
    where = path.parent
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StateError(
            f"{where} is not writable ({exc.strerror}): gpuctl keeps its state there",
            hint=f"make {where} writable, or set GPUCTL_HOME to a writable directory "
            "(the state already there is kept)",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StateError(
            f"no space left on the disk of {where}",
            hint="free some space there; gpuctl's state is kept",
        )
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in (where, *where.parents) if p.is_file()), where)
        return StateError(
            f"{blocker} is a file, not a directory: gpuctl keeps its state in {where}",
            hint="move that file aside, or set GPUCTL_HOME to a directory",
        )
    return StateError(
        f"cannot use {where} for gpuctl's state: {exc.strerror or exc}",
        hint="set GPUCTL_HOME to a writable directory",
    )


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> StateError:
    return StateError(
        f"{path} is not a usable gpuctl state database ({exc})",
        hint="move it aside (gpuctl will start a new one) or set GPUCTL_HOME",
    )


def _write_error(path: Path, exc: sqlite3.OperationalError) -> StateError:
    place = _unwritable(path.parent)
    if place is not None:
        return _place_error(path, place)
    text = str(exc)
    if "locked" in text or "busy" in text:
        return StateError(
            f"{path} stayed locked by another gpuctl process ({text})",
            hint="try again; if it persists, look for a hung gpuctl (`ps`)",
        )
    if "readonly" in text or "read-only" in text:
        return StateError(
            f"{path} is read-only ({text})",
            hint=f"make {path} (and its -wal and -shm files) writable; its history is kept",
        )
    return StateError(
        f"cannot use {path}: {text}", hint="check the disk and the file; gpuctl's state is kept"
    )


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _no_run(run_id: str) -> NotFoundError:
    return NotFoundError(
        f"no run '{run_id}'", hint="`gpuctl ls --runs` lists the runs gpuctl knows"
    )


def _run_row(run: Run) -> dict[str, Any]:
    row = run.to_dict()
    row["spec"] = json.dumps(row["spec"], sort_keys=True, default=str)
    row["status"] = run.status.value
    return row


def _row_run(row: sqlite3.Row) -> Run:
    data = dict(row)
    data["spec"] = json.loads(data["spec"] or "{}")
    return Run.from_dict(data)
