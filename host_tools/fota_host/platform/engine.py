"""The platform's rules: tasks, sub-tasks, downloads, and what each device message does.

`Platform` is synchronous and transport-free: the service feeds it MQTT messages
(`on_message`) and clock ticks (`tick`), and hands it a `publish(topic, payload)` callable
for upgrade notices. The admin API, the CLI (when no service runs) and the tests call the
same methods. Every method takes the store lock, so the MQTT thread and the HTTP loop can
call in concurrently.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .packages import PackageStore, hash_file
from .store import ACTIVE_STATES, Store
from .validate import (
    DEVICE_RE,
    MAX_TEXT,
    PACKAGE_RE,
    PlatformError,
    TopicMap,
    check_device_id,
    int_id,
    parse_time,
    text,
)

__all__ = ["PACKAGE_RE", "Platform", "PlatformError", "Settings", "TopicMap",
           "check_device_id", "hash_file"]

log = logging.getLogger("fota.platform")

MAX_PAYLOAD = 4096  # bytes; inform and progress messages are a few dozen bytes


@dataclass
class Settings:
    file_base: str = "http://127.0.0.1:8080/file/upgrade"
    topic_prefix: str = "devices/{device}"
    push_rate: float = 600.0  # notices per minute
    retries: int = 0
    retry_backoff: float = 30.0  # seconds, doubled after each retry
    device_timeout: float = 600.0  # seconds without a report from an upgrading device
    token_ttl: float = 3600.0  # seconds a download token stays valid after a notice
    online_window: float = 900.0  # a device seen within this many seconds is "online"
    flush_interval: float = 0.2  # seconds between commits of progress updates


class Platform(PackageStore):
    """The platform over one data folder (store + package files); packages: `PackageStore`."""

    def __init__(self, data_dir: Path, settings: Settings | None = None,
                 publish: Callable[[str, bytes], None] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.files_dir = self.data_dir / "packages"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.settings = settings or Settings()
        self.topics = TopicMap(self.settings.topic_prefix)
        self.store = Store(self.data_dir / "platform.db")
        self.publish = publish
        self._bucket = max(1.0, self.settings.push_rate / 6)
        self._bucket_at = time.monotonic()
        self._last_flush = time.monotonic()
        self.dropped = 0
        self.accepted = 0
        # Fast path for the bulk of the traffic, progress of an upgrading sub-task: the
        # report is kept in `_pending` and written in one batch by the next tick (0.1 s).
        # `_hot` maps the sub-tasks known to be upgrading to their device; any other state
        # change removes its entry (or clears it all), and the batch UPDATE only touches
        # rows still upgrading.
        self._hot: dict[int, str] = {}
        self._pending: dict[int, list[Any]] = {}
        self._pending_lock = threading.Lock()
        # Downloads being served, by (task id, device): how to cut each one off. A token
        # only guards the start of a request; a cancel must also stop bytes in flight.
        self._live: dict[tuple[int, str], set[Callable[[], None]]] = {}
        self._live_lock = threading.Lock()

    # == downloads in flight ===========================================================
    def watch_download(self, task_id: int, device: str,
                       stop: Callable[[], None]) -> Callable[[], None]:
        """Register a download being served; `stop()` is called (from any thread) when
        its sub-task is cancelled or timed out. Returns the call that unregisters it."""
        key = (task_id, device)
        with self._live_lock:
            self._live.setdefault(key, set()).add(stop)

        def done() -> None:
            with self._live_lock:
                stops = self._live.get(key)
                if stops is not None:
                    stops.discard(stop)
                    if not stops:
                        del self._live[key]
        return done

    def _stop_downloads(self, task_id: int, devices: Iterable[str] | None = None) -> int:
        """Cut off the downloads of these sub-tasks (all of the task's when None)."""
        with self._live_lock:
            keys = [k for k in self._live if k[0] == task_id
                    and (devices is None or k[1] in devices)]
            stops = [f for k in keys for f in self._live.pop(k)]
        for stop in stops:
            try:
                stop()
            except Exception:  # a transport already gone
                log.debug("stopping a download failed", exc_info=True)
        if stops:
            log.info("task %d: %d download(s) in flight cut off", task_id, len(stops))
        return len(stops)

    def close(self) -> None:
        with self.store.lock:
            self._apply_pending()
        self.store.close()

    def _apply_pending(self) -> None:
        """Write the batched progress reports (store lock held)."""
        with self._pending_lock:
            pending, self._pending = self._pending, {}
        if pending:
            now = time.time()
            self.store.begin()
            self.store.db.executemany(
                "UPDATE subtasks SET step=?, desc=?, last_report=?, updated=?,"
                " reports=reports+? WHERE id=? AND state='upgrading'",
                [(v[0], v[1], v[2], now, v[3], sid) for sid, v in pending.items()])
            self.store.db.executemany(
                "UPDATE devices SET last_seen=? WHERE id=?",
                [(v[2], v[4]) for v in pending.values()])

    # == tasks =========================================================================
    def create_task(self, *, package: Any, name: Any, desc: Any = None, start: Any = None,
                    end: Any = None) -> dict[str, Any]:
        name = text(name, "name", required=True)
        desc = text(desc, "desc")
        start_at = parse_time(start, "start")
        end_at = parse_time(end, "end")
        if start_at and end_at and end_at <= start_at:
            raise PlatformError("end must be after start")
        with self.store.lock:
            if not isinstance(package, str) or self.store.package(package) is None:
                raise PlatformError(f"unknown package {package!r}", 404)
            task_id = self.store.insert_task(name, package, desc, start_at, end_at)
            self.store.commit()
        return self.get_task(task_id)

    def _task_row(self, task_id: Any) -> dict[str, Any]:
        tid = int_id(task_id, "task id")
        row = self.store.task(tid)
        if row is None:
            raise PlatformError(f"unknown task {task_id!r}", 404)
        return row

    def list_tasks(self) -> list[dict[str, Any]]:
        with self.store.lock:
            self._apply_pending()
            out = []
            for t in self.store.tasks():
                counts = self.store.all(
                    "SELECT state, COUNT(*) AS n FROM subtasks WHERE task_id = ? GROUP BY state",
                    (t["id"],))
                out.append({"id": t["id"], "name": t["name"], "package": t["package_id"],
                            "state": t["state"], "counts": {c["state"]: c["n"] for c in counts}})
            return out

    def get_task(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            self._apply_pending()
            t = self._task_row(task_id)
            pkg = self.store.package(t["package_id"])
            subs = self.store.subtasks(t["id"])
        devices = [{
            "device": s["device"], "state": s["state"], "step": s["step"], "desc": s["desc"],
            "subtask": s["id"], "attempts": s["attempts"], "pushes": s["pushes"],
            "notified": s["notified"], "last_report": s["last_report"],
            "created": s["created"], "updated": s["updated"],
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
            now = time.time()
            seen: set[str] = set()
            try:
                for dev in devices:
                    try:
                        dev = check_device_id(dev)
                        if dev in seen:
                            raise PlatformError("listed twice")
                        seen.add(dev)
                        if self.store.one("SELECT id FROM subtasks WHERE task_id=? AND device=?",
                                          (task["id"], dev)):
                            raise PlatformError("already in this task")
                        busy = self.store.one(
                            "SELECT s.task_id FROM subtasks s JOIN tasks t ON t.id = s.task_id"
                            " WHERE s.device = ? AND s.state IN ('pending','upgrading')"
                            " AND t.state != 'finished'", (dev,))
                        if busy:
                            raise PlatformError(f"busy in task {busy['task_id']}")
                    except PlatformError as exc:
                        results.append({"device": dev if isinstance(dev, str) else repr(dev),
                                        "ok": False, "error": str(exc)})
                        continue
                    due = now if task["state"] == "running" else None
                    cur = self.store.write(
                        "INSERT INTO subtasks (task_id, device, state, desc, push_due, created,"
                        " updated) VALUES (?, ?, 'pending', 'waiting', ?, ?, ?)",
                        (task["id"], dev, due, now, now))
                    results.append({"device": dev, "ok": True, "subtask": cur.lastrowid})
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        return results

    def import_devices(self, task_id: Any, csv_text: str) -> list[dict[str, Any]]:
        """CSV with a header containing `device` (or `deviceId`), or one id per line."""
        rows = list(csv.reader(io.StringIO(csv_text)))
        rows = [r for r in rows if r and any(c.strip() for c in r)]
        if not rows:
            raise PlatformError("the device list is empty")
        header = [c.strip().lower() for c in rows[0]]
        col = 0
        for key in ("device", "deviceid", "device_id", "id"):
            if key in header:
                col = header.index(key)
                rows = rows[1:]
                break
        devices = [r[col].strip() if len(r) > col else "" for r in rows]
        results = self.add_devices(task_id, devices)
        for i, res in enumerate(results):
            res["row"] = i + 1
        return results

    def start_task(self, task_id: Any) -> dict[str, Any]:
        with self.store.lock:
            task = self._task_row(task_id)
            if task["state"] != "not_started":
                raise PlatformError(f"task {task['id']} is already {task['state']}", 409)
            self._start(task)
            self.store.commit()
        return self.get_task(task["id"])

    def _start(self, task: dict[str, Any]) -> None:
        now = time.time()
        self.store.write("UPDATE tasks SET state='running', started=? WHERE id=?",
                         (now, task["id"]))
        self.store.write("UPDATE subtasks SET push_due=?, updated=? WHERE task_id=? AND"
                         " state='pending'", (now, now, task["id"]))
        self._maybe_finish(task["id"])

    def cancel(self, task_id: Any, devices: Iterable[Any] | None = None) -> list[dict[str, Any]]:
        """Cancel the given devices' sub-tasks, or all active ones when devices is None."""
        results = []
        with self.store.lock:
            self._apply_pending()
            self._hot.clear()
            task = self._task_row(task_id)
            subs = {s["device"]: s for s in self.store.subtasks(task["id"])}
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
                self._maybe_finish(task["id"])
                self.store.commit()
            except BaseException:
                self.store.rollback()
                raise
        self._stop_downloads(task["id"], {r["device"] for r in results if r["ok"]})
        return results

    def _maybe_finish(self, task_id: int) -> None:
        t = self.store.task(task_id)
        if t is None or t["state"] != "running":
            return
        active = self.store.one(
            "SELECT COUNT(*) AS n FROM subtasks WHERE task_id=? AND state IN"
            " ('pending','upgrading')", (task_id,))
        if active["n"] == 0:
            self.store.write("UPDATE tasks SET state='finished', finished=? WHERE id=?",
                             (time.time(), task_id))

    # == devices =======================================================================
    def list_devices(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.store.lock:
            rows = self.store.devices()
        return [{"id": r["id"], "version": r["version"], "module": r["module"],
                 "first_seen": r["first_seen"], "last_seen": r["last_seen"],
                 "online": now - r["last_seen"] < self.settings.online_window} for r in rows]

    # == downloads =====================================================================
    def check_download(self, file_id: str, task_id: str, device: str,
                       token: str) -> tuple[int, str | Path]:
        """(200, path) or (403|404, reason) for a device's download request."""
        path = self.package_path(file_id)
        if path is None:
            return 404, "unknown file"
        try:
            tid = int(task_id)
        except (TypeError, ValueError):
            return 403, "bad task id"
        if not 0 < tid < 2**62:
            return 403, "bad task id"
        with self.store.lock:
            row = self.store.one(
                "SELECT s.token, s.token_expires, s.state, t.package_id FROM subtasks s"
                " JOIN tasks t ON t.id = s.task_id WHERE s.task_id=? AND s.device=?",
                (tid, device or ""))
        if row is None or row["package_id"] != file_id:
            return 403, "no such task for this device and file"
        given = (token or "").encode("utf-8", "surrogateescape")
        if not row["token"] or not secrets.compare_digest(row["token"].encode(), given):
            return 403, "bad token"
        if row["token_expires"] < time.time():
            return 403, "token expired"
        if row["state"] not in ACTIVE_STATES:
            return 403, f"sub-task {row['state']}"
        return 200, path

    # == MQTT ==========================================================================
    def _drop(self, topic: str, why: str) -> None:
        self.dropped += 1
        log.warning("dropped message on %.80r: %s", topic, why)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one device message; hostile input is dropped with one log line."""
        parsed = self.topics.parse(topic)
        if parsed is None:
            return  # our own notices or unrelated traffic
        device, kind = parsed
        if not DEVICE_RE.match(device):
            return self._drop(topic, "bad device id")
        if len(payload) > MAX_PAYLOAD:
            return self._drop(topic, f"payload of {len(payload)} bytes")
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return self._drop(topic, "not JSON")
        if not isinstance(msg, dict) or not isinstance(msg.get("params"), dict):
            return self._drop(topic, "not an object with params")
        task_id = msg.get("taskId")
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            return self._drop(topic, "taskId is not an integer")
        if not -1 <= task_id < 2**62:
            return self._drop(topic, "taskId out of range")
        params = msg["params"]
        if kind == "progress" and self._hot.get(task_id) == device:
            step = params.get("step")
            desc = params.get("desc", "")
            if type(step) is int and 0 <= step <= 100 and type(desc) is str:
                now = time.time()
                with self._pending_lock:
                    entry = self._pending.get(task_id)
                    if entry is None:
                        self._pending[task_id] = [step, desc[:MAX_TEXT], now, 1, device]
                    else:
                        entry[0], entry[1], entry[2] = step, desc[:MAX_TEXT], now
                        entry[3] += 1
                    self.accepted += 1
                return
        try:
            with self.store.lock:
                try:
                    self._apply_pending()
                    self._hot.pop(task_id, None)
                    if kind == "inform":
                        self._inform(topic, device, task_id, params)
                    else:
                        self._progress(topic, device, task_id, params)
                    self._flush_if_due()
                except BaseException:
                    self.store.rollback()
                    raise
        except Exception as exc:  # a bug must not kill the MQTT thread
            log.exception("error handling %r", topic)
            self._drop(topic, f"error {exc!r}")

    def _inform(self, topic: str, device: str, task_id: int, params: dict) -> None:
        version = params.get("version")
        module = params.get("module", "MCU")
        if not isinstance(version, str) or not 0 < len(version) <= 64:
            return self._drop(topic, "params.version is not a string")
        if not isinstance(module, str) or len(module) > 64:
            return self._drop(topic, "params.module is not a string")
        self.accepted += 1
        self.store.touch_device(device, version, module)
        now = time.time()
        if task_id == -1:
            sub = self.store.one(
                "SELECT s.*, p.version AS target, t.state AS task_state FROM subtasks s"
                " JOIN tasks t ON t.id = s.task_id JOIN packages p ON p.id = t.package_id"
                " WHERE s.device = ? AND s.state IN ('pending','upgrading') AND"
                " t.state = 'running' ORDER BY s.id LIMIT 1", (device,))
            if sub is None:
                return self.store.commit()
            self._hot.pop(sub["id"], None)
            if version == sub["target"]:
                self._finish(sub, "succeeded", 100, f"already on {version}")
            elif sub["push_due"] is None:
                # (Re)connected without an upgrade in hand (taskId -1): send the notice
                # (again). A retry waiting for its backoff keeps its time.
                self.store.update_subtask(sub["id"], state="pending", push_due=now,
                                          desc=f"device online on {version}")
            return self.store.commit()
        sub = self._own_subtask(topic, device, task_id)
        if sub is None:
            return
        if sub["state"] not in ACTIVE_STATES:
            log.info("inform for %s sub-task %d of %s ignored", sub["state"], task_id, device)
            return self.store.commit()
        if version == sub["target"]:
            self._finish(sub, "succeeded", 100, f"upgraded to {version}")
        else:
            self._fail(sub, f"device reports version {version}, expected {sub['target']}")
        self.store.commit()

    def _own_subtask(self, topic: str, device: str, task_id: int) -> dict[str, Any] | None:
        sub = self.store.one(
            "SELECT s.*, p.version AS target FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.id = ?", (task_id,))
        if sub is None:
            self._drop(topic, f"unknown taskId {task_id}")
            return None
        if sub["device"] != device:
            self._drop(topic, f"taskId {task_id} belongs to another device")
            return None
        return sub

    def _progress(self, topic: str, device: str, task_id: int, params: dict) -> None:
        step = params.get("step")
        desc = params.get("desc", "")
        if not isinstance(step, int) or isinstance(step, bool) or not -100 <= step <= 100:
            return self._drop(topic, "params.step is not an integer in -100..100")
        if not isinstance(desc, str):
            return self._drop(topic, "params.desc is not a string")
        sub = self._own_subtask(topic, device, task_id)
        if sub is None:
            return
        self.accepted += 1
        self.store.touch_device(device)
        now = time.time()
        desc = desc[:MAX_TEXT]
        if sub["state"] not in ACTIVE_STATES:
            self.store.update_subtask(sub["id"], reports=sub["reports"] + 1, last_report=now)
            return
        if step < 0:
            self.store.update_subtask(sub["id"], reports=sub["reports"] + 1, last_report=now)
            self._fail(sub, desc or f"device reported step {step}", step)
            return self.store.commit()
        self.store.update_subtask(sub["id"], state="upgrading", step=step, desc=desc,
                                  reports=sub["reports"] + 1, last_report=now, push_due=None)
        self._hot[sub["id"]] = device
        # Progress rows are committed by the periodic flush; a state change commits now.
        if sub["state"] != "upgrading":
            self.store.commit()

    def _finish(self, sub: dict[str, Any], state: str, step: int, desc: str) -> None:
        self._hot.pop(sub["id"], None)
        self.store.update_subtask(sub["id"], state=state, step=step, desc=desc, push_due=None,
                                  token_expires=0)
        self._maybe_finish(sub["task_id"])

    def _fail(self, sub: dict[str, Any], desc: str, step: int | None = None,
              final_state: str = "failed") -> None:
        step = sub["step"] if step is None else step
        self._hot.pop(sub["id"], None)
        if sub["attempts"] < self.settings.retries:
            delay = self.settings.retry_backoff * (2 ** sub["attempts"])
            self.store.update_subtask(
                sub["id"], state="pending", step=step, attempts=sub["attempts"] + 1,
                desc=f"retry {sub['attempts'] + 1}/{self.settings.retries} in {delay:g}s: {desc}",
                push_due=time.time() + delay, token_expires=0)
        else:
            self._finish(sub, final_state, step, desc)

    # == clock =========================================================================
    def _flush_if_due(self) -> None:
        if time.monotonic() - self._last_flush >= self.settings.flush_interval:
            self.store.commit()
            self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self.store.lock:
            self._apply_pending()
            self.store.commit()
            self._last_flush = time.monotonic()

    def tick(self) -> int:
        """Start scheduled tasks, end expired ones, time out silent devices, push notices.

        Returns the number of notices sent.
        """
        now = time.time()
        sent = 0
        with self.store.lock:
            try:
                self._apply_pending()
                for t in self.store.all("SELECT * FROM tasks WHERE state='not_started' AND"
                                        " start_at IS NOT NULL AND start_at <= ?", (now,)):
                    log.info("task %d starts (scheduled)", t["id"])
                    self._start(t)
                ended = self.store.all("SELECT * FROM tasks WHERE state='running' AND"
                                       " end_at IS NOT NULL AND end_at <= ?", (now,))
                for t in ended:
                    self._hot.clear()
                    self.store.write(
                        "UPDATE subtasks SET state='timed_out', desc='task end time reached',"
                        " push_due=NULL, token_expires=0, updated=? WHERE task_id=? AND state IN"
                        " ('pending','upgrading')", (now, t["id"]))
                    self._maybe_finish(t["id"])
                limit = now - self.settings.device_timeout
                for sub in self.store.all(
                        "SELECT * FROM subtasks WHERE state='upgrading' AND last_report < ?",
                        (limit,)):
                    self._hot.clear()
                    self._fail(sub, f"no report for {self.settings.device_timeout:g}s",
                               final_state="timed_out")
                sent = self._push_due(now)
                self.store.commit()
                self._last_flush = time.monotonic()
            except BaseException:
                self.store.rollback()
                raise
        for t in ended:
            self._stop_downloads(t["id"])
        return sent

    def _push_due(self, now: float) -> int:
        mono = time.monotonic()
        rate = self.settings.push_rate / 60.0
        cap = max(1.0, self.settings.push_rate / 6)
        self._bucket = min(cap, self._bucket + (mono - self._bucket_at) * rate)
        self._bucket_at = mono
        budget = int(self._bucket)
        if budget <= 0 or self.publish is None:
            return 0
        due = self.store.all(
            "SELECT s.id, s.device, s.task_id, s.token, s.token_expires, p.id AS file_id,"
            " p.size, p.version, p.md5, p.sha256, p.sign, p.module"
            " FROM subtasks s JOIN tasks t ON t.id = s.task_id"
            " JOIN packages p ON p.id = t.package_id WHERE s.push_due IS NOT NULL AND"
            " s.push_due <= ? AND s.state = 'pending' AND t.state = 'running'"
            " ORDER BY s.push_due, s.id LIMIT ?", (now, budget))
        for sub in due:
            # A repeated notice (the device reconnected) keeps a live token, so a download in
            # flight can still resume; a retry after a failure gets a new one.
            if sub["token"] and sub["token_expires"] > now:
                token = sub["token"]
            else:
                token = secrets.token_urlsafe(16)
            payload: dict[str, Any] = {
                "size": sub["size"], "version": sub["version"],
                "url": f"{self.settings.file_base}/{sub['file_id']}/{sub['task_id']}",
                "md5": sub["md5"], "token": token, "module": sub["module"],
            }
            if sub["sign"] == "sha256":
                payload["sha256"] = sub["sha256"]
            notice = json.dumps({"taskId": sub["id"], "payload": payload}).encode()
            self.store.write(
                "UPDATE subtasks SET token=?, token_expires=?, push_due=NULL, notified=?,"
                " pushes=pushes+1, last_report=?, updated=?,"
                " desc=CASE WHEN desc LIKE 'retry%' THEN desc ELSE 'notice sent' END"
                " WHERE id=?", (token, now + self.settings.token_ttl, now, now, now, sub["id"]))
            self.store.commit()  # the token must exist before the device can use it
            self.publish(self.topics.topic(sub["device"], "upgrade"), notice)
            self._bucket -= 1
        return len(due)

    def stats(self) -> dict[str, Any]:
        with self.store.lock:
            self._apply_pending()
            reports = self.store.one("SELECT COALESCE(SUM(reports),0) AS n FROM subtasks")["n"]
        return {"accepted": self.accepted, "dropped": self.dropped, "reports": reports}
