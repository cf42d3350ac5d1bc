"""Upgrade tasks and their per-device sub-tasks: what an operator does with them, the
sub-task state machine, and the clock (scheduled starts and ends, silent devices, the
notices due, sent no faster than the push rate).

Sub-task states: pending -> upgrading -> succeeded | failed | cancelled | timed_out; a
failure with retries left goes back to pending with a later notice. A task is
not_started -> running -> finished (no active sub-task left). Every method takes the
store lock, so the MQTT thread and the HTTP loop can call in concurrently.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import ctwing
from .downloads import Downloads
from .options import Settings
from .store import ACTIVE_STATES, Row, StorageError, Store
from .tasks_rate import FleetRate, ProgressBatch, PushRate, claim_notice
from .validate import PlatformError, check_device_id, int_id, parse_time, shown, text

log = logging.getLogger("fota.platform")

Publish = Callable[[str, bytes], None]
VARIANT_KINDS = ("compressed", "delta")
# A broker link's publish: `on_ack()` is called once the broker acknowledged (QoS 1 PUBACK).
AckedPublish = Callable[[str, bytes, Callable[[], None]], None]
NOTICE_PUBLISHED = "notice published, no broker acknowledgement yet"
NOTICE_SENT = "notice sent"
NOT_SENT = "not sent: no broker connection"
NOTICES_KEPT = 86400.0  # seconds the record of a notice is kept (the push rate needs 60 at most)
# a tick pushes at most this many (the rest next tick): it holds store.lock, which the MQTT
# thread needs for reports and acks (a burst of thousands starved paho's keepalive)
NOTICES_PER_TICK = 100
__all__ = ["FleetRate", "ProgressBatch", "PushRate", "Tasks"]


class Tasks:
    """The tasks of one store: the operator's operations, the state machine, the clock."""

    def __init__(self, store: Store, settings: Settings, topics: ctwing.TopicMap,
                 downloads: Downloads, publish: Publish | None = None) -> None:
        self.store = store
        self.settings = settings
        self.topics = topics
        self.downloads = downloads
        self.publish = publish
        self.acked_publish: AckedPublish | None = None
        self.link_up: Callable[[], bool] = lambda: True
        self._link_was_up = True
        # one process: a token bucket; instances sharing PostgreSQL: the notices recorded
        self.rate: PushRate | FleetRate = FleetRate(store, settings.push_rate) \
            if store.shared else PushRate(settings.push_rate)
        self._pruned = 0.0
        self.batch = ProgressBatch()
        self._last_flush = time.monotonic()
        self.keeps_running: Callable[[int], bool] = lambda task_id: False  # rollouts.py

    def attach_link(self, publish: AckedPublish, up: Callable[[], bool]) -> None:
        """Notices go out through a broker link: "notice sent" only once the broker
        acknowledged one; none is published while `up()` is False."""
        self.acked_publish = publish
        self.publish = None
        self.link_up = up

    # == what an operator does =========================================================
    def create_task(self, *, package: Any, name: Any, desc: Any = None, start: Any = None,
                    end: Any = None) -> dict[str, Any]:
        name = text(name, "name", required=True)
        desc = text(desc, "desc")
        start_at = parse_time(start, "start")
        end_at = parse_time(end, "end")
        if start_at and end_at and end_at <= start_at:
            raise PlatformError("end must be after start", 422)
        with self.store.lock:
            self.downloads.packages.require_image(package)  # 404 unknown, 409 file missing
            task_id = self.store.insert_task(name, package, desc, start_at, end_at)
            self.store.commit()
        return self.get_task(task_id)

    def _task_row(self, task_id: Any) -> Row:
        tid = int_id(task_id, "task id")
        row = self.store.task(tid)
        if row is None:
            raise PlatformError(f"unknown task {task_id!r}", 404)
        return row

    def list_tasks(self) -> list[dict[str, Any]]:
        with self.store.lock:
            self.batch.write(self.store)
            return [{"id": t["id"], "name": t["name"], "package": t["package_id"],
                     "state": t["state"], "counts": self.store.state_counts(t["id"])}
                    for t in self.store.tasks()]

    def get_task(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            self.batch.write(self.store)
            t = self._task_row(task_id)
            pkg = self.store.package(t["package_id"])
            subs = self.store.subtasks(t["id"])
        devices = [{
            "device": s["device"], "state": s["state"], "step": s["step"], "desc": s["desc"],
            "subtask": s["id"], "attempts": s["attempts"], "pushes": s["pushes"],
            "notified": s["notified"], "last_report": s["last_report"],
            "created": s["created"], "updated": s["updated"], "kind": s.get("kind"),
        } for s in subs]
        return {
            "id": t["id"], "state": t["state"], "name": t["name"], "desc": t["desc"],
            "package": t["package_id"], "version": pkg["version"] if pkg else None,
            "start": t["start_at"], "end": t["end_at"], "created": t["created"],
            "started": t["started"], "finished": t["finished"], "devices": devices,
        }

    def add_devices(self, task_id: Any, devices: Iterable[Any]) -> list[dict[str, Any]]:
        """Add devices; one result per device: {"device", "ok", "error"?, "subtask"?}."""
        results = []
        with self.store.lock:
            task = self._task_row(task_id)
            if task["state"] == "finished":
                raise PlatformError(f"task {task['id']} is finished", 409)
            self.downloads.packages.require_image(task["package_id"])
            now = time.time()
            seen: set[str] = set()
            try:
                for dev in devices:
                    try:
                        dev = check_device_id(dev)
                        if dev in seen:
                            raise PlatformError("listed twice")
                        seen.add(dev)
                        if self.store.in_task(task["id"], dev):
                            raise PlatformError("already in this task")
                        busy = self.store.busy_in(dev)
                        if busy is not None:
                            raise PlatformError(f"busy in task {busy}")
                    except PlatformError as exc:
                        results.append({"device": dev if isinstance(dev, str) else repr(dev),
                                        "ok": False, "error": str(exc)})
                        continue
                    due = now if task["state"] == "running" else None
                    sid = self.store.insert_subtask(task["id"], dev, due, now)
                    res: dict[str, Any] = {"device": dev, "ok": True, "subtask": sid}
                    if not self.store.device_seen(dev):
                        res["warning"] = ("never seen by this platform: check the id (it"
                                          " gets its notice once it connects)")
                    results.append(res)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        return results

    def import_devices(self, task_id: Any, csv_text: str) -> list[dict[str, Any]]:
        """CSV with a header containing `device` (or `deviceId`), or one id per line."""
        reader = csv.reader(io.StringIO(csv_text))
        try:  # what the reader refuses (a field over its limit): nothing added, the line named
            rows = [r for r in reader if r and any(c.strip() for c in r)]
        except csv.Error as exc:
            raise PlatformError(f"the device list, line {reader.line_num}: {exc}") from None
        if not rows:
            raise PlatformError("the device list is empty", 422)
        header = [c.strip().lower() for c in rows[0]]
        key = next((k for k in ("device", "deviceid", "device_id", "id") if k in header), None)
        col = header.index(key) if key else 0
        devices = [r[col].strip() if len(r) > col else "" for r in rows[1 if key else 0:]]
        results = self.add_devices(task_id, devices)
        for i, res in enumerate(results):
            res["row"] = i + 1
        return results

    def start_task(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task = self._task_row(task_id)
            if task["state"] != "not_started":
                raise PlatformError(f"task {task['id']} is already {task['state']}", 409)
            if not self.store.subtasks(task["id"]):
                raise PlatformError(f"task {task['id']} has no devices: add devices first", 409)
            self._start(task)
            self.store.commit()
        return self.get_task(task["id"])

    def cancel(self, task_id: Any, devices: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """Cancel the given devices' sub-tasks, or all active ones when devices is None."""
        results = []
        with self.store.lock:
            self.batch.write(self.store)
            self.batch.hot.clear()
            task = self._task_row(task_id)
            subs = {s["device"]: s for s in self.store.lock_subtasks(task["id"])}
            wanted = list(subs) if devices is None else list(devices)
            try:
                for dev in wanted:
                    s = subs.get(dev) if isinstance(dev, str) else None
                    if s is None:
                        results.append({"device": str(dev), "ok": False,
                                        "error": "not in this task"})
                    elif s["state"] not in ACTIVE_STATES:
                        if devices is not None:
                            results.append({"device": dev, "ok": False,
                                            "error": f"already {s['state']}"})
                    else:
                        self.store.update_subtask(s["id"], state="cancelled", desc="cancelled",
                                                  push_due=None, token=None, token_expires=0)
                        results.append({"device": dev, "ok": True})
                self._maybe_finish(task["id"], empty_too=devices is None)
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        for r in results:
            if r["ok"]:
                log.info("task %d: %s cancelled (a device that already has the image may still"
                         " install it: the protocol has no cancel message)", task["id"],
                         shown(r["device"]))
        self.downloads.cut_off(task["id"], {r["device"] for r in results if r["ok"]})
        return results

    # == the state machine (store lock held) ===========================================
    def _start(self, task: Row) -> None:
        if not self.store.set_task_running(task["id"], time.time()):
            return  # started meanwhile (another instance's clock, or an operator there)
        pkg = self.store.package(task["package_id"])
        n = len(self.store.subtasks(task["id"]))
        self._tell(logging.INFO, "task %d starts: %s to version %s, %d device(s)", task["id"],
                   shown(task["name"]), shown(pkg["version"] if pkg else "?"), n)
        self._maybe_finish(task["id"])

    def _maybe_finish(self, task_id: int, empty_too: bool = False) -> None:
        """A running task finishes when none of its sub-tasks is active; a task with no
        devices yet keeps running (devices added later get their notices) until its end
        time or a cancel of all (`empty_too`)."""
        t = self.store.lock_task(task_id)  # PostgreSQL: every other instance's commits seen
        if t is None or t["state"] != "running":
            return
        if self.store.active_count(task_id) == 0 and (empty_too or (
                self.store.subtasks(task_id) and not self.keeps_running(task_id))):
            self.store.set_task_finished(task_id, time.time())
            counts = self.store.state_counts(task_id)
            self._tell(logging.INFO, "task %d finished: %s", task_id,
                       ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or
                       "no devices")

    def _tell(self, level: int, msg: str, *args: Any) -> None:
        """A line of the rollout's story, logged once what it tells is committed."""
        self.store.after_commit(lambda: log.log(level, msg, *args))

    def finish(self, sub: Row, state: str, step: int, desc: str) -> None:
        """The sub-task ends in `state` (succeeded, failed, timed_out)."""
        self.batch.hot.pop(sub["id"], None)
        self.store.update_subtask(sub["id"], state=state, step=step, desc=desc, push_due=None,
                                  token_expires=0)
        self._tell(logging.INFO if state == "succeeded" else logging.WARNING,
                   "task %d: %s %s (sub-task %d): %s", sub["task_id"], shown(sub["device"]),
                   state, sub["id"], shown(desc, 200))
        self._maybe_finish(sub["task_id"])

    def fail(self, sub: Row, desc: str, step: int | None = None,
             final_state: str = "failed") -> None:
        """A failure: pending again for a later notice while retries are left (step back to
        0, the failure is in desc), else final."""
        step = sub["step"] if step is None else step
        self.batch.hot.pop(sub["id"], None)
        if step == -3 and sub.get("kind") in VARIANT_KINDS and not sub.get("full_only"):
            # The device refused the compressed or delta file (a base that is not the
            # one it runs, a decoder it lacks...): the full image next, whatever the
            # retries say, and without using one.
            log.warning("task %d: %s refused the %s image (sub-task %d): %s; the full image"
                        " next", sub["task_id"], sub["device"], sub["kind"], sub["id"], desc)
            self.store.update_subtask(
                sub["id"], state="pending", step=0, full_only=1, push_due=time.time(),
                desc=f"{sub['kind']} image refused ({desc}): the full image next",
                token_expires=0)
            return
        if sub["attempts"] < self.settings.retries:
            delay = self.settings.retry_backoff * (2 ** sub["attempts"])
            self._tell(logging.WARNING, "task %d: %s failed (sub-task %d), retry %d/%d in %gs:"
                       " %s", sub["task_id"], shown(sub["device"]), sub["id"],
                       sub["attempts"] + 1, self.settings.retries, delay, shown(desc, 200))
            self.store.update_subtask(
                sub["id"], state="pending", step=0, attempts=sub["attempts"] + 1,
                desc=f"retry {sub['attempts'] + 1}/{self.settings.retries} in {delay:g}s: {desc}",
                push_due=time.time() + delay, token_expires=0)
        else:
            self.finish(sub, final_state, step, desc)

    # == the clock =====================================================================
    def flush_if_due(self) -> None:
        """Commit a message's progress now and then (SQLite); at once on a shared store,
        where an open transaction's row locks would hold up the other instances."""
        if self.store.shared or \
                time.monotonic() - self._last_flush >= self.settings.flush_interval:
            self.store.commit()
            self._last_flush = time.monotonic()

    def tick(self, turn: bool = True) -> int:
        """Start scheduled tasks, end expired ones, time out silent devices, push notices;
        without the clock's `turn` (another instance sharing the store has it) only write
        the batched progress and check the downloads in flight.

        Returns the number of notices sent.
        """
        now = time.time()
        with self.store.lock:
            try:
                self.batch.write(self.store)
                if not turn:
                    self.store.commit()
                    self._last_flush = time.monotonic()
                    self.downloads.sweep()
                    return 0
                for t in self.store.tasks_to_start(now):
                    log.info("task %d starts (scheduled)", t["id"])
                    self._start(t)
                ended = self.store.tasks_past_end(now)
                for t in ended:
                    self.batch.hot.clear()
                    self._tell(logging.WARNING, "task %d: end time reached, active sub-tasks"
                               " time out", t["id"])
                    self.store.time_out_active(t["id"], now)
                    self._maybe_finish(t["id"], empty_too=True)
                for sub in self.store.silent_upgrading(now - self.settings.device_timeout):
                    self.batch.hot.clear()
                    self.fail(sub, f"no report for {self.settings.device_timeout:g}s",
                              final_state="timed_out")
                sent = self._push_due(now)
                if now - self._pruned >= 60:
                    self._pruned = now
                    self.store.prune_notices(now - NOTICES_KEPT)
                self.store.commit()
                self._last_flush = time.monotonic()
            except BaseException:
                self.store.rollback()
                raise
        for t in ended:
            self.downloads.cut_off(t["id"])
        self.downloads.sweep()
        return sent

    def _push_due(self, now: float) -> int:
        if self.publish is None and self.acked_publish is None:
            return 0
        up = self.link_up()
        if up != self._link_was_up:
            self._link_was_up = up
            if not up:
                log.warning("no broker connection: notices wait until it is back")
        if not up:
            self.store.mark_unsent(self.store.due_notices(now, 1000), NOT_SENT)
            return 0
        budget = min(self.rate.budget(now), NOTICES_PER_TICK)  # `now`: what claims record
        if budget <= 0:
            return 0
        due = self.store.due_notices(now, budget)
        sent = 0
        for sub in due:
            acked = self.acked_publish is not None
            try:  # one sub-task's notice failing must not hold back everyone else's
                notice = claim_notice(self.store, sub, now, self.settings,
                                      NOTICE_PUBLISHED if acked else NOTICE_SENT)
                if notice is None:
                    continue  # cancelled, or notified through another instance meanwhile
            except StorageError:
                raise
            except Exception as exc:
                log.exception("task %d: the notice to %s failed; tried again in 60 s",
                              sub["task_id"], shown(sub["device"]))
                self.store.update_subtask(sub["id"], push_due=now + 60,
                                          desc=f"notice not sent: internal error {exc!r}"[:200])
                continue
            self.store.commit()  # the token must exist before the device can use it
            topic = self.topics.topic(sub["device"], "upgrade")
            if self.acked_publish is not None:
                self.acked_publish(topic, notice, _on_ack(self, sub))
            elif self.publish is not None:
                self.publish(topic, notice)
            self.rate.spend()
            sent += 1
        return sent

    def notice_acked(self, sub: Row) -> None:
        """The broker acknowledged a notice (QoS 1 PUBACK): now it is "sent"."""
        with self.store.lock:
            try:
                self.store.mark_notice_sent(sub["id"], NOTICE_PUBLISHED, NOTICE_SENT)
                self.store.commit()
            except StorageError as exc:
                log.warning("notice to %s acknowledged, not recorded: %s",
                            shown(sub["device"]), exc)
        log.info("task %d: notice sent to %s (sub-task %d, version %s)", sub["task_id"],
                 shown(sub["device"]), sub["id"], shown(sub["version"]))


def _on_ack(tasks: Tasks, sub: Row) -> Callable[[], None]:
    return lambda: tasks.notice_acked(sub)
