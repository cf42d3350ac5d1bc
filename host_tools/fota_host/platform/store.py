"""SQLite store of the platform: packages, tasks, per-device sub-tasks and devices.

One file (`DIR/platform.db`) in WAL mode, so every state survives a restart. The store
only reads and writes rows; the rules live in `engine.py`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS packages (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    product TEXT NOT NULL,
    version TEXT NOT NULL,
    module TEXT NOT NULL,
    sign TEXT NOT NULL,
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    desc TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    package_id TEXT NOT NULL REFERENCES packages(id),
    desc TEXT NOT NULL,
    start_at REAL,
    end_at REAL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS subtasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL REFERENCES tasks(id),
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    desc TEXT NOT NULL DEFAULT '',
    token TEXT,
    token_expires REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    pushes INTEGER NOT NULL DEFAULT 0,
    reports INTEGER NOT NULL DEFAULT 0,
    push_due REAL,
    notified REAL,
    last_report REAL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (task_id, device)
);
CREATE INDEX IF NOT EXISTS subtasks_device ON subtasks(device, state);
CREATE INDEX IF NOT EXISTS subtasks_due ON subtasks(push_due);
CREATE INDEX IF NOT EXISTS subtasks_state ON subtasks(state);
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    version TEXT,
    module TEXT,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""

ACTIVE_STATES = ("pending", "upgrading")
SUBTASK_STATES = ("pending", "upgrading", "succeeded", "failed", "cancelled", "timed_out")
TASK_STATES = ("not_started", "running", "finished")


class Store:
    """A thread-safe wrapper over one SQLite connection.

    Writes are grouped: `commit()` is called by the engine after a state change that must
    not be lost, and periodically for progress updates (see `Engine.flush`).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self.lock = threading.RLock()
        self._in_tx = False

    # -- transactions -------------------------------------------------------------------
    def begin(self) -> None:
        if not self._in_tx:
            self.db.execute("BEGIN")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self.db.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self.db.execute("ROLLBACK")
            self._in_tx = False

    def close(self) -> None:
        with self.lock:
            self.commit()
            self.db.close()

    # -- helpers ------------------------------------------------------------------------
    def one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def all(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        self.begin()
        return self.db.execute(sql, args)

    # -- packages -----------------------------------------------------------------------
    def insert_package(self, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self.write(f"INSERT INTO packages ({cols}) VALUES ({marks})", tuple(row.values()))

    def package(self, package_id: str) -> dict[str, Any] | None:
        return self.one("SELECT * FROM packages WHERE id = ?", (package_id,))

    def packages(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM packages ORDER BY created")

    # -- tasks --------------------------------------------------------------------------
    def insert_task(self, name: str, package_id: str, desc: str,
                    start_at: float | None, end_at: float | None) -> int:
        cur = self.write(
            "INSERT INTO tasks (name, package_id, desc, start_at, end_at, state, created)"
            " VALUES (?, ?, ?, ?, ?, 'not_started', ?)",
            (name, package_id, desc, start_at, end_at, time.time()),
        )
        return int(cur.lastrowid)

    def task(self, task_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM tasks WHERE id = ?", (task_id,))

    def tasks(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM tasks ORDER BY id")

    # -- sub-tasks ----------------------------------------------------------------------
    def subtask(self, subtask_id: int) -> dict[str, Any] | None:
        return self.one("SELECT * FROM subtasks WHERE id = ?", (subtask_id,))

    def subtasks(self, task_id: int) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM subtasks WHERE task_id = ? ORDER BY id", (task_id,))

    def update_subtask(self, subtask_id: int, **fields: Any) -> None:
        fields.setdefault("updated", time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.write(f"UPDATE subtasks SET {sets} WHERE id = ?", (*fields.values(), subtask_id))

    # -- devices ------------------------------------------------------------------------
    def touch_device(self, device: str, version: str | None = None,
                     module: str | None = None) -> None:
        now = time.time()
        self.write(
            "INSERT INTO devices (id, version, module, first_seen, last_seen)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET last_seen = excluded.last_seen,"
            " version = COALESCE(excluded.version, devices.version),"
            " module = COALESCE(excluded.module, devices.module)",
            (device, version, module, now, now),
        )

    def devices(self) -> list[dict[str, Any]]:
        return self.all("SELECT * FROM devices ORDER BY id")
