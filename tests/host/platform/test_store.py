"""The store's queries, the same suite on SQLite (the data folder's file) and on a real
PostgreSQL server (tests/pgserver.py): what is written is read back, transactions and
savepoints undo what they should, and the notices and progress rules hold."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest
from fota_host.platform import store_rollouts as sr
from fota_host.platform.store import StorageError, Store, storage_errors


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a store lives: a data folder's platform.db, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "platform.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(target: Path | str):
    s = Store(target)
    yield s
    s.close()


def _package(store: Store, pid: str = "p" * 20, version: str = "2.0.0") -> str:
    store.insert_package({"id": pid, "name": "fw", "product": "p", "version": version,
                          "module": "MCU", "sign": "md5", "size": 150_000, "md5": "m" * 32,
                          "sha256": "s" * 64, "desc": "a package", "source": "file",
                          "created": time.time()})
    store.commit()
    return pid


def _running_task(store: Store, devices: list[str], now: float) -> tuple[int, list[int]]:
    tid = store.insert_task("t", _package(store), "", None, None)
    subs = [store.insert_subtask(tid, d, None, now) for d in devices]
    assert store.set_task_running(tid, now)
    store.commit()
    return tid, subs


def test_rows_written_are_read_back(store: Store) -> None:
    pid = _package(store)
    assert store.package(pid)["desc"] == "a package"
    assert [p["id"] for p in store.packages()] == [pid]
    t1 = store.insert_task("one", pid, "first", None, time.time() + 60)
    t2 = store.insert_task("two", pid, "", None, None)
    assert t2 > t1 > 0
    s1 = store.insert_subtask(t1, "dev-1", None, time.time())
    s2 = store.insert_subtask(t1, "dev-2", None, time.time())
    store.update_subtask(s2, state="upgrading", step=40, desc="downloading")
    store.commit()
    assert [t["name"] for t in store.tasks()] == ["one", "two"]
    assert store.state_counts(t1) == {"pending": 1, "upgrading": 1}
    assert store.active_count(t1) == 2
    assert store.in_task(t1, "dev-1") and not store.in_task(t2, "dev-1")
    assert store.busy_in("dev-2") == t1 and store.busy_in("dev-3") is None
    row = store.subtask_with_target(s2)
    assert (row["device"], row["step"], row["desc"], row["target"]) == \
        ("dev-2", 40, "downloading", "2.0.0")
    store.commit()
    assert [s["id"] for s in store.subtasks(t1)] == [s1, s2]
    assert store.download_grant(t1, "dev-1")["package_id"] == pid
    assert store.download_states([(t1, "dev-1"), (t1, "dev-2"), (t1, "gone")]) == \
        {(t1, "dev-1"): "pending", (t1, "dev-2"): "upgrading"}


def test_a_task_starts_once(store: Store) -> None:
    tid = store.insert_task("t", _package(store), "", None, None)
    assert store.set_task_running(tid, time.time())
    assert not store.set_task_running(tid, time.time())  # another instance was first
    store.commit()
    assert store.task(tid)["state"] == "running"


def test_devices_are_upserted(store: Store) -> None:
    store.touch_device("d1", "1.0.0", "MCU")
    store.touch_device("d1")  # a progress report: version and module kept
    store.commit()
    (row,) = store.devices()
    assert (row["id"], row["version"], row["module"]) == ("d1", "1.0.0", "MCU")
    assert store.device_seen("d1") and not store.device_seen("d2")
    assert store.device_version("d1") == "1.0.0"


def test_rollback_and_savepoint_undo_their_part_only(store: Store) -> None:
    told: list[str] = []
    store.touch_device("kept", "1.0.0")
    with pytest.raises(RuntimeError), store.savepoint():
        store.touch_device("undone", "1.0.0")
        store.after_commit(lambda: told.append("undone"))
        raise RuntimeError("one message fails")
    store.after_commit(lambda: told.append("kept"))
    store.commit()
    assert [d["id"] for d in store.devices()] == ["kept"] and told == ["kept"]
    store.touch_device("rolled-back", "1.0.0")
    store.after_commit(lambda: told.append("rolled-back"))
    store.rollback()
    store.commit()
    assert [d["id"] for d in store.devices()] == ["kept"] and told == ["kept"]


def test_due_notices_are_claimed_once_and_recorded(store: Store) -> None:
    now = time.time()
    tid, (s1, s2, s3) = _running_task(store, ["a", "b", "c"], now)
    store.update_subtask(s2, push_due=now - 10)  # the oldest first
    store.update_subtask(s3, hold=1)             # its wave is not open
    store.commit()
    due = store.due_notices(now, 10)
    assert [r["id"] for r in due] == [s2, s1]
    assert due[0]["version"] == "2.0.0" and due[0]["file_id"] == "p" * 20
    assert store.mark_notified(s2, "tok", now + 3600, now)
    assert not store.mark_notified(s2, "tok2", now + 3600, now)  # already notified
    store.commit()
    row = store.subtask_with_target(s2)
    assert (row["token"], row["pushes"], row["push_due"], row["desc"]) == \
        ("tok", 1, None, "notice sent")
    store.commit()
    assert [(n["subtask_id"], n["task_id"], n["device"]) for n in store.notices()] == \
        [(s2, tid, "b")]
    assert store.notices_between(now - 1, now) == 1
    assert store.notices_between(now, now + 1) == 0
    store.prune_notices(now + 1)
    store.commit()
    assert store.notices() == []


def test_a_cancelled_subtask_is_not_notified(store: Store) -> None:
    now = time.time()
    _, (s1,) = _running_task(store, ["a"], now)
    (due,) = store.due_notices(now, 10)
    store.commit()
    store.update_subtask(s1, state="cancelled", push_due=None)  # meanwhile, elsewhere
    store.commit()
    assert not store.mark_notified(due["id"], "tok", now + 60, now)
    assert store.notices() == []


def test_retry_keeps_its_desc_and_unsent_says_why(store: Store) -> None:
    now = time.time()
    tid, (s1, s2) = _running_task(store, ["a", "b"], now)
    store.update_subtask(s1, desc="retry 1/2 in 30s: boom")
    store.mark_unsent(store.due_notices(now, 10), "not sent: no broker connection")
    store.commit()
    assert [s["desc"] for s in store.subtasks(tid)] == \
        ["retry 1/2 in 30s: boom", "not sent: no broker connection"]
    assert store.mark_notified(s1, "t", now + 60, now, "notice published")
    assert store.mark_notified(s2, "t", now + 60, now, "notice published")
    store.mark_notice_sent(s2, "notice published", "notice sent")
    store.commit()
    assert [store.subtask_with_target(s)["desc"] for s in (s1, s2)] == \
        ["retry 1/2 in 30s: boom", "notice sent"]


def test_progress_batches_add_up_and_the_newest_report_wins(store: Store) -> None:
    now = time.time()
    _, (s1, s2) = _running_task(store, ["a", "b"], now)
    store.touch_device("a")
    for sid in (s1, s2):
        store.update_subtask(sid, state="upgrading", last_report=now)
    store.update_subtask(s2, state="failed")
    store.commit()
    # two instances' batches: the later report written first
    store.apply_progress({s1: [60, "downloading 60%", now + 2, 3, "a"]}, now + 2)
    store.apply_progress({s1: [40, "downloading 40%", now + 1, 2, "a"],
                          s2: [10, "late", now + 1, 1, "b"]}, now + 2)
    store.commit()
    one, two = (store.subtask_with_target(s) for s in (s1, s2))
    store.commit()
    assert (one["step"], one["desc"], one["reports"], one["last_report"]) == \
        (60, "downloading 60%", 5, now + 2)
    assert (two["state"], two["step"], two["desc"], two["reports"]) == \
        ("failed", 0, "waiting", 1)  # counted, nothing else changes
    assert store.total_reports() == 6
    assert store.devices()[0]["last_seen"] == now + 2


def test_the_clock_finds_silent_and_expired_work(store: Store) -> None:
    now = time.time()
    tid, (s1, s2) = _running_task(store, ["a", "b"], now)
    store.update_subtask(s1, state="upgrading", last_report=now - 100)
    store.update_subtask(s2, state="upgrading", last_report=now)
    store._write("UPDATE tasks SET end_at=? WHERE id=?", (now - 1, tid))
    store.commit()
    assert [r["id"] for r in store.silent_upgrading(now - 50)] == [s1]
    assert [t["id"] for t in store.tasks_past_end(now)] == [tid]
    store.time_out_active(tid, now)
    store.set_task_finished(tid, now)
    store.commit()
    assert store.state_counts(tid) == {"timed_out": 2}
    assert store.lock_task(tid)["state"] == "finished"
    store.commit()


def test_rollout_rows(store: Store) -> None:
    now = time.time()
    tid, (s1, s2) = _running_task(store, ["a", "b"], now)
    sr.insert_rollout(store, tid, {"waves": [1], "continuous": False})
    sr.set_wave(store, [s1], 1, hold=False)
    sr.set_wave(store, [s2], 2, hold=True)
    for dev, version in (("a", "1.0.0"), ("b", None), ("c", "1.0.0")):
        store.touch_device(dev, version)
    sr.add_tag(store, "c", "lab")
    sr.add_tag(store, "c", "lab")  # twice: once
    store.commit()
    assert sr.rollout(store, tid)["spec"] == {"waves": [1], "continuous": False}
    assert store.task(tid)["hold"] == 1
    assert sorted((r["wave"], r["state"], r["n"]) for r in sr.wave_counts(store, tid)) == \
        [(1, "pending", 1), (2, "pending", 1)]
    assert sr.all_tags(store) == {"c": ["lab"]}
    assert sr.version_counts(store) == [{"version": "1.0.0", "devices": 2},
                                        {"version": "", "devices": 1}]
    assert [r["id"] for r in sr.candidates(store, tid, ["lab"], ["1.0.0"], 0)] == ["c"]
    assert sr.cancel_pending(store, tid, "stopped", now) == 2
    sr.update_rollout(store, tid, reason="stopped", approved=True)
    store.commit()
    assert sr.rollout(store, tid)["approved"] == 1
    assert {r["desc"] for r in sr.ended_rows(store, tid)} == {"stopped"}


def test_what_is_committed_survives_reopening(target: Path | str) -> None:
    first = Store(target)
    pid = _package(first)
    first.touch_device("kept", "1.0.0")
    first.commit()
    first.touch_device("uncommitted", "1.0.0")
    first.db.close()  # a crash: no commit
    again = Store(target)
    try:
        assert again.package(pid) is not None
        assert [d["id"] for d in again.devices()] == ["kept"]
    finally:
        again.close()


@pytest.mark.parametrize("error,words", [
    (psycopg.errors.DiskFull("could not extend file"), "disk full"),
    (psycopg.OperationalError("server closed the connection unexpectedly"), "PostgreSQL"),
    (psycopg.errors.AdminShutdown("terminating connection"), "PostgreSQL"),
    (psycopg.errors.DeadlockDetected("deadlock detected"), "PostgreSQL"),
])
def test_postgresql_failures_are_storage_errors(error: Exception, words: str) -> None:
    """A full disk, a lost connection, a deadlock: the message is kept, not dropped."""
    with pytest.raises(StorageError, match=words), storage_errors():
        raise error


def test_other_postgresql_errors_stay_what_they_are() -> None:
    with pytest.raises(psycopg.errors.UniqueViolation), storage_errors():
        raise psycopg.errors.UniqueViolation("duplicate key")
