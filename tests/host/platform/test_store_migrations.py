"""The store's schema migrations: a new store gets every one, recorded; data folders made
before migrations were numbered (no schema_version table) are upgraded, their rows kept;
opening again applies nothing; a store migrated by a newer fota is refused."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fota_host.platform import store_migrations as sm
from fota_host.platform.store import Store
from fota_host.platform.store_sql import Db
from fota_host.platform.validate import PlatformError


def _versions(store: Store) -> list[int]:
    return [r["version"] for r in store._all("SELECT version FROM schema_version"
                                             " ORDER BY version")]


def _unversioned(path: Path, upto: int) -> None:
    """A data folder's store as the code before numbered migrations made it: the tables
    of migrations 1..upto, no schema_version, a package, a task, a sub-task, a device."""
    db = Db(path)
    for m in sm.MIGRATIONS[:upto]:
        sm._apply(db, m)
    db.execute("INSERT INTO packages (id, name, product, version, module, sign, size, md5,"
               ' sha256, "desc", source, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)',
               ("a" * 20, "fw", "p", "2.0.0", "MCU", "md5", 10, "m" * 32, "s" * 64, "", "file",
                1.0))
    db.execute("INSERT INTO tasks (name, package_id, \"desc\", state, created)"
               " VALUES ('old', ?, '', 'running', 1.0)", ("a" * 20,))
    db.execute("INSERT INTO subtasks (task_id, device, state, created, updated)"
               " VALUES (1, 'dev-1', 'upgrading', 1.0, 1.0)")
    db.execute("INSERT INTO devices (id, version, first_seen, last_seen)"
               " VALUES ('dev-1', '1.0.0', 1.0, 1.0)")
    db.close()


@pytest.mark.parametrize("upto", [1, 2, 3], ids=["first-schema", "with-variants",
                                                 "with-rollouts"])
def test_an_unversioned_sqlite_store_is_upgraded_and_keeps_its_rows(tmp_path: Path,
                                                                    upto: int) -> None:
    path = tmp_path / "platform.db"
    _unversioned(path, upto)
    assert sm.current_version(Db(path)) == 0  # recognised as the baseline
    store = Store(path)
    try:
        assert _versions(store) == [m.version for m in sm.MIGRATIONS]
        assert store.package("a" * 20)["signed"] == 0  # migration 2's column, defaulted
        (sub,) = store.subtasks(1)
        assert (sub["device"], sub["state"], sub["hold"], sub["wave"]) == \
            ("dev-1", "upgrading", 0, None)
        assert store.device_version("dev-1") == "1.0.0"
        assert store.notices() == []  # migration 4's table
        # and it works as a store: a new task gets the next id
        assert store.insert_task("new", "a" * 20, "", None, None) == 2
        store.commit()
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_new_store_gets_every_migration_once(tmp_path: Path, kind: str,
                                               request: pytest.FixtureRequest) -> None:
    target = tmp_path / "platform.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    first = Store(target)
    applied = {r["version"]: r["applied"] for r in first._all("SELECT * FROM schema_version")}
    first.close()
    assert sorted(applied) == [m.version for m in sm.MIGRATIONS]
    again = Store(target)  # opening again: nothing to apply
    try:
        assert sm.migrate(again.db) == []
        assert {r["version"]: r["applied"] for r in again._all(
            "SELECT * FROM schema_version")} == applied
    finally:
        again.close()


def test_instances_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[Store] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(Store(pg_url))
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(stores) == 3
        assert _versions(stores[0]) == [m.version for m in sm.MIGRATIONS]
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_store_from_a_newer_fota_is_refused(tmp_path: Path, kind: str,
                                              request: pytest.FixtureRequest) -> None:
    target = tmp_path / "platform.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    store = Store(target)
    store._write("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                 (sm.LATEST + 1, "from the future", time.time()))
    store.close()
    with pytest.raises(PlatformError, match=f"schema version {sm.LATEST + 1}, newer than this"
                                            " fota knows"):
        Store(target)


def test_the_sqlite_file_is_an_ordinary_sqlite_database(tmp_path: Path) -> None:
    """Backups and `sqlite3` keep working on it: the version is a plain table."""
    Store(tmp_path / "platform.db").close()
    db = sqlite3.connect(tmp_path / "platform.db")
    try:
        assert db.execute("SELECT MAX(version) FROM schema_version").fetchone() == \
            (sm.LATEST,)
    finally:
        db.close()


def test_a_database_user_that_may_not_create_tables_is_told_so(pg_server, pg_url: str) -> None:
    import secrets

    import psycopg

    role = f"weak_{secrets.token_hex(4)}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'weakpw'")
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    url = pg_server.url(pg_url.rsplit("/", 1)[1], password="weakpw", user=role)
    with pytest.raises(PlatformError) as err:
        Store(url)
    assert "permission denied" in str(err.value) and "may create tables" in str(err.value)
    assert "weakpw" not in str(err.value)
