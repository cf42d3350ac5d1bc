"""What each device message does to its sub-task: an inform (the version the device runs)
and a progress report (a step, or a failure). Hostile input is dropped with one log line
(rate-limited per device); an ordinary progress report of an upgrading sub-task takes the
batched fast path.

Device text is checked at the edge: a version or module that is not valid Unicode, holds a
control character or is too long drops the message; a `desc` is kept with such characters
replaced (U+FFFD), so a failure report is never lost for its words. Each message's changes
are applied in a savepoint of their own: one that fails can't undo anyone else's.

`on_message` returns False when the store could not be written (disk full): the message is
then not done, and must be neither acknowledged nor dropped (see `Platform.on_message`).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from . import ctwing
from .lograte import LogRate
from .store import ACTIVE_STATES, Row, StorageError, Store
from .tasks import Tasks
from .validate import MAX_TEXT, MAX_VERSION, device_text, shown

log = logging.getLogger("fota.platform")

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_desc(desc: str) -> str:
    """A device's `desc`, kept: control characters and lone surrogates become U+FFFD."""
    return _UNSAFE.sub("\ufffd", desc[:MAX_TEXT])


class RateLimitedLog:
    """Drop lines per source, through `lograte.LogRate`: a few per 10 s, then one summary
    (`... and N more from SOURCE in the last 10 s`)."""

    def __init__(self, window: float = 10.0, burst: int = 3) -> None:
        self.rate = LogRate(log, window=window, burst=burst)

    def __call__(self, source: str, line: str) -> None:
        self.rate.log(logging.WARNING, shown(source), "%s", line)


class Reports:
    """Device messages applied to their sub-tasks; counts what it accepted and dropped."""

    def __init__(self, store: Store, topics: ctwing.TopicMap, tasks: Tasks) -> None:
        self.store = store
        self.topics = topics
        self.tasks = tasks
        self.dropped = 0
        self.accepted = 0
        self.drop_log = RateLimitedLog()

    def _drop(self, topic: str, why: str) -> None:
        self.dropped += 1
        parsed = self.topics.parse(topic)
        self.drop_log(parsed[0] if parsed else "?",
                      f"dropped message on {shown(topic)}: {shown(why, 200)}")

    def on_message(self, topic: str, payload: bytes) -> bool:
        """Handle one device message: True when done (stored, or dropped with a log line),
        False when the store could not be written (nothing of it was stored)."""
        try:
            report = ctwing.parse_report(self.topics, topic, payload)
            if report is None:
                return True  # our own notices or unrelated traffic
            if report.kind == "progress":
                plain = ctwing.plain_progress(report.params)
                if plain is not None and self.tasks.batch.offer(
                        report.task_id, report.device, plain[0], clean_desc(plain[1])):
                    self.accepted += 1
                    return True
                step, desc = ctwing.progress_fields(report.params)
                fields: tuple[Any, Any] = (step, clean_desc(desc))
            else:
                version, module = ctwing.inform_fields(report.params)
                fields = (device_text(version, "params.version", MAX_VERSION),
                          device_text(module, "params.module", MAX_VERSION))
        except ValueError as exc:  # ctwing.Dropped, or device text refused
            self._drop(topic, str(exc))
            return True
        try:
            with self.store.lock:
                self.tasks.batch.write(self.store)
                try:
                    with self.store.savepoint():
                        self.tasks.batch.hot.pop(report.task_id, None)
                        if report.kind == "inform":
                            self._inform(topic, report, *fields)
                            changed = True
                        else:
                            changed = self._progress(topic, report, *fields)
                except StorageError:
                    raise
                except Exception as exc:  # a bug must not kill the MQTT thread
                    log.debug("error handling %r", topic, exc_info=True)
                    self._drop(topic, f"error {exc!r}")
                    return True
                # A state change is committed before the message counts as done; progress
                # of an upgrading sub-task is committed by the periodic flush.
                if changed:
                    self.store.commit()
                else:
                    self.tasks.flush_if_due()
        except StorageError as exc:
            self.store.rollback()
            self.drop_log("(store)", f"{exc}: message on {shown(topic)} kept unacknowledged")
            return False
        return True

    def _inform(self, topic: str, report: ctwing.Report, version: str, module: str) -> None:
        device, task_id = report.device, report.task_id
        self.accepted += 1
        self.store.touch_device(device, version, module)
        if task_id == -1:
            sub = self.store.running_subtask_of(device)
            if sub is None:
                return
            self.tasks.batch.hot.pop(sub["id"], None)
            if version == sub["target"]:
                self.tasks.finish(sub, "succeeded", 100, f"already on {version}")
            elif sub["push_due"] is None and self._stale(sub):
                # not now, but once the grace has passed with no report: a device that
                # really lost the notice still gets it (a report meanwhile clears this)
                grace = self.tasks.settings.retry_backoff
                self.store.update_subtask(sub["id"], push_due=sub["notified"] + grace)
                log.info("inform of %s from %s within %gs of its notice (sub-task %d):"
                         " older than the notice, sent again only if no report comes by"
                         " then", shown(version), shown(device), grace, sub["id"])
            elif sub["push_due"] is None:
                # (Re)connected without an upgrade in hand (taskId -1): send the notice
                # (again). A retry waiting for its backoff keeps its time.
                # back to pending: the old step (of a download cut short) no longer holds
                self.store.update_subtask(sub["id"], state="pending", step=0,
                                          push_due=time.time(),
                                          desc=f"device online on {version}")
            return
        sub = self._own_subtask(topic, device, task_id)
        if sub is None:
            return
        if sub["state"] not in ACTIVE_STATES:
            return self._late_inform(sub, version)
        if version == sub["target"]:
            self.tasks.finish(sub, "succeeded", 100, f"upgraded to {version}")
        else:
            self.tasks.fail(sub, f"device reports version {version}, expected {sub['target']}")

    def _stale(self, sub: Row) -> bool:
        """A connect-time inform handled within the grace (the retry backoff) after the
        notice went out, with no report since: most likely published before the notice
        reached the device (informs waiting in a backlog), so a notice again would be a
        duplicate. A device that really rebooted and lost the notice gets it when the
        grace has passed with no report from it. Once the device reported progress, an inform -1
        comes after the notice: it rebooted mid-download and gets the notice again."""
        notified = sub.get("notified")
        return (sub["state"] == "pending" and notified is not None
                and time.time() - notified < self.tasks.settings.retry_backoff)

    def _late_inform(self, sub: Row, version: str) -> None:
        """An inform for a sub-task already ended: what the device runs is recorded. The
        protocol has no cancel message: a device that had the image when its sub-task was
        cancelled (or timed out) may still install it and inform the new version."""
        state, target = sub["state"], sub["target"]
        if version == target and state != "succeeded":
            self.tasks.finish(sub, "succeeded", 100,
                              f"upgraded to {version} after the sub-task was {state}")
            self.tasks._tell(logging.INFO, "task %d: %s runs %s although its sub-task %d was"
                             " %s: recorded as succeeded", sub["task_id"],
                             shown(sub["device"]), shown(version), sub["id"], state)
        elif version != target and state == "succeeded":
            self.store.update_subtask(sub["id"], state="failed", step=-1,
                                      desc=f"device runs {version} again after the upgrade"
                                      f" to {target} (rolled back)")
            self.tasks._tell(logging.WARNING, "task %d: %s informs %s after succeeding with"
                             " %s: recorded as failed (rolled back)", sub["task_id"],
                             shown(sub["device"]), shown(version), shown(target))
        else:
            log.info("inform of %s for %s sub-task %d of %s: nothing to change",
                     shown(version), state, sub["id"], shown(sub["device"]))

    def _own_subtask(self, topic: str, device: str, task_id: int) -> Row | None:
        sub = self.store.subtask_with_target(task_id)
        if sub is None:
            self._drop(topic, f"unknown taskId {task_id}")
            return None
        if sub["device"] != device:
            self._drop(topic, f"taskId {task_id} belongs to another device")
            return None
        return sub

    def _progress(self, topic: str, report: ctwing.Report, step: int, desc: str) -> bool:
        """Apply a progress report; True when it changed the sub-task's state."""
        device = report.device
        sub = self._own_subtask(topic, device, report.task_id)
        if sub is None:
            return False
        self.accepted += 1
        self.store.touch_device(device)
        now = time.time()
        counted: dict[str, Any] = {"reports": sub["reports"] + 1, "last_report": now}
        if sub["state"] not in ACTIVE_STATES:
            self.store.update_subtask(sub["id"], **counted)
            return False
        if step < 0:
            self.store.update_subtask(sub["id"], **counted)
            self.tasks.fail(sub, desc or f"device reported step {step}", step)
            return True
        self.store.update_subtask(sub["id"], state="upgrading", step=step, desc=desc,
                                  push_due=None, **counted)
        self.tasks.batch.hot[sub["id"]] = device
        return sub["state"] != "upgrading"
