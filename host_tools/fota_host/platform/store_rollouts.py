"""The store's rollout part (issue #16): each rollout task's rules and progress
(`rollouts`), device tags (`device_tags`), a sub-task's wave and hold, a task's hold.

A held sub-task (`subtasks.hold = 1`: its wave is not open) or a held task (`tasks.hold =
1`: not planned yet, or outside its maintenance windows) gets no notice (`due_notices`).
These are functions over a `Store` (its lock held by the caller); the tables are made by
migration 3 (store_migrations.py).
"""

from __future__ import annotations

import json
from typing import Any

Row = dict[str, Any]
Store = Any  # store.Store (it imports this module: no import back)

ENDED = ("succeeded", "failed", "cancelled", "timed_out")


# -- rollouts ---------------------------------------------------------------------------
def insert_rollout(store: Store, task_id: int, spec: dict[str, Any]) -> None:
    store._write("INSERT INTO rollouts (task_id, spec) VALUES (?, ?)",
                 (task_id, json.dumps(spec)))
    store._write("UPDATE tasks SET hold=1 WHERE id=?", (task_id,))


def rollout(store: Store, task_id: int) -> Row | None:
    row = store._one("SELECT * FROM rollouts WHERE task_id=?", (task_id,))
    if row is not None:
        row["spec"] = json.loads(row["spec"])
    return row


def live_rollouts(store: Store) -> list[Row]:
    """Rollouts of tasks running or paused, with the task's state, started and hold."""
    rows = store._all("SELECT r.*, t.state, t.started, t.hold, t.package_id FROM rollouts r"
                      " JOIN tasks t ON t.id = r.task_id WHERE t.state IN ('running','paused')")
    for row in rows:
        row["spec"] = json.loads(row["spec"])
    return rows


def update_rollout(store: Store, task_id: int, **fields: Any) -> None:
    sets = ", ".join(f'"{k}" = ?' for k in fields)
    store._write(f"UPDATE rollouts SET {sets} WHERE task_id = ?", (*fields.values(), task_id))


def set_task_state(store: Store, task_id: int, state: str, finished: float | None = None) -> None:
    store._write("UPDATE tasks SET state=?, finished=COALESCE(?, finished) WHERE id=?",
                 (state, finished, task_id))


def set_task_hold(store: Store, task_id: int, hold: bool) -> None:
    store._write("UPDATE tasks SET hold=? WHERE id=? AND hold != ?",
                 (int(hold), task_id, int(hold)))


# -- sub-tasks of a rollout ---------------------------------------------------------------
def set_wave(store: Store, subtask_ids: list[int], wave: int, hold: bool) -> None:
    store._many("UPDATE subtasks SET wave=?, hold=? WHERE id=?",
                [(wave, int(hold), sid) for sid in subtask_ids])


def open_wave(store: Store, task_id: int, wave: int, now: float) -> None:
    """The wave's pending sub-tasks may get their notice now."""
    store._write("UPDATE subtasks SET hold=0, push_due=COALESCE(push_due, ?), updated=?"
                 " WHERE task_id=? AND wave=? AND state='pending'", (now, now, task_id, wave))


def wave_counts(store: Store, task_id: int) -> list[Row]:
    """(wave, state, n) of a task's sub-tasks."""
    return store._all("SELECT wave, state, COUNT(*) AS n FROM subtasks WHERE task_id=?"
                      " GROUP BY wave, state", (task_id,))


def unplanned(store: Store, task_id: int) -> list[Row]:
    """Pending sub-tasks with no wave yet (in insertion order)."""
    return store._all("SELECT id, device FROM subtasks WHERE task_id=? AND wave IS NULL"
                      " AND state='pending' ORDER BY id", (task_id,))


def cancel_pending(store: Store, task_id: int, desc: str, now: float) -> int:
    cur = store._write("UPDATE subtasks SET state='cancelled', \"desc\"=?, push_due=NULL,"
                       " token_expires=0, updated=? WHERE task_id=? AND state='pending'",
                       (desc, now, task_id))
    return cur.rowcount


def skip(store: Store, subtask_id: int, desc: str, now: float) -> None:
    store._write("UPDATE subtasks SET state='cancelled', \"desc\"=?, push_due=NULL, updated=?"
                 " WHERE id=?", (desc, now, subtask_id))


def ended_rows(store: Store, task_id: int) -> list[Row]:
    """The task's sub-tasks (wave, state, desc, notified, updated), for statistics."""
    return store._all("SELECT id, wave, state, \"desc\", step, notified, updated FROM subtasks"
                      " WHERE task_id=?", (task_id,))


# -- devices: tags, versions, who matches a task ------------------------------------------
def add_tag(store: Store, device: str, tag: str) -> None:
    store._write("INSERT INTO device_tags (device, tag) VALUES (?, ?)"
                 " ON CONFLICT DO NOTHING", (device, tag))


def remove_tag(store: Store, device: str, tag: str) -> None:
    store._write("DELETE FROM device_tags WHERE device=? AND tag=?", (device, tag))


def tags_of(store: Store, device: str) -> list[str]:
    return [r["tag"] for r in store._all("SELECT tag FROM device_tags WHERE device=?"
                                         " ORDER BY tag", (device,))]


def all_tags(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in store._all("SELECT device, tag FROM device_tags ORDER BY device, tag"):
        out.setdefault(r["device"], []).append(r["tag"])
    return out


def version_counts(store: Store) -> list[Row]:
    return store._all("SELECT COALESCE(version, '') AS version, COUNT(*) AS devices"
                      " FROM devices GROUP BY COALESCE(version, '')"
                      " ORDER BY devices DESC, version")


def candidates(store: Store, task_id: int, groups: list[str], versions: list[str],
               since: float) -> list[Row]:
    """Devices seen since `since`, not in the task, with an active sub-task nowhere, in
    one of `groups` (any when empty) and running one of `versions` (any when empty)."""
    sql = ("SELECT d.id, d.version FROM devices d WHERE d.last_seen >= ?"
           " AND NOT EXISTS (SELECT 1 FROM subtasks s WHERE s.device = d.id AND"
           " (s.task_id = ? OR s.state IN ('pending','upgrading')))")
    args: list[Any] = [since, task_id]
    if groups:
        sql += (" AND EXISTS (SELECT 1 FROM device_tags g WHERE g.device = d.id AND g.tag IN"
                f" ({','.join('?' * len(groups))}))")
        args += groups
    if versions:
        sql += f" AND d.version IN ({','.join('?' * len(versions))})"
        args += versions
    return store._all(sql + " ORDER BY d.id", tuple(args))


def tagged_unseen(store: Store, task_id: int, groups: list[str]) -> list[Row]:
    """Devices tagged with one of `groups` the platform never heard from (version not
    known), not in the task, with an active sub-task nowhere."""
    return store._all(
        "SELECT DISTINCT g.device AS id, NULL AS version FROM device_tags g WHERE g.tag IN"
        f" ({','.join('?' * len(groups))})"
        " AND NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = g.device)"
        " AND NOT EXISTS (SELECT 1 FROM subtasks s WHERE s.device = g.device AND"
        " (s.task_id = ? OR s.state IN ('pending','upgrading'))) ORDER BY 1",
        (*groups, task_id))


def group_sizes(store: Store, groups: list[str]) -> dict[str, int]:
    """How many devices each of `groups` has (0 for a group nobody is tagged with)."""
    rows = store._all("SELECT tag, COUNT(*) AS n FROM device_tags WHERE tag IN"
                      f" ({','.join('?' * len(groups))}) GROUP BY tag", tuple(groups))
    counts = {r["tag"]: int(r["n"]) for r in rows}
    return {g: counts.get(g, 0) for g in groups}


def product_versions(store: Store, package_id: str) -> list[str]:
    """Versions of the other packages of the same product and module."""
    return [r["version"] for r in store._all(
        "SELECT o.version FROM packages p JOIN packages o ON o.product = p.product AND"
        " o.module = p.module AND o.id != p.id WHERE p.id = ?", (package_id,))]
