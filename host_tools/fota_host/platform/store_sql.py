"""The store's connection, SQLite or PostgreSQL, and the one place their dialects differ.

- SQLite (the default): `DIR/platform.db` in WAL mode, one process (the data folder's
  lock keeps a second one out).
- PostgreSQL (`--db postgresql://USER:PASS@HOST[:PORT]/DB`, psycopg 3): shared by any
  number of platform instances. The connection runs in autocommit mode with explicit
  BEGIN/COMMIT, like the SQLite one, so the store's transactions are the same on both.

SQL is written once, in the subset both understand, with `?` placeholders; `Db.execute`
turns them into psycopg's `%s` for PostgreSQL. What the subset can't say is here:
`for_update()` (row locks: nothing on SQLite, where one process writes), the schema's
column types (`ddl()`), and the errors (`storage_errors()`: a full disk, an I/O error, a
lost or refused PostgreSQL connection become `StorageError`, so a message is kept
unacknowledged and tried again, never dropped). A lost connection is opened again by the
next call ("restart PostgreSQL: instances reconnect and catch up").
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .validate import PlatformError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DB_URL_FORM = "postgresql://USER:PASS@HOST[:PORT]/DB"
RECONNECT_PAUSE = 1.0  # seconds between two tries to reach a PostgreSQL that is down


class StorageError(PlatformError):
    """The store could not be written (disk full, I/O error, the database unreachable):
    nothing of the change was stored, and nothing may be acknowledged as if it were.
    HTTP 507 (Insufficient Storage, RFC 4918 §11.5) when the disk is full, 503 (Service
    Unavailable, RFC 9110 §15.6.4) when the database is down, restarting or out of
    connections: the same request succeeds once it is back."""

    def __init__(self, message: str, status: int = 507) -> None:
        super().__init__(message, status)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def storage_errors() -> Iterator[None]:
    """SQLite's "disk full" and I/O errors (and ENOSPC/EFBIG), PostgreSQL's disk full
    (class 53) and a lost or refused connection (class 08, 57, a deadlock or a lock
    timeout: the transaction is gone either way) as `StorageError`."""
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
    except Exception as exc:
        pg = sys.modules.get("psycopg")  # only loaded when a PostgreSQL store is open
        if pg is None or not isinstance(exc, pg.Error):
            raise
        state = getattr(exc, "sqlstate", None) or ""
        if state == "53100":  # disk_full
            raise StorageError(f"disk full: PostgreSQL cannot write the platform store "
                               f"({_one_line(exc)})") from exc
        if state.startswith("53"):  # out of memory, too many connections, ...
            raise StorageError(f"PostgreSQL is out of resources: {_one_line(exc)} (tried "
                               "again on the next call)", 503) from exc
        if isinstance(exc, (pg.OperationalError, pg.InterfaceError)):
            raise StorageError(f"PostgreSQL: {_one_line(exc)} (tried again on the next "
                               "call)", 503) from exc
        raise


# -- the database URL -----------------------------------------------------------------------
def is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).split(":", 1)[0].lower() in ("postgresql", "postgres")


def check_db_url(url: str) -> str:
    """`url` if it names a PostgreSQL database, else `PlatformError` saying the form."""
    parts = urllib.parse.urlsplit(url)
    if not is_postgres(url):
        raise PlatformError(f"--db must be a PostgreSQL URL {DB_URL_FORM} (leave --db out "
                            "for the data folder's SQLite store)")
    if not parts.hostname and "host=" not in parts.query:
        raise PlatformError(f"--db names no host: give {DB_URL_FORM}")
    if not parts.path.strip("/"):
        raise PlatformError(f"--db names no database: give {DB_URL_FORM}")
    try:
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        raise PlatformError(f"--db has a bad port: give {DB_URL_FORM}") from None
    return url


def shown_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# -- the dialects ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


_PG_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"),
     "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)


class Db:
    """One connection, SQLite (`target` a path) or PostgreSQL (`target` a URL)."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        self.dialect = "postgresql" if is_postgres(str(target)) else "sqlite"
        self.conn: Any = None
        self._down_since = 0.0
        if self.dialect == "sqlite":
            self._open_sqlite(Path(target))
        else:
            self._open_pg(first=True)

    @property
    def pg(self) -> bool:
        return self.dialect == "postgresql"

    def _open_sqlite(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():  # owner-only; SQLite gives -wal and -shm the same mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")

    def _open_pg(self, first: bool = False) -> None:
        """Connect (again). The first time a failure is a `PlatformError` saying what to
        check; later a `StorageError` (the caller keeps its message and tries again)."""
        import psycopg
        from psycopg.rows import dict_row

        url = str(self.target)
        if not first and time.monotonic() - self._down_since < RECONNECT_PAUSE:
            raise StorageError(f"PostgreSQL at {shown_url(url)} unreachable (tried again "
                               "in a moment)", 503)
        try:
            self.conn = psycopg.connect(
                url, autocommit=True, row_factory=dict_row, connect_timeout=5,
                application_name="fota-platform", keepalives=1, keepalives_idle=10,
                keepalives_interval=5, keepalives_count=3,
                options="-c lock_timeout=15000 -c idle_in_transaction_session_timeout=300000")
        except psycopg.Error as exc:
            self._down_since = time.monotonic()
            why = _one_line(exc)
            if first:
                raise PlatformError(
                    f"cannot open the PostgreSQL store {shown_url(url)} ({why.rstrip('?.')})"
                    f": check that the server runs and that --db ({DB_URL_FORM}) names the "
                    "right host, port, user, password and an existing database", 503) from None
            raise StorageError(f"PostgreSQL at {shown_url(url)} unreachable: {why}",
                               503) from exc
        self._down_since = 0.0

    def _pg_conn(self) -> Any:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self._open_pg()
        return self.conn

    # -- statements ---------------------------------------------------------------------
    def execute(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement: a cursor (`fetchone`, `fetchall`, `rowcount`)."""
        with storage_errors():
            if not self.pg:
                return self.conn.execute(sql, tuple(args))
            idle = not self.in_transaction
            try:
                return self._pg_run(sql, args)
            except Exception as exc:
                pg = sys.modules["psycopg"]
                if not (idle and isinstance(exc, pg.OperationalError) and self.conn.broken):
                    raise
            # the connection died while idle (a restarted server): nothing was lost, so
            # once more on a new one
            return self._pg_run(sql, args)

    def _pg_run(self, sql: str, args: Sequence[Any]) -> Any:
        conn = self._pg_conn()
        if not args:
            return conn.execute(sql)
        return conn.execute(_pg_sql(sql), [_pg_value(a) for a in args])

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with storage_errors():
            if not self.pg:
                self.conn.executemany(sql, rows)
                return
            with self._pg_conn().cursor() as cur:
                cur.executemany(_pg_sql(sql), [[_pg_value(a) for a in r] for r in rows])

    @property
    def in_transaction(self) -> bool:
        if not self.pg:
            return bool(self.conn.in_transaction)
        if self.conn is None or self.conn.closed or self.conn.broken:
            return False
        from psycopg.pq import TransactionStatus

        return self.conn.info.transaction_status in (TransactionStatus.INTRANS,
                                                     TransactionStatus.INERROR,
                                                     TransactionStatus.ACTIVE)

    @property
    def failed_transaction(self) -> bool:
        """PostgreSQL only: the open transaction had an error (only ROLLBACK works)."""
        if not self.pg or self.conn is None or self.conn.closed or self.conn.broken:
            return False
        from psycopg.pq import TransactionStatus

        return self.conn.info.transaction_status == TransactionStatus.INERROR

    def close(self) -> None:
        if self.conn is not None and not (self.pg and self.conn.closed):
            self.conn.close()

    # -- what the dialects say differently ------------------------------------------------
    def for_update(self, table: str = "", skip_locked: bool = False) -> str:
        """The row-lock clause for a SELECT: ` FOR UPDATE [OF table] [SKIP LOCKED]` on
        PostgreSQL, nothing on SQLite (one process; its writes are serialised anyway)."""
        if not self.pg:
            return ""
        return " FOR UPDATE" + (f" OF {table}" if table else "") + \
            (" SKIP LOCKED" if skip_locked else "")

    def ddl(self, sql: str) -> str:
        """A CREATE statement written for SQLite, in this dialect's types: AUTOINCREMENT
        ids become identity columns, REAL double precision, INTEGER bigint."""
        if not self.pg:
            return sql
        for pattern, repl in _PG_TYPES:
            sql = pattern.sub(repl, sql)
        return sql

    def columns(self, table: str) -> set[str]:
        if not self.pg:
            return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
        rows = self.execute("SELECT column_name FROM information_schema.columns WHERE"
                            " table_schema = current_schema() AND table_name = ?",
                            (table,)).fetchall()
        return {r["column_name"] for r in rows}

    def has_table(self, table: str) -> bool:
        if not self.pg:
            sql = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
        else:
            sql = ("SELECT 1 FROM information_schema.tables WHERE"
                   " table_schema = current_schema() AND table_name = ?")
        return self.execute(sql, (table,)).fetchone() is not None

    def lock_schema(self) -> None:
        """Inside the migration's transaction: one migrating instance at a time."""
        if self.pg:
            self.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_KEY,))

    def try_lock(self, key: int) -> bool:
        """PostgreSQL's session-level advisory lock, without waiting (True on SQLite)."""
        if not self.pg:
            return True
        return bool(self.execute("SELECT pg_try_advisory_lock(?) AS got", (key,))
                    .fetchone()["got"])

    def unlock(self, key: int) -> None:
        if self.pg:
            self.execute("SELECT pg_advisory_unlock(?)", (key,))


# Advisory lock keys (any bigint, the same in every instance).
MIGRATE_KEY = 0x464F5441_0001  # "FOTA" 1: schema migrations
CLOCK_KEY = 0x464F5441_0002    # "FOTA" 2: the task clock (tick)


def _pg_value(value: Any) -> Any:
    """A parameter as PostgreSQL takes it: booleans are stored as 0/1 (the columns are
    integers, as on SQLite); a NUL can't be in a text value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value
