"""The task clock's parts: the push rate (`PushRate` in one process, `FleetRate` counted
from the notices every instance recorded in a shared PostgreSQL store), a due notice
claimed and built (`claim_notice`), and the batch of progress reports written once per
tick (`ProgressBatch`)."""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from . import ctwing, variants
from .options import Settings
from .store import Row, Store


class PushRate:
    """A token bucket: `per_minute` notices, in bursts of ten seconds' worth at most."""

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.tokens = self.cap
        self.at = time.monotonic()

    @property
    def cap(self) -> float:
        return max(1.0, self.per_minute / 6)

    def budget(self, at: float | None = None) -> int:
        """Notices that may go out now (each one sent is `spend()`); `at` is for
        `FleetRate`'s sake (this bucket runs on the monotonic clock)."""
        now = time.monotonic()
        self.tokens = min(self.cap, self.tokens + (now - self.at) * self.per_minute / 60.0)
        self.at = now
        return int(self.tokens)

    def spend(self) -> None:
        self.tokens -= 1


class FleetRate:
    """The push rate of every instance sharing the store: at most `per_minute` notices a
    minute, in bursts of ten seconds' worth, counted from the notices recorded in the
    store (`notices`) in the last `window` seconds. Read while holding the clock's turn
    (`Store.clock_turn`), so no other instance sends meanwhile."""

    def __init__(self, store: Store, per_minute: float) -> None:
        self.store = store
        self.per_minute = per_minute

    @property
    def burst(self) -> int:
        return max(1, int(self.per_minute / 6))

    @property
    def window(self) -> float:
        """Seconds in which `burst` notices may go out (ten when `per_minute` >= 6)."""
        return self.burst * 60.0 / self.per_minute

    def budget(self, at: float) -> int:
        """Notices that may go out in a tick whose notices are recorded as sent `at`
        (epoch seconds): the burst less those recorded after `at - window`. The same
        instant, not a later clock reading: counted from later, the window would slide
        past notices that are still within `window` of the ones about to be recorded
        (a tick slowed down between its start and this count let 250 out in 10 s where
        the burst is 150). Notices recorded after `at` count too."""
        return max(0, self.burst - self.store.notices_between(at - self.window,
                                                               at + 86400.0))

    def spend(self) -> None:
        """(the notice's row in the store is what counts)"""


def claim_notice(store: Store, sub: Row, now: float, settings: Settings,
                 desc: str) -> bytes | None:
    """The notice of a due sub-task (`Store.due_notices` row), its token and time recorded
    first, in a savepoint; None when it is no longer pending and due (cancelled, or
    notified through another instance meanwhile): no notice must go out then."""
    # A repeated notice (the device reconnected) keeps a live token, so a download in
    # flight can still resume; a retry after a failure gets a new one.
    if sub["token"] and sub["token_expires"] > now:
        token = sub["token"]
    else:
        token = secrets.token_urlsafe(16)
    with store.savepoint():
        if not store.mark_notified(sub["id"], token, now + settings.token_ttl, now, desc):
            return None
        offer = variants.served(store, sub)  # full, compressed or delta
        return ctwing.notice(sub["id"], settings.file_base, offer, sub["task_id"], token)


class ProgressBatch:
    """The fast path for the bulk of the traffic, progress of an upgrading sub-task: the
    report is kept here and written in one batch by the next tick (0.1 s). `hot` maps the
    sub-tasks known to be upgrading to their device; any other state change removes its
    entry (or clears it all), and the batch only touches rows still upgrading."""

    def __init__(self) -> None:
        self.hot: dict[int, str] = {}
        self._pending: dict[int, list[Any]] = {}
        self._lock = threading.Lock()

    def offer(self, subtask_id: int, device: str, step: int, desc: str) -> bool:
        """Keep this report if its sub-task is upgrading on this device; else False."""
        if self.hot.get(subtask_id) != device:
            return False
        now = time.time()
        with self._lock:
            entry = self._pending.get(subtask_id)
            if entry is None:
                self._pending[subtask_id] = [step, desc, now, 1, device]
            else:
                entry[0], entry[1], entry[2] = step, desc, now
                entry[3] += 1
        return True

    def write(self, store: Store) -> None:
        """Write what is kept (store lock held); a shared store's batch is committed at
        once (no row lock is held across messages there: instances would deadlock). When
        it can't be written the reports are kept for the next try (and it raises)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            store.apply_progress(pending, time.time())
            if store.shared:
                store.commit()
        except BaseException:
            if store.shared:
                store.rollback()
            self._restore(pending)
            raise

    def _restore(self, pending: dict[int, list[Any]]) -> None:
        with self._lock:
            for sid, old in pending.items():
                entry = self._pending.get(sid)
                if entry is None:
                    self._pending[sid] = old
                else:  # a later report came in meanwhile: it stands, the counts add up
                    entry[3] += old[3]


