"""The platform's store: packages, tasks, per-device sub-tasks and devices, in SQLite
(`DIR/platform.db`, WAL mode, the default) or PostgreSQL (`--db`, shared by several
platform instances). Every SQL statement of the platform is in the store modules, as
named methods; the store only reads and writes rows, the rules live in `tasks.py`,
`reports.py` and `downloads.py`.

- store_sql.py: the connection and the dialects (placeholders, row locks, types, errors).
- store_migrations.py: the schema, numbered migrations applied on open.
- store_subtasks.py: the sub-task queries (notices, reports, downloads).
- store_rollouts.py: waves, holds, tags (issue #16).

How instances sharing one PostgreSQL database coordinate (all no-ops on SQLite, where one
process holds the data folder's lock):
- the task clock (`clock_turn`): a session-level advisory lock taken without waiting at
  each tick; one instance ticks at a time, the others skip that round, and a killed
  instance's lock goes with its connection;
- notices: due sub-tasks are read `FOR UPDATE SKIP LOCKED`, and one is only notified by
  an UPDATE that still finds it pending and due (`mark_notified` returns False
  otherwise), so no notice goes out twice; each is recorded in `notices`, from which the
  push rate is counted fleet-wide;
- reports: a sub-task is read `FOR UPDATE` before its state changes (its row stays
  locked until the change is committed), so concurrent reports are applied one after
  the other, none lost or applied twice; a task's row is locked before it is finished;
- downloads: tokens and sub-task states are read from the database, so any instance
  serves any download, and each instance checks its downloads in flight against the
  database (`download_states`) to cut off one that another instance cancelled.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .store_migrations import SCHEMA, migrate
from .store_sql import (
    CLOCK_KEY,
    DISK_FULL_ERRNOS,
    Db,
    StorageError,
    is_postgres,
    shown_url,
    storage_errors,
)
from .store_subtasks import ACTIVE_STATES, SubtaskQueries
from .validate import PlatformError

__all__ = ["ACTIVE_STATES", "DISK_FULL_ERRNOS", "SCHEMA", "Row", "StorageError", "Store",
           "is_postgres", "storage_errors"]

Row = dict[str, Any]


class Store(SubtaskQueries):
    """A thread-safe wrapper over one connection (`target`: the SQLite file's path, or a
    PostgreSQL URL). Opening it applies the schema's migrations.

    Writes are grouped: `commit()` is called by the rules after a state change that must
    not be lost, and periodically for progress updates (each tick). Callers hold
    `lock` around a group of calls.
    """

    def __init__(self, target: Path | str) -> None:
        self.db = Db(target)
        self.dialect = self.db.dialect
        self.shared = self.db.pg  # several instances may share it
        self.path = None if self.shared else Path(target)
        try:
            migrate(self.db)
        except PlatformError:
            self.db.close()
            raise
        except Exception as exc:  # no right to create tables, a read-only file...
            self.db.close()
            where = shown_url(str(target)) if self.shared else str(target)
            why = (str(exc).strip().splitlines() or [repr(exc)])[0]
            raise PlatformError(f"cannot prepare the platform store's tables in {where} "
                                f"({why}): the store must be writable "
                                "(with --db: a user that may create tables in that database)",
                                503) from None
        except BaseException:
            self.db.close()
            raise
        self.lock = threading.RLock()
        self._after: list[Callable[[], None]] = []

    # -- transactions -------------------------------------------------------------------
    # The transaction state is the database's own (`in_transaction`): a full disk can make
    # SQLite roll a transaction back by itself, a lost connection loses it.
    def begin(self) -> None:
        with self.lock:  # (a caller should hold it already: a statement is never split)
            if not self.db.in_transaction:
                self.db.execute("BEGIN")

    def commit(self) -> None:
        if self.db.failed_transaction:  # COMMIT would roll it back without a word
            self.rollback()
            raise StorageError("a statement of the transaction failed: nothing of it was "
                               "stored", 503)
        if self.db.in_transaction:
            self.db.execute("COMMIT")
        after, self._after = self._after, []
        for fn in after:
            fn()

    def rollback(self) -> None:
        self._after.clear()
        if self.db.in_transaction:
            with contextlib.suppress(StorageError):  # a lost connection lost it already
                self.db.execute("ROLLBACK")

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run `fn` once the changes made so far are committed (dropped on a rollback):
        what the log tells happened only once it is stored."""
        self._after.append(fn)

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """One message's changes, inside the open transaction: undone alone if it fails,
        so it can't take anyone else's uncommitted changes (batched progress) with it."""
        self.begin()
        self.db.execute("SAVEPOINT one")
        mark = len(self._after)
        try:
            yield
        except BaseException:
            del self._after[mark:]
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK TO one")
                    self.db.execute("RELEASE one")
                except (StorageError, sqlite3.OperationalError):
                    self.rollback()
            raise
        else:
            self.db.execute("RELEASE one")

    @contextlib.contextmanager
    def clock_turn(self) -> Iterator[bool]:
        """Whether this instance runs the periodic work now (True on SQLite). PostgreSQL:
        `pg_try_advisory_lock(CLOCK_KEY)`, a session-level lock (it outlives the commits
        made while ticking), released on the way out; an instance that dies loses it with
        its connection."""
        got = self.db.try_lock(CLOCK_KEY)
        try:
            yield got
        finally:
            if got and self.shared:
                if self.db.failed_transaction:
                    self.rollback()
                with contextlib.suppress(StorageError):  # connection gone: so is the lock
                    self.db.unlock(CLOCK_KEY)

    def close(self) -> None:
        with self.lock:
            try:
                self.commit()
            finally:
                self.db.close()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None:
        with self.lock:
            row = self.db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def _write(self, sql: str, args: Sequence[Any] = ()) -> Any:
        with self.lock:
            self.begin()
            return self.db.execute(sql, args)

    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.lock:
            self.begin()
            self.db.executemany(sql, rows)

    def _locked(self, sql: str, args: Sequence[Any] = (), table: str = "") -> Row | None:
        """`_one` with the row locked until the transaction ends (PostgreSQL)."""
        if self.shared:
            self.begin()
        return self._one(sql + self.db.for_update(table), args)

    def _insert(self, table: str, row: Row) -> None:
        cols = ", ".join(f'"{c}"' for c in row)
        marks = ", ".join("?" for _ in row)
        self._write(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(row.values()))

    # -- packages -----------------------------------------------------------------------
    def insert_package(self, row: Row) -> None:
        self._insert("packages", row)

    def package(self, package_id: str) -> Row | None:
        return self._one("SELECT * FROM packages WHERE id = ?", (package_id,))

    def packages(self) -> list[Row]:
        return self._all("SELECT * FROM packages ORDER BY created, id")

    # -- tasks --------------------------------------------------------------------------
    def insert_task(self, name: str, package_id: str, desc: str,
                    start_at: float | None, end_at: float | None) -> int:
        rows = self._write(
            'INSERT INTO tasks (name, package_id, "desc", start_at, end_at, state, created)'
            " VALUES (?, ?, ?, ?, ?, 'not_started', ?) RETURNING id",
            (name, package_id, desc, start_at, end_at, time.time())).fetchall()
        return int(rows[0]["id"])

    def task(self, task_id: int) -> Row | None:
        return self._one("SELECT * FROM tasks WHERE id = ?", (task_id,))

    def lock_task(self, task_id: int) -> Row | None:
        """The task, its row locked until the transaction ends (PostgreSQL): whoever
        decides it is finished sees every other instance's committed sub-task changes."""
        return self._locked("SELECT * FROM tasks WHERE id = ?", (task_id,))

    def tasks(self) -> list[Row]:
        return self._all("SELECT * FROM tasks ORDER BY id")

    def state_counts(self, task_id: int) -> dict[str, int]:
        """How many of the task's sub-tasks are in each state."""
        rows = self._all("SELECT state, COUNT(*) AS n FROM subtasks WHERE task_id = ?"
                         " GROUP BY state", (task_id,))
        return {r["state"]: int(r["n"]) for r in rows}

    def set_task_running(self, task_id: int, now: float) -> bool:
        """The task runs; its pending sub-tasks are due for a notice now. False when it
        was started already (by another instance)."""
        cur = self._write("UPDATE tasks SET state='running', started=? WHERE id=? AND"
                          " state='not_started'", (now, task_id))
        if cur.rowcount == 0:
            return False
        self._write("UPDATE subtasks SET push_due=?, updated=? WHERE task_id=? AND"
                    " state='pending'", (now, now, task_id))
        return True

    def set_task_finished(self, task_id: int, now: float) -> None:
        self._write("UPDATE tasks SET state='finished', finished=? WHERE id=?", (now, task_id))

    def tasks_to_start(self, now: float) -> list[Row]:
        """Tasks not started whose start time has come."""
        return self._all("SELECT * FROM tasks WHERE state='not_started' AND"
                         " start_at IS NOT NULL AND start_at <= ?", (now,))

    def tasks_past_end(self, now: float) -> list[Row]:
        """Running tasks whose end time has passed."""
        return self._all("SELECT * FROM tasks WHERE state='running' AND"
                         " end_at IS NOT NULL AND end_at <= ?", (now,))

    # -- variants: a package's compressed and delta files ---------------------------------
    def insert_variant(self, row: Row) -> None:
        self._insert("variants", row)

    def variants(self, package_id: str) -> list[Row]:
        return self._all("SELECT * FROM variants WHERE package_id=? ORDER BY created, id",
                         (package_id,))

    def variant(self, package_id: str, kind: str, base_version: str = "") -> Row | None:
        """The package's compressed file, or its delta from `base_version`."""
        return self._one("SELECT * FROM variants WHERE package_id=? AND kind=? AND"
                         " base_version=?", (package_id, kind, base_version))

    # -- devices ------------------------------------------------------------------------
    def device_version(self, device: str) -> str | None:
        """The version the device last informed."""
        row = self._one("SELECT version FROM devices WHERE id=?", (device,))
        return row["version"] if row else None

    def touch_device(self, device: str, version: str | None = None,
                     module: str | None = None) -> None:
        now = time.time()
        self._write(
            "INSERT INTO devices (id, version, module, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen,"
            " version = COALESCE(excluded.version, devices.version),"
            " module = COALESCE(excluded.module, devices.module)",
            (device, version, module, now, now),
        )

    def device_seen(self, device: str) -> bool:
        return self._one("SELECT 1 AS x FROM devices WHERE id = ?", (device,)) is not None

    def devices(self) -> list[Row]:
        return self._all("SELECT * FROM devices ORDER BY id")
