"""The store's sub-task queries (a mixin of `store.Store`): the notices due and sent, the
reports applied, the download grants, the clock's timeouts.

Row locks (`Db.for_update`, PostgreSQL only) are what keep instances sharing the database
from stepping on each other; see store.py for the whole picture.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from .store_sql import Db

ACTIVE_STATES = ("pending", "upgrading")
_ACTIVE = "('pending','upgrading')"
Row = dict[str, Any]


class SubtaskQueries:
    """Needs the `Store` helpers below (the mixin only holds queries)."""

    db: Db

    def begin(self) -> None: ...
    def _one(self, sql: str, args: Sequence[Any] = ()) -> Row | None: ...
    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[Row]: ...
    def _write(self, sql: str, args: Sequence[Any] = ()) -> Any: ...
    def _many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def _locked(self, sql: str, args: Sequence[Any] = (), table: str = "") -> Row | None: ...

    # -- a task's sub-tasks -------------------------------------------------------------
    def subtasks(self, task_id: int) -> list[Row]:
        return self._all("SELECT * FROM subtasks WHERE task_id = ? ORDER BY id", (task_id,))

    def lock_subtasks(self, task_id: int) -> list[Row]:
        """The task's sub-tasks, their rows locked until the transaction ends (PostgreSQL):
        a cancel can't overwrite a report another instance is applying."""
        if self.db.pg:
            self.begin()
        return self._all("SELECT * FROM subtasks WHERE task_id = ? ORDER BY id" +
                         self.db.for_update(), (task_id,))

    def active_count(self, task_id: int) -> int:
        row = self._one(f"SELECT COUNT(*) AS n FROM subtasks WHERE task_id=? AND state IN"
                        f" {_ACTIVE}", (task_id,))
        return int(row["n"]) if row else 0

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
        rows = self._write(
            'INSERT INTO subtasks (task_id, device, state, "desc", push_due, created, updated)'
            " VALUES (?, ?, 'pending', 'waiting', ?, ?, ?) RETURNING id",
            (task_id, device, push_due, now, now)).fetchall()
        return int(rows[0]["id"])

    def update_subtask(self, subtask_id: int, **fields: Any) -> None:
        fields.setdefault("updated", time.time())
        sets = ", ".join(f'"{k}" = ?' for k in fields)
        self._write(f"UPDATE subtasks SET {sets} WHERE id = ?", (*fields.values(), subtask_id))

    # -- the sub-task a report is about (locked: its change is applied once) -------------
    def subtask_with_target(self, subtask_id: int) -> Row | None:
        """A sub-task with its package's version as `target`; its row locked until the
        transaction ends (PostgreSQL)."""
        return self._locked(
            "SELECT s.*, p.version AS target FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.id = ?", (subtask_id,), "s")

    def running_subtask_of(self, device: str) -> Row | None:
        """The device's first active sub-task in a running task, with `target`; its row
        locked until the transaction ends (PostgreSQL)."""
        return self._locked(
            "SELECT s.*, p.version AS target FROM subtasks s"
            " JOIN tasks t ON t.id = s.task_id JOIN packages p ON p.id = t.package_id"
            f" WHERE s.device = ? AND s.state IN {_ACTIVE} AND"
            " t.state = 'running' ORDER BY s.id LIMIT 1", (device,), "s")

    def apply_progress(self, batch: dict[int, list[Any]], now: float) -> None:
        """Write batched progress: {subtask id: [step, desc, last_report, reports, device]}.
        Reports are counted whatever the state (as one not batched is); the step and desc
        only change on a sub-task still upgrading and from a report newer than the one
        stored (another instance may have written a later report, or ended the sub-task,
        first)."""
        newer = "COALESCE(last_report, 0) <= ?"
        self._many(
            f"UPDATE subtasks SET step = CASE WHEN state = 'upgrading' AND {newer} THEN ?"
            f' ELSE step END, "desc" = CASE WHEN state = \'upgrading\' AND {newer} THEN ?'
            f' ELSE "desc" END, last_report = CASE WHEN {newer} THEN ? ELSE last_report'
            " END, updated = ?, reports = reports + ? WHERE id = ?",
            [(v[2], v[0], v[2], v[1], v[2], v[2], now, v[3], sid)
             for sid, v in sorted(batch.items())])
        self._many("UPDATE devices SET last_seen=? WHERE id=? AND last_seen < ?",
                   [(v[2], v[4], v[2]) for _, v in sorted(batch.items())])

    def total_reports(self) -> int:
        row = self._one("SELECT CAST(COALESCE(SUM(reports), 0) AS BIGINT) AS n FROM subtasks")
        return int(row["n"]) if row else 0

    # -- the clock ----------------------------------------------------------------------
    def time_out_active(self, task_id: int, now: float) -> None:
        """Every active sub-task of the task times out (its end time was reached)."""
        self._write(
            "UPDATE subtasks SET state='timed_out', \"desc\"='task end time reached',"
            f" push_due=NULL, token_expires=0, updated=? WHERE task_id=? AND state IN {_ACTIVE}",
            (now, task_id))

    def silent_upgrading(self, since: float) -> list[Row]:
        """Upgrading sub-tasks with no report since `since`; on PostgreSQL locked, and
        those another instance holds (a report being applied) are left for the next tick."""
        if self.db.pg:
            self.begin()
        return self._all("SELECT * FROM subtasks WHERE state='upgrading' AND last_report < ?"
                         " ORDER BY id" + self.db.for_update(skip_locked=True), (since,))

    def due_notices(self, now: float, limit: int) -> list[Row]:
        """Pending sub-tasks of running tasks whose notice is due, oldest first, with their
        package (`file_id`, size, version, md5, sha256, sign, module). On PostgreSQL they
        are locked (`SKIP LOCKED`: rows another instance holds are not waited for)."""
        if self.db.pg:
            self.begin()
        return self._all(
            "SELECT s.id, s.device, s.task_id, s.token, s.token_expires, s.full_only,"
            " p.id AS file_id,"
            " p.size, p.version, p.md5, p.sha256, p.sign, p.module"
            " FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.push_due IS NOT NULL AND"
            " s.push_due <= ? AND s.state = 'pending' AND t.state = 'running'"
            " AND s.hold = 0 AND t.hold = 0"
            " ORDER BY s.push_due, s.id LIMIT ?" + self.db.for_update("s", skip_locked=True),
            (now, limit))

    def mark_notified(self, subtask_id: int, token: str, token_expires: float,
                      now: float, desc: str = "notice sent") -> bool:
        """A notice goes out: its token, the time, one push more (a retry keeps its desc),
        and a row in `notices`. False (nothing written) when the sub-task is no longer
        pending and due: someone else notified or changed it, and this notice must not go
        out."""
        cur = self._write(
            "UPDATE subtasks SET token=?, token_expires=?, push_due=NULL, notified=?,"
            " pushes=pushes+1, updated=?,"
            " \"desc\"=CASE WHEN \"desc\" LIKE 'retry%' THEN \"desc\" ELSE ? END"
            " WHERE id=? AND state='pending' AND push_due IS NOT NULL",
            (token, token_expires, now, now, desc, subtask_id))
        if cur.rowcount != 1:
            return False
        self._write("INSERT INTO notices (subtask_id, task_id, device, sent)"
                    " SELECT id, task_id, device, ? FROM subtasks WHERE id = ?",
                    (now, subtask_id))
        return True

    def mark_notice_sent(self, subtask_id: int, published: str, sent: str) -> None:
        """The broker acknowledged the notice: `published` becomes `sent`."""
        self._write('UPDATE subtasks SET "desc"=?, updated=? WHERE id=? AND "desc"=?',
                    (sent, time.time(), subtask_id, published))

    def mark_unsent(self, due: list[Row], desc: str) -> None:
        """Notices due that can't go out (no broker connection) say so."""
        ids = [r["id"] for r in due]
        if ids:
            marks = ",".join("?" * len(ids))
            self._write(f'UPDATE subtasks SET "desc"=? WHERE id IN ({marks}) AND "desc" != ?'
                        " AND \"desc\" NOT LIKE 'retry%'", (desc, *ids, desc))

    def notices_between(self, since: float, until: float) -> int:
        """Notices recorded with since < sent <= until (every instance's)."""
        row = self._one("SELECT COUNT(*) AS n FROM notices WHERE sent > ? AND sent <= ?",
                        (since, until))
        return int(row["n"]) if row else 0

    def notices(self, task_id: int | None = None) -> list[Row]:
        """The notices published (subtask_id, task_id, device, sent), oldest first."""
        if task_id is None:
            return self._all("SELECT * FROM notices ORDER BY id")
        return self._all("SELECT * FROM notices WHERE task_id=? ORDER BY id", (task_id,))

    def prune_notices(self, before: float) -> None:
        self._write("DELETE FROM notices WHERE sent < ?", (before,))

    # -- downloads ----------------------------------------------------------------------
    def download_grant(self, task_id: int, device: str) -> Row | None:
        """What a download request is checked against: the device's sub-task of the task
        (token, token_expires, state) and the task's package_id."""
        return self._one(
            "SELECT s.token, s.token_expires, s.state,"
            " COALESCE(s.file_id, t.package_id) AS package_id FROM subtasks s"
            " JOIN tasks t ON t.id = s.task_id WHERE s.task_id=? AND s.device=?",
            (task_id, device))

    def download_states(self, keys: Iterable[tuple[int, str]]) -> dict[tuple[int, str], str]:
        """{(task id, device): sub-task state} of downloads in flight (missing: no such
        sub-task)."""
        by_task: dict[int, list[str]] = {}
        for task_id, device in keys:
            by_task.setdefault(task_id, []).append(device)
        out: dict[tuple[int, str], str] = {}
        for task_id, devices in by_task.items():
            marks = ",".join("?" * len(devices))
            for r in self._all(f"SELECT device, state FROM subtasks WHERE task_id=? AND"
                               f" device IN ({marks})", (task_id, *devices)):
                out[(task_id, r["device"])] = r["state"]
        return out
