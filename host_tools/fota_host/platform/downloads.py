"""The download gate: a device's request is checked against its sub-task's token, and the
downloads being served can be cut off when their sub-task ends (a token only guards the
start of a request; a cancel must also stop the bytes in flight).

Tokens live in the store, so with instances sharing a PostgreSQL store any instance serves
any download. A cancel made through one instance cuts off its own downloads at once
(`cut_off`); the others find it in the store within `SWEEP_EVERY` seconds (`sweep`, run
by each tick) and cut off theirs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from .packages import PackageStore
from .store import ACTIVE_STATES, Store
from .validate import same_secret

log = logging.getLogger("fota.platform")
SWEEP_EVERY = 1.0  # seconds between two checks of the downloads in flight (shared store)
CUT_STATES = ("cancelled", "timed_out")  # a download of a sub-task in these is stopped


class Downloads:
    """Who may download what (`check`), and the downloads in flight (`watch`, `cut_off`)."""

    def __init__(self, store: Store, packages: PackageStore) -> None:
        self.store = store
        self.packages = packages
        # Downloads being served, by (task id, device): how to cut each one off.
        self._live: dict[tuple[int, str], set[Callable[[], None]]] = {}
        self._live_lock = threading.Lock()
        self._swept = 0.0

    def check(self, file_id: str, task_id: str, device: str,
              token: str) -> tuple[int, str | Path]:
        """(200, path) or (403|404, reason) for a device's download request."""
        path = self.packages.package_path(file_id)
        if path is None:
            return 404, "unknown file"
        try:
            tid = int(task_id)
        except (TypeError, ValueError):
            return 403, "bad task id"
        if not 0 < tid < 2**62:
            return 403, "bad task id"
        with self.store.lock:
            row = self.store.download_grant(tid, device or "")
        if row is None or row["package_id"] != file_id:
            return 403, "no such task for this device and file"
        if not same_secret(token, row["token"] or ""):
            return 403, "bad token"
        if row["token_expires"] < time.time():
            return 403, "token expired"
        if row["state"] not in ACTIVE_STATES:
            return 403, f"sub-task {row['state']}"
        return 200, path

    def watch(self, task_id: int, device: str, stop: Callable[[], None]) -> Callable[[], None]:
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

    def cut_off(self, task_id: int, devices: Iterable[str] | None = None) -> int:
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

    def sweep(self) -> int:
        """Shared store only: cut off the downloads in flight whose sub-task was cancelled
        or timed out (or is gone) through another instance. Returns how many."""
        now = time.monotonic()
        if not self.store.shared or now - self._swept < SWEEP_EVERY:
            return 0
        self._swept = now
        with self._live_lock:
            keys = list(self._live)
        if not keys:
            return 0
        with self.store.lock:
            states = self.store.download_states(keys)
        ended = [k for k in keys if states.get(k, "cancelled") in CUT_STATES]
        return sum(self.cut_off(task_id, {device}) for task_id, device in ended)
