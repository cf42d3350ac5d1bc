"""The store's schema, as numbered migrations the platform applies itself when it opens a
store (SQLite or PostgreSQL).

`schema_version` holds one row per migration applied (version, name, time). A store
opened by this code is brought up to `LATEST` in one transaction, under a lock (SQLite's
write lock, `BEGIN IMMEDIATE`; PostgreSQL's advisory lock `MIGRATE_KEY`), so instances
starting together migrate once. A store at a version newer than this code knows is
refused (a newer fota migrated it).

Data folders made before versions existed (no `schema_version` table) are the baseline:
they hold migration 1's tables, and maybe 2's and 3's (the features came one by one), so
migrations 1 to 3 are written to be re-run safely (CREATE ... IF NOT EXISTS, a column
added only when it is missing); such a store is upgraded and its version recorded.

The statements are written in SQLite's types; `Db.ddl` turns them into PostgreSQL's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .store_sql import Db, StorageError
from .validate import PlatformError

log = logging.getLogger("fota.platform")

# Migration 1, the first schema (also the baseline of unversioned data folders).
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
    "desc" TEXT NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    package_id TEXT NOT NULL REFERENCES packages(id),
    "desc" TEXT NOT NULL,
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
    "desc" TEXT NOT NULL DEFAULT '',
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

# Migration 2: compressed and delta files of packages (`id`: their file id,
# packages/<id>.bin), the signature facts of a package, the file a sub-task was served.
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

# Migration 3: rollouts (waves, thresholds, windows) and device tags (issue #16).
ROLLOUT_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    task_id INTEGER PRIMARY KEY REFERENCES tasks(id),
    spec TEXT NOT NULL,
    planned INTEGER NOT NULL DEFAULT 0,
    opened INTEGER NOT NULL DEFAULT 0,
    approved INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    reason TEXT,
    waiting TEXT,
    failed_base INTEGER NOT NULL DEFAULT 0,
    ended_base INTEGER NOT NULL DEFAULT 0,
    scanned REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS device_tags (
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (device, tag)
);
"""

# Migration 4: every notice published, one row each (the fleet-wide push rate on
# PostgreSQL counts them; duplicates and metrics can be read from it).
NOTICES_SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subtask_id INTEGER NOT NULL,
    task_id INTEGER NOT NULL,
    device TEXT NOT NULL,
    sent REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notices_sent ON notices(sent);
CREATE INDEX IF NOT EXISTS notices_subtask ON notices(subtask_id);
"""

VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Column:
    """A column added to an existing table (only when it is missing)."""

    table: str
    name: str
    decl: str


Step = str | Column


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: tuple[Step, ...]


def _script(sql: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in sql.split(";") if s.strip())


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "packages, tasks, sub-tasks, devices", _script(SCHEMA)),
    Migration(2, "package variants, signature facts, the file a sub-task is served", (
        *_script(VARIANTS_SCHEMA),
        Column("packages", "signed", "INTEGER NOT NULL DEFAULT 0"),
        Column("packages", "key_digests", "TEXT NOT NULL DEFAULT ''"),
        Column("packages", "secure_version", "INTEGER"),
        Column("subtasks", "kind", "TEXT"),            # full | compressed | delta
        Column("subtasks", "file_id", "TEXT"),         # the file served (NULL: the package)
        Column("subtasks", "full_only", "INTEGER NOT NULL DEFAULT 0"),  # a variant refused
    )),
    Migration(3, "rollouts: waves, holds, device tags", (
        *_script(ROLLOUT_SCHEMA),
        Column("subtasks", "wave", "INTEGER"),
        Column("subtasks", "hold", "INTEGER NOT NULL DEFAULT 0"),
        Column("tasks", "hold", "INTEGER NOT NULL DEFAULT 0"),
    )),
    Migration(4, "notices published (fleet-wide push rate)", _script(NOTICES_SCHEMA)),
    Migration(5, "sub-tasks indexed by task and state (counts of large tasks)", (
        "CREATE INDEX IF NOT EXISTS subtasks_task_state ON subtasks(task_id, state)",)),
)
LATEST = MIGRATIONS[-1].version


def current_version(db: Db) -> int | None:
    """The store's schema version: None for an empty store, 0 for an unversioned one
    (a data folder made before migrations were numbered)."""
    if db.has_table("schema_version"):
        row = db.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()
        return int(row["v"] or 0)
    return 0 if db.has_table("packages") else None


def migrate(db: Db) -> list[int]:
    """Bring the store to `LATEST`; returns the versions applied (none: already there)."""
    db.execute("BEGIN IMMEDIATE" if not db.pg else "BEGIN")
    try:
        db.lock_schema()
        found = current_version(db)
        if found is not None and found > LATEST:
            raise PlatformError(
                f"the platform store is at schema version {found}, newer than this fota "
                f"knows ({LATEST}): run the newer fota on it (or restore a backup made "
                "before the upgrade)", 503)
        applied = [m for m in MIGRATIONS if m.version > (found or 0)]
        if applied:
            db.execute(db.ddl(VERSION_TABLE))
            for m in applied:
                _apply(db, m)
                db.execute("INSERT INTO schema_version (version, name, applied)"
                           " VALUES (?, ?, ?)", (m.version, m.name, time.time()))
        db.execute("COMMIT")
    except BaseException:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except StorageError:
            pass
        raise
    if applied and found is not None:
        log.info("platform store: schema upgraded from %s to version %d (%s)",
                 "the unversioned baseline" if found == 0 else f"version {found}", LATEST,
                 ", ".join(m.name for m in applied))
    return [m.version for m in applied]


def _apply(db: Db, migration: Migration) -> None:
    for step in migration.steps:
        if isinstance(step, Column):
            if step.name not in db.columns(step.table):
                db.execute(f"ALTER TABLE {step.table} ADD COLUMN {step.name} "
                           f"{db.ddl(step.decl)}")
        else:
            db.execute(db.ddl(step))
