"""SQLite store of the platform: packages, tasks, per-device sub-tasks and devices.

One file (`DIR/platform.db`) in WAL mode, so every state survives a restart. Every SQL
statement of the platform is here, as a named method; the store only reads and writes
rows, the rules live in `tasks.py`, `reports.py` and `downloads.py`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .store_rollouts import add_schema as add_rollout_schema
from .validate import PlatformError

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

# Compressed and delta files of packages (`id`: their file id, DIR/packages/<id>.bin).
VARIANTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    id TEXT PRIMARY KEY,
    package_id TEXT NOT NULL REFERENCES packages(id),
    kind TEXT NOT NULL,
    base_package TEXT,
    base_version TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    md5 TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    UNIQUE (package_id, kind, base_version)
);
"""
# Columns added to existing tables (stores made before them get them on open).
VARIANT_COLUMNS = (
    ("packages", "signed", "INTEGER NOT NULL DEFAULT 0"),
    ("packages", "key_digests", "TEXT NOT NULL DEFAULT ''"),
    ("packages", "secure_version", "INTEGER"),
    ("subtasks", "kind", "TEXT"),            # full | compressed | delta, set by the notice
    ("subtasks", "file_id", "TEXT"),         # the file served (NULL: the package's own)
    ("subtasks", "full_only", "INTEGER NOT NULL DEFAULT 0"),  # a variant was refused
)

ACTIVE_STATES = ("pending", "upgrading")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class StorageError(PlatformError):
    """The store could not be written (disk full, I/O error): nothing of the change was
    stored, and nothing may be acknowledged as if it were. HTTP 507."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 507)


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """SQLite's "disk full" and I/O errors (and ENOSPC/EFBIG) as `StorageError`."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_FULL or "full" in str(exc):
            raise StorageError(f"disk full: cannot write the platform store ({exc})") from exc
        if code is not None and code & 0xFF == sqlite3.SQLITE_IOERR:
            raise StorageError(f"cannot write the platform store: {exc}") from exc
        raise
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise StorageError(f"disk full: {exc}") from exc
        raise

_ACTIVE = "('pending','upgrading')"
Row = dict[str, Any]


class Store:
    """A thread-safe wrapper over one SQLite connection.

    Writes are grouped: `commit()` is called by the rules after a state change that must
    not be lost, and periodically for progress updates (each tick). Callers hold
    `lock` around a group of calls.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # owner-only; SQLite gives -wal and -shm the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)
        self._add_variants()
        add_rollout_schema(self.db)  # waves, holds, tags (store_rollouts.py)
        self.lock = threading.RLock()
        self._after: list[Callable[[], None]] = []

    # -- transactions -------------------------------------------------------------------
    # The transaction state is SQLite's own (`in_transaction`): a full disk can make SQLite
    # roll a transaction back by itself.
    def begin(self) -> None:
        if not self.db.in_transaction:
            with storage_errors():
                self.db.execute("BEGIN")

    def commit(self) -> None:
        if self.db.in_transaction:
            with storage_errors():
                self.db.execute("COMMIT")
        after, self._after = self._after, []
        for fn in after:
            fn()

    def rollback(self) -> None:
        self._after.clear()
        if self.db.in_transaction:
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
                except sqlite3.OperationalError:
                    self.rollback()
            raise
        else:
            with storage_errors():
                self.db.execute("RELEASE one")

    def close(self) -> None:
        with self.lock:
            try:
                self.commit()
            finally:
                self.db.close()

    def _one(self, sql: str, args: tuple = ()) -> Row | None:
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row is not None else None

    def _all(self, sql: str, args: tuple = ()) -> list[Row]:
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def _write(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        self.begin()
        with storage_errors():
            return self.db.execute(sql, args)

    # -- packages -----------------------------------------------------------------------
    def insert_package(self, row: Row) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._write(f"INSERT INTO packages ({cols}) VALUES ({marks})", tuple(row.values()))

    def package(self, package_id: str) -> Row | None:
        return self._one("SELECT * FROM packages WHERE id = ?", (package_id,))

    def packages(self) -> list[Row]:
        return self._all("SELECT * FROM packages ORDER BY created")

    # -- tasks --------------------------------------------------------------------------
    def insert_task(self, name: str, package_id: str, desc: str,
                    start_at: float | None, end_at: float | None) -> int:
        cur = self._write(
            "INSERT INTO tasks (name, package_id, desc, start_at, end_at, state, created)"
            " VALUES (?, ?, ?, ?, ?, 'not_started', ?)",
            (name, package_id, desc, start_at, end_at, time.time()),
        )
        return int(cur.lastrowid or 0)

    def task(self, task_id: int) -> Row | None:
        return self._one("SELECT * FROM tasks WHERE id = ?", (task_id,))

    def tasks(self) -> list[Row]:
        return self._all("SELECT * FROM tasks ORDER BY id")

    def state_counts(self, task_id: int) -> dict[str, int]:
        """How many of the task's sub-tasks are in each state."""
        rows = self._all("SELECT state, COUNT(*) AS n FROM subtasks WHERE task_id = ?"
                         " GROUP BY state", (task_id,))
        return {r["state"]: r["n"] for r in rows}

    def active_count(self, task_id: int) -> int:
        return self._one(f"SELECT COUNT(*) AS n FROM subtasks WHERE task_id=? AND state IN"
                         f" {_ACTIVE}", (task_id,))["n"]  # type: ignore[index]

    def set_task_running(self, task_id: int, now: float) -> None:
        """The task runs; its pending sub-tasks are due for a notice now."""
        self._write("UPDATE tasks SET state='running', started=? WHERE id=?", (now, task_id))
        self._write("UPDATE subtasks SET push_due=?, updated=? WHERE task_id=? AND"
                    " state='pending'", (now, now, task_id))

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

    # -- sub-tasks ----------------------------------------------------------------------
    def subtasks(self, task_id: int) -> list[Row]:
        return self._all("SELECT * FROM subtasks WHERE task_id = ? ORDER BY id", (task_id,))

    def in_task(self, task_id: int, device: str) -> bool:
        return self._one("SELECT id FROM subtasks WHERE task_id=? AND device=?",
                         (task_id, device)) is not None

    def busy_in(self, device: str) -> int | None:
        """The unfinished task in which `device` has an active sub-task, if any."""
        row = self._one("SELECT s.task_id FROM subtasks s JOIN tasks t ON t.id = s.task_id"
                        f" WHERE s.device = ? AND s.state IN {_ACTIVE}"
                        " AND t.state != 'finished'", (device,))
        return row["task_id"] if row else None

    def insert_subtask(self, task_id: int, device: str, push_due: float | None,
                       now: float) -> int:
        cur = self._write(
            "INSERT INTO subtasks (task_id, device, state, desc, push_due, created, updated)"
            " VALUES (?, ?, 'pending', 'waiting', ?, ?, ?)", (task_id, device, push_due, now, now))
        return int(cur.lastrowid or 0)

    def update_subtask(self, subtask_id: int, **fields: Any) -> None:
        fields.setdefault("updated", time.time())
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._write(f"UPDATE subtasks SET {sets} WHERE id = ?", (*fields.values(), subtask_id))

    def subtask_with_target(self, subtask_id: int) -> Row | None:
        """A sub-task with its package's version as `target`."""
        return self._one(
            "SELECT s.*, p.version AS target FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.id = ?", (subtask_id,))

    def running_subtask_of(self, device: str) -> Row | None:
        """The device's first active sub-task in a running task, with `target`."""
        return self._one(
            "SELECT s.*, p.version AS target FROM subtasks s"
            " JOIN tasks t ON t.id = s.task_id JOIN packages p ON p.id = t.package_id"
            f" WHERE s.device = ? AND s.state IN {_ACTIVE} AND"
            " t.state = 'running' ORDER BY s.id LIMIT 1", (device,))

    def time_out_active(self, task_id: int, now: float) -> None:
        """Every active sub-task of the task times out (its end time was reached)."""
        self._write(
            "UPDATE subtasks SET state='timed_out', desc='task end time reached',"
            f" push_due=NULL, token_expires=0, updated=? WHERE task_id=? AND state IN {_ACTIVE}",
            (now, task_id))

    def silent_upgrading(self, since: float) -> list[Row]:
        """Upgrading sub-tasks with no report since `since`."""
        return self._all("SELECT * FROM subtasks WHERE state='upgrading' AND last_report < ?",
                         (since,))

    def due_notices(self, now: float, limit: int) -> list[Row]:
        """Pending sub-tasks of running tasks whose notice is due, oldest first, with their
        package (`file_id`, size, version, md5, sha256, sign, module)."""
        return self._all(
            "SELECT s.id, s.device, s.task_id, s.token, s.token_expires, s.full_only,"
            " p.id AS file_id,"
            " p.size, p.version, p.md5, p.sha256, p.sign, p.module"
            " FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.push_due IS NOT NULL AND"
            " s.push_due <= ? AND s.state = 'pending' AND t.state = 'running'"
            " AND s.hold = 0 AND t.hold = 0"
            " ORDER BY s.push_due, s.id LIMIT ?", (now, limit))

    def mark_notified(self, subtask_id: int, token: str, token_expires: float,
                      now: float, desc: str = "notice sent") -> None:
        """A notice goes out: its token, the time, one push more (a retry keeps its desc)."""
        self._write(
            "UPDATE subtasks SET token=?, token_expires=?, push_due=NULL, notified=?,"
            " pushes=pushes+1, updated=?,"
            " desc=CASE WHEN desc LIKE 'retry%' THEN desc ELSE ? END"
            " WHERE id=?", (token, token_expires, now, now, desc, subtask_id))

    def mark_notice_sent(self, subtask_id: int, published: str, sent: str) -> None:
        """The broker acknowledged the notice: `published` becomes `sent`."""
        self._write("UPDATE subtasks SET desc=?, updated=? WHERE id=? AND desc=?",
                    (sent, time.time(), subtask_id, published))

    def mark_unsent(self, due: list[Row], desc: str) -> None:
        """Notices due that can't go out (no broker connection) say so."""
        ids = [r["id"] for r in due]
        if ids:
            marks = ",".join("?" * len(ids))
            self._write(f"UPDATE subtasks SET desc=? WHERE id IN ({marks}) AND desc != ?"
                        " AND desc NOT LIKE 'retry%'", (desc, *ids, desc))

    def download_grant(self, task_id: int, device: str) -> Row | None:
        """What a download request is checked against: the device's sub-task of the task
        (token, token_expires, state) and the task's package_id."""
        return self._one(
            "SELECT s.token, s.token_expires, s.state,"
            " COALESCE(s.file_id, t.package_id) AS package_id FROM subtasks s"
            " JOIN tasks t ON t.id = s.task_id WHERE s.task_id=? AND s.device=?",
            (task_id, device))

    def apply_progress(self, batch: dict[int, list[Any]], now: float) -> None:
        """Write batched progress: {subtask id: [step, desc, last_report, reports, device]};
        only sub-tasks still upgrading change."""
        self.begin()
        with storage_errors():
            self.db.executemany(
                "UPDATE subtasks SET step=?, desc=?, last_report=?, updated=?,"
                " reports=reports+? WHERE id=? AND state='upgrading'",
                [(v[0], v[1], v[2], now, v[3], sid) for sid, v in batch.items()])
            self.db.executemany("UPDATE devices SET last_seen=? WHERE id=?",
                                [(v[2], v[4]) for v in batch.values()])

    def total_reports(self) -> int:
        return self._one("SELECT COALESCE(SUM(reports),0) AS n FROM subtasks")["n"]  # type: ignore[index]

    # -- variants: a package's compressed and delta files; what a sub-task was served ---
    def _add_variants(self) -> None:
        """The variants table, and the columns the signing and delta features added to
        packages (signature facts) and subtasks (the file served, its kind, full only)."""
        self.db.executescript(VARIANTS_SCHEMA)
        for table, column, decl in VARIANT_COLUMNS:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    def insert_variant(self, row: Row) -> None:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._write(f"INSERT INTO variants ({cols}) VALUES ({marks})", tuple(row.values()))

    def variants(self, package_id: str) -> list[Row]:
        return self._all("SELECT * FROM variants WHERE package_id=? ORDER BY created",
                         (package_id,))

    def variant(self, package_id: str, kind: str, base_version: str = "") -> Row | None:
        """The package's compressed file, or its delta from `base_version`."""
        return self._one("SELECT * FROM variants WHERE package_id=? AND kind=? AND"
                         " base_version=?", (package_id, kind, base_version))

    def device_version(self, device: str) -> str | None:
        """The version the device last informed."""
        row = self._one("SELECT version FROM devices WHERE id=?", (device,))
        return row["version"] if row else None

    # -- devices ------------------------------------------------------------------------
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
