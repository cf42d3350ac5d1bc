"""Fleet-safe rollouts (issue #16): waves, success and failure thresholds, approval,
pause/resume/stop, who gets the task (groups, source versions, continuous), maintenance
windows and the downgrade guard. The rules run in `tick()`, before the task clock sends
notices, under the store lock.

The options and their checks are `rollout_spec.py`'s.

- A rollout task is created held (`tasks.hold`); the first tick after it starts plans it:
  group members are added, devices not on a `from_versions` version (or running a newer
  version than the package, without `allow_downgrade`) are skipped (cancelled, saying
  why), and the sub-tasks are split into waves in insertion order (a count, or a
  percentage of the task's devices, rounded up; the last wave takes the rest). Wave 1 opens.
- A wave whose devices all ended with at least `success_threshold` % of the ended ones
  succeeded lets the next one open (after `fota task approve` with `approve_waves`); one
  below it pauses (or stops) the task (the last one: as the task would finish, too).
- Failure threshold: once `min_ended` devices ended (since the last resume), `max_failures`
  failed ones (a count, or a percentage of the ended ones) pause or stop the task.
- Paused: no notice goes out (devices upgrading finish). Resume accepts the wave that
  paused it and counts failures afresh. Stopped: pending sub-tasks are cancelled.
- Continuous: matching devices that inform while the task runs join its last wave; the
  task runs until its end time or a stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import fleetstats, windows
from . import store_rollouts as sr
from .rollout_spec import IMPLICIT, parse_spec, threshold_failure, wave_failure, wave_sizes
from .store import Row, Store
from .tasks import Tasks
from .validate import PlatformError, check_device_id, check_group_name, int_id, text

log = logging.getLogger("fota.platform")

SCAN_EVERY = 1.0  # seconds between looks for devices a continuous task may take


class Rollouts:
    """The rollout rules of one store's tasks; `clock` is the time the rules see."""

    def __init__(self, store: Store, tasks: Tasks, clock: Callable[[], float] = time.time):
        self.store = store
        self.tasks = tasks
        self.clock = clock
        self._scanned: dict[int, float] = {}
        tasks.keeps_running = self._keeps_running

    def _keeps_running(self, task_id: int) -> bool:
        """True: a task with no active sub-task left stays (continuous; or a threshold trips)."""
        row = sr.rollout(self.store, task_id)
        if row is None or row["spec"]["continuous"]:  # runs until its end or a stop (docs)
            return row is not None
        reason = row["planned"] and (self._failure_reason(row)
                                     or self._wave_reason(row, row["opened"]))
        if reason:
            self._trip(task_id, row["spec"], reason)
        return bool(reason)

    # == what an operator does ==========================================================
    def create_task(self, body: dict[str, Any]) -> dict[str, Any]:
        spec = parse_spec(body)
        allow = bool(body.get("allow_downgrade"))
        with self.store.lock:
            package = body.get("package")
            pkg = self.store.package(package) if isinstance(package, str) else None
            if pkg is not None and not allow:
                newer = [v for v in sr.product_versions(self.store, pkg["id"])
                         if fleetstats.is_older(pkg["version"], v)]
                if newer:
                    raise PlatformError(
                        f"package {pkg['id']} is version {pkg['version']}, older than"
                        f" {max(newer, key=fleetstats.version_key)} of the same product: a"
                        " fleet rollback needs allow_downgrade (--allow-downgrade)", 409)
            task = self.tasks.create_task(package=package, name=body.get("name"),
                                          desc=body.get("desc"), start=body.get("start"),
                                          end=body.get("end"))
            if spec is not None:
                sr.insert_rollout(self.store, task["id"], spec)
                self.store.commit()
        return self.get_task(task["id"])

    def _row(self, task_id: Any) -> tuple[Row, Row | None]:
        tid = int_id(task_id, "task id")
        task = self.store.task(tid)
        if task is None:
            raise PlatformError(f"unknown task {task_id!r}", 404)
        return task, sr.rollout(self.store, tid)

    def start_task(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task, row = self._row(task_id)
            if row is not None and task["state"] == "not_started":
                self._add_matching(task["id"], row["spec"], 0.0, self.clock())
                self.store.commit()
                if not self.store.subtasks(task["id"]) and row["spec"]["groups"] and \
                        not row["spec"]["continuous"]:
                    self._no_members(task, row["spec"])
                if row["spec"]["continuous"] and not self.store.subtasks(task["id"]):
                    self.tasks._start(task)  # a continuous task may start with no device
                    self.store.commit()
                    return self.get_task(task["id"])
        self.tasks.start_task(task_id)
        return self.get_task(task_id)

    def _no_members(self, task: Row, spec: dict[str, Any]) -> None:
        """The 409 of a group task nobody joined: which group is empty, or why none did."""
        sizes = sr.group_sizes(self.store, spec["groups"])
        empty = [g for g, n in sizes.items() if n == 0]
        if len(empty) == len(sizes):
            raise PlatformError(
                f"task {task['id']} has no devices: group {', '.join(empty)} has no devices"
                f" (tag them: fota device tag DEVICE... --add {empty[0]}) and none were"
                " added by id (fota task add-devices)", 409)
        raise PlatformError(
            f"task {task['id']} has no devices: none of the {sum(sizes.values())} device(s)"
            f" of group {', '.join(g for g, n in sizes.items() if n)} can join (each already"
            " runs the package's version, runs no --from-version, or has an active sub-task"
            " in another task)", 409)

    def pause(self, task_id: Any, reason: str = "paused by the operator") -> dict[str, Any]:
        with self.store.lock:
            task, row = self._row(task_id)
            if task["state"] != "running":
                raise PlatformError(f"task {task['id']} is {task['state']}: only a running"
                                    " task can be paused", 409)
            if row is None:  # a plain task gets the rollout rules (one wave) to keep its reason
                sr.insert_rollout(self.store, task["id"], parse_spec(IMPLICIT) or {})
            self._halt(task["id"], "paused", reason)
            self.store.commit()
        return self.get_task(task_id)

    def resume(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task, row = self._row(task_id)
            if task["state"] != "paused" or row is None:
                raise PlatformError(f"task {task['id']} is {task['state']}, not paused", 409)
            failed, ended = self._totals(task["id"])
            sr.set_task_state(self.store, task["id"], "running")
            sr.update_rollout(self.store, task["id"], reason=None, failed_base=failed,
                              ended_base=ended, accepted=row["opened"] or 1)
            self.tasks._tell(logging.INFO, "task %d resumed", task["id"])
            self.tasks._maybe_finish(task["id"])
            self.store.commit()
        return self.get_task(task_id)

    def stop(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task, row = self._row(task_id)
            if task["state"] in ("finished", "stopped"):
                raise PlatformError(f"task {task['id']} is already {task['state']}", 409)
            if row is None:
                sr.insert_rollout(self.store, task["id"], parse_spec(IMPLICIT) or {})
            reason = (row or {}).get("reason") or "stopped by the operator"
            if task["state"] == "paused":
                reason = f"stopped by the operator (paused: {reason})"
            self._halt(task["id"], "stopped", reason)
            self.store.commit()
        return self.get_task(task_id)

    def approve(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task, row = self._row(task_id)
            if row is None or task["state"] not in ("running", "paused", "not_started"):
                raise PlatformError(f"task {task['id']} has no wave waiting for approval", 409)
            nxt = max(row["opened"], 1) + 1
            if nxt > max(len(row["spec"]["waves"]), 1) or row["approved"] >= nxt:
                raise PlatformError(f"task {task['id']} has no wave waiting for approval", 409)
            sr.update_rollout(self.store, task["id"], approved=nxt)
            self.tasks._tell(logging.INFO, "task %d: wave %d approved", task["id"], nxt)
            self.store.commit()
        return self.get_task(task_id)

    def _halt(self, task_id: int, state: str, reason: str) -> None:
        now = time.time()  # stored times are the wall clock's; `clock` is for the rules
        sr.set_task_state(self.store, task_id, state, now if state == "stopped" else None)
        sr.update_rollout(self.store, task_id, reason=reason, waiting=None)
        if state == "stopped":
            n = sr.cancel_pending(self.store, task_id, "task stopped", now)
            self.tasks._tell(logging.WARNING, "task %d stopped: %s (%d pending sub-task(s)"
                             " cancelled; devices upgrading finish)", task_id, reason, n)
        else:
            self.tasks._tell(logging.WARNING, "task %d paused: %s", task_id, reason)

    # == what is shown ==================================================================
    def get_task(self, task_id: Any) -> dict[str, Any]:
        task = self.tasks.get_task(task_id)
        with self.store.lock:
            row = sr.rollout(self.store, task["id"])
            rows = sr.ended_rows(self.store, task["id"])
        waves = {r["id"]: r["wave"] for r in rows}
        for d in task["devices"]:
            d["wave"] = waves.get(d["subtask"])
        stats = fleetstats.task_stats(rows)
        task["stats"] = {k: v for k, v in stats.items() if k != "waves"}
        task["waves"] = self._waves(row, stats["waves"]) if row else []
        task["rollout"] = row["spec"] if row else None
        task["reason"] = row["reason"] if row and task["state"] in ("paused", "stopped") \
            else None
        task["waiting"] = row["waiting"] if row and task["state"] == "running" else None
        return task

    def _waves(self, row: Row, stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
        spec, by_index = row["spec"], {w["index"]: w for w in stats}
        out = []
        for i, amount in enumerate(spec["waves"] or ["100%"], start=1):
            s = by_index.get(i) or fleetstats.summarize([])
            active = s["devices"] - s["ended"] - s["counts"].get("cancelled", 0)
            if i > row["opened"]:
                awaiting = (row["waiting"] or "").startswith(f"wave {i} ")
                state = "awaiting_approval" if awaiting else "pending"
            elif active:
                state = "running"
            else:
                ok = s["success_rate"] is None or s["success_rate"] * 100 >= \
                    spec["success_threshold"] or row["accepted"] >= i
                state = "succeeded" if ok else "failed"
            last = i == len(spec["waves"] or [1])
            out.append({"index": i, "amount": "rest" if last else amount, **s,
                        "size": s["devices"], "state": state})
        return out

    def task_stats(self, task_id: Any) -> dict[str, Any]:
        task = self.get_task(task_id)
        return {"id": task["id"], "state": task["state"], **task["stats"],
                "waves": task["waves"]}

    def fleet_versions(self) -> dict[str, Any]:
        with self.store.lock:
            return fleetstats.fleet_versions(sr.version_counts(self.store))

    def tag(self, devices: list[Any], add: Any = None, remove: Any = None) -> list[dict[str, Any]]:
        if (add is None) == (remove is None):
            raise PlatformError("give exactly one of add or remove (a group name)")
        group = check_group_name(text(add if add is not None else remove, "group",
                                     required=True))
        if not isinstance(devices, list) or not devices or len(devices) > 10_000:
            raise PlatformError("devices must be a non-empty list of device ids")
        devices = [check_device_id(d) for d in devices]  # all valid, or nothing tagged
        results = []
        with self.store.lock:
            for dev in devices:
                (sr.add_tag if add is not None else sr.remove_tag)(self.store, dev, group)
                results.append({"device": dev, "ok": True, "tags": sr.tags_of(self.store, dev)})
            self.store.commit()
        return results

    def device_tags(self) -> dict[str, list[str]]:
        with self.store.lock:
            return sr.all_tags(self.store)

    # == the rules (tick) ===============================================================
    def tick(self) -> None:
        now = self.clock()
        with self.store.lock:
            try:
                for row in sr.live_rollouts(self.store):
                    if row["state"] == "running":
                        self._step(row, now)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise

    def _totals(self, task_id: int) -> tuple[int, int]:
        counts = self.store.state_counts(task_id)
        failed = counts.get("failed", 0) + counts.get("timed_out", 0)
        return failed, failed + counts.get("succeeded", 0)

    def _step(self, row: Row, now: float) -> None:
        tid, spec, planned = row["task_id"], row["spec"], row["planned"]
        if not planned:
            self._plan(row, now)
            row = {**row, **(sr.rollout(self.store, tid) or {})}
        last = max(len(spec["waves"]), 1)
        if spec["continuous"] and now - self._scanned.get(tid, 0.0) >= SCAN_EVERY:
            self._scanned[tid] = now
            self._add_matching(tid, spec, row["started"] or 0.0, now)
        fresh = sr.unplanned(self.store, tid)  # added since the plan: the last wave
        if fresh:
            self._filter(tid, spec, fresh, now)
            sr.set_wave(self.store, [r["id"] for r in sr.unplanned(self.store, tid)], last,
                        hold=row["opened"] < last)
        if not planned or fresh:  # every device skipped: nothing else would end the task
            self.tasks._maybe_finish(tid)
            if self.store.task(tid)["state"] != "running":  # type: ignore[index]
                return None
        reason = self._failure_reason(row)
        if reason:
            return self._trip(tid, spec, reason)
        waiting = self._advance(row, spec, last, now)
        closed = False
        if spec["windows"] and self.store.task(tid)["state"] == "running":  # type: ignore[index]
            wins = [windows.parse(w) for w in spec["windows"]]
            closed = not windows.open_now(wins, now)
            if closed and waiting is None:
                waiting = row["waiting"]
                if not (waiting or "").startswith("outside"):
                    waiting = windows.describe_wait(wins, now)
                    self.tasks._tell(logging.INFO, "task %d waits: %s", tid, waiting)
        sr.set_task_hold(self.store, tid, closed)
        if waiting != row["waiting"]:
            sr.update_rollout(self.store, tid, waiting=waiting)

    def _advance(self, row: Row, spec: dict[str, Any], last: int, now: float) -> str | None:
        """Open the next wave when the current one succeeded; what the task waits for."""
        tid, opened = row["task_id"], row["opened"]
        if opened >= last:
            return None
        counts = self._wave_counts(tid, opened)
        reason = self._wave_reason(row, opened, counts)  # None while the wave runs
        if reason:
            return self._trip(tid, spec, reason)
        if any(counts.get(s) for s in ("pending", "upgrading")):
            return None
        nxt = opened + 1
        if spec["approve_waves"] and row["approved"] < nxt:
            if not (row["waiting"] or "").startswith(f"wave {nxt} "):
                self.tasks._tell(logging.INFO, "task %d: wave %d succeeded; wave %d waits for"
                                 " approval", tid, opened, nxt)
            return f"wave {nxt} waits for approval (fota task approve {tid})"
        sr.open_wave(self.store, tid, nxt, time.time())
        sr.update_rollout(self.store, tid, opened=nxt)
        self.tasks._tell(logging.INFO, "task %d: wave %d opens", tid, nxt)
        return None

    def _wave_counts(self, task_id: int, wave: int) -> dict[str, int]:
        return {r["state"]: r["n"] for r in sr.wave_counts(self.store, task_id)
                if (r["wave"] or 0) == wave}

    def _wave_reason(self, row: Row, wave: int, counts: dict[str, int] | None = None
                     ) -> str | None:
        """Why `wave` fails its task (None while it runs, when it passed or was accepted)."""
        counts = self._wave_counts(row["task_id"], wave) if counts is None else counts
        return None if row["accepted"] >= wave else wave_failure(row["spec"], wave, counts)

    def _failure_reason(self, row: Row) -> str | None:
        """The failure threshold, counted since the last resume, when reached."""
        failed, ended = self._totals(row["task_id"])
        return threshold_failure(row["spec"], failed - row["failed_base"],
                                 ended - row["ended_base"])

    def _trip(self, task_id: int, spec: dict[str, Any], reason: str) -> None:
        self._halt(task_id, "stopped" if spec["on_failure"] == "stop" else "paused", reason)

    def _plan(self, row: Row, now: float) -> None:
        tid, spec = row["task_id"], row["spec"]
        self._add_matching(tid, spec, 0.0, now)
        self._filter(tid, spec, sr.unplanned(self.store, tid), now)
        pending, start = [s["id"] for s in sr.unplanned(self.store, tid)], 0
        sizes = wave_sizes(spec, len(pending))
        for i, size in enumerate(sizes, start=1):
            sr.set_wave(self.store, pending[start:start + size], i, hold=i > 1)
            start += size
        sr.update_rollout(self.store, tid, planned=1, opened=1)
        self.tasks._tell(logging.INFO, "task %d: %d device(s) in %d wave(s) (%s); wave 1"
                         " opens", tid, len(pending), len(sizes),
                         ", ".join(map(str, sizes)))

    def _filter(self, tid: int, spec: dict[str, Any], subs: list[Row], now: float) -> None:
        """Skip (cancel) sub-tasks of devices not on a from-version, or on a newer one."""
        task = self.store.task(tid)
        pkg = self.store.package(task["package_id"]) if task else None
        target = pkg["version"] if pkg else ""
        for s in subs:
            version = self.store.device_version(s["device"])
            why = None
            if spec["from_versions"] and version is not None and \
                    version not in spec["from_versions"]:
                why = f"skipped: runs {version}, not one of {', '.join(spec['from_versions'])}"
            elif not spec["allow_downgrade"] and version and \
                    fleetstats.is_older(target, version):
                why = f"skipped: runs {version}, newer than {target} (allow_downgrade)"
            if why:
                sr.skip(self.store, s["id"], why, time.time())

    def _add_matching(self, tid: int, spec: dict[str, Any], since: float, now: float) -> None:
        """Devices of the task's groups (and, continuous, any matching one seen since
        `since`) join it."""
        if not spec["groups"] and not (spec["continuous"] and since):
            return
        task = self.store.task(tid)
        pkg = self.store.package(task["package_id"]) if task else None
        now = time.time()
        due = now if task and task["state"] == "running" else None
        devs = sr.candidates(self.store, tid, spec["groups"], spec["from_versions"], since)
        if spec["groups"] and not since:  # at the start: members never heard from join too
            devs = sorted(devs + sr.tagged_unseen(self.store, tid, spec["groups"]),
                          key=lambda d: d["id"])
        for dev in devs:
            if pkg and dev["version"] == pkg["version"]:
                continue
            self.store.insert_subtask(tid, dev["id"], due, now)
            self.tasks._tell(logging.INFO, "task %d: %s joins (%s)", tid, dev["id"],
                             "continuous" if since else "group")
