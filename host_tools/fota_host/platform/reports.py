"""What each device message does to its sub-task: an inform (the version the device runs)
and a progress report (a step, or a failure). Hostile input is dropped with one log line;
an ordinary progress report of an upgrading sub-task takes the batched fast path."""

from __future__ import annotations

import logging
import time
from typing import Any

from . import ctwing
from .store import ACTIVE_STATES, Row, Store
from .tasks import Tasks

log = logging.getLogger("fota.platform")


class Reports:
    """Device messages applied to their sub-tasks; counts what it accepted and dropped."""

    def __init__(self, store: Store, topics: ctwing.TopicMap, tasks: Tasks) -> None:
        self.store = store
        self.topics = topics
        self.tasks = tasks
        self.dropped = 0
        self.accepted = 0

    def _drop(self, topic: str, why: str) -> None:
        self.dropped += 1
        log.warning("dropped message on %.80r: %s", topic, why)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one device message; hostile input is dropped with one log line."""
        try:
            report = ctwing.parse_report(self.topics, topic, payload)
            if report is None:
                return  # our own notices or unrelated traffic
            if report.kind == "progress":
                plain = ctwing.plain_progress(report.params)
                if plain is not None and self.tasks.batch.offer(report.task_id, report.device,
                                                                *plain):
                    self.accepted += 1
                    return
                fields: tuple[Any, Any] = ctwing.progress_fields(report.params)
            else:
                fields = ctwing.inform_fields(report.params)
        except ctwing.Dropped as exc:
            return self._drop(topic, str(exc))
        try:
            with self.store.lock:
                try:
                    self.tasks.batch.write(self.store)
                    self.tasks.batch.hot.pop(report.task_id, None)
                    if report.kind == "inform":
                        self._inform(topic, report, *fields)
                    else:
                        self._progress(topic, report, *fields)
                    self.tasks.flush_if_due()
                except BaseException:
                    self.store.rollback()
                    raise
        except Exception as exc:  # a bug must not kill the MQTT thread
            log.exception("error handling %r", topic)
            self._drop(topic, f"error {exc!r}")

    def _inform(self, topic: str, report: ctwing.Report, version: str, module: str) -> None:
        device, task_id = report.device, report.task_id
        self.accepted += 1
        self.store.touch_device(device, version, module)
        if task_id == -1:
            sub = self.store.running_subtask_of(device)
            if sub is None:
                return self.store.commit()
            self.tasks.batch.hot.pop(sub["id"], None)
            if version == sub["target"]:
                self.tasks.finish(sub, "succeeded", 100, f"already on {version}")
            elif sub["push_due"] is None:
                # (Re)connected without an upgrade in hand (taskId -1): send the notice
                # (again). A retry waiting for its backoff keeps its time.
                self.store.update_subtask(sub["id"], state="pending", push_due=time.time(),
                                          desc=f"device online on {version}")
            return self.store.commit()
        sub = self._own_subtask(topic, device, task_id)
        if sub is None:
            return
        if sub["state"] not in ACTIVE_STATES:
            log.info("inform for %s sub-task %d of %s ignored", sub["state"], task_id, device)
            return self.store.commit()
        if version == sub["target"]:
            self.tasks.finish(sub, "succeeded", 100, f"upgraded to {version}")
        else:
            self.tasks.fail(sub, f"device reports version {version}, expected {sub['target']}")
        self.store.commit()

    def _own_subtask(self, topic: str, device: str, task_id: int) -> Row | None:
        sub = self.store.subtask_with_target(task_id)
        if sub is None:
            self._drop(topic, f"unknown taskId {task_id}")
            return None
        if sub["device"] != device:
            self._drop(topic, f"taskId {task_id} belongs to another device")
            return None
        return sub

    def _progress(self, topic: str, report: ctwing.Report, step: int, desc: str) -> None:
        device = report.device
        sub = self._own_subtask(topic, device, report.task_id)
        if sub is None:
            return
        self.accepted += 1
        self.store.touch_device(device)
        now = time.time()
        counted: dict[str, Any] = {"reports": sub["reports"] + 1, "last_report": now}
        if sub["state"] not in ACTIVE_STATES:
            self.store.update_subtask(sub["id"], **counted)
            return
        if step < 0:
            self.store.update_subtask(sub["id"], **counted)
            self.tasks.fail(sub, desc or f"device reported step {step}", step)
            return self.store.commit()
        self.store.update_subtask(sub["id"], state="upgrading", step=step, desc=desc,
                                  push_due=None, **counted)
        self.tasks.batch.hot[sub["id"]] = device
        # Progress rows are committed by the periodic flush; a state change commits now.
        if sub["state"] != "upgrading":
            self.store.commit()
