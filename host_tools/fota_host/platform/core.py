"""`Platform`: one data folder's store, packages, tasks, device reports and downloads,
composed. Synchronous and transport-free: the service feeds it MQTT messages
(`on_message`) and clock ticks (`tick`) and hands it a `publish(topic, payload)` callable
for the notices; the admin API, the local client and the tests call its parts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import datadir
from .ctwing import TopicMap
from .downloads import Downloads
from .options import Settings
from .packages import PackageStore
from .reports import Reports
from .rollouts import Rollouts
from .store import StorageError, Store, is_postgres
from .store_sql import shown_url
from .tasks import Publish, Tasks

log = logging.getLogger("fota.platform")
MAX_HELD = 10_000  # reports held unacknowledged while the disk is full


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC (`2026-11-30T12:00:00Z`)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds") \
        .replace("+00:00", "Z")


class Platform:
    """Opening one takes DIR's lock (a second platform on DIR is refused, naming the first,
    before any file is touched), secures DIR's permissions, refuses a damaged store,
    and removes the leftovers of uploads that were killed."""

    def __init__(self, data_dir: Path, settings: Settings | None = None,
                 publish: Publish | None = None, *, holder: str = "a fota command") -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings()
        self.topics = TopicMap(self.settings.topic_prefix)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.lock = datadir.DataLock(self.data_dir, holder)  # before anything is touched
        try:
            datadir.secure(self.data_dir)
            if not is_postgres(self.settings.db):  # a PostgreSQL store is checked by its server
                datadir.check_store(self.data_dir)
            else:
                datadir.note_store(self.data_dir, shown_url(str(self.settings.db)))
            for name in datadir.clean_uploads(self.data_dir):
                log.info("removed %s, left by an interrupted upload, start or restore", name)
            self.store = Store(self.settings.db if is_postgres(self.settings.db)
                               else self.data_dir / "platform.db")
        except BaseException:
            self.lock.release()
            raise
        files = Path(self.settings.packages_dir) if self.settings.packages_dir \
            else self.data_dir / "packages"
        files.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.packages = PackageStore(self.store, files)
        missing = self.packages.missing_images()
        if missing:
            log.warning("packages whose image file is missing from %s (re-upload them or "
                        "restore the folder from a backup): %s", files, ", ".join(missing))
        self.downloads = Downloads(self.store, self.packages)
        self.tasks = Tasks(self.store, self.settings, self.topics, self.downloads, publish)
        self.reports = Reports(self.store, self.topics, self.tasks)
        self.rollouts = Rollouts(self.store, self.tasks)  # waves, thresholds, windows
        self._held: deque[tuple[str, bytes, Callable[[], None] | None]] = deque()
        self._held_lock = threading.Lock()

    def on_message(self, topic: str, payload: bytes,
                   ack: Callable[[], None] | None = None) -> None:
        """A device message; `ack()` (the broker's QoS 1 acknowledgement) is called once it
        is stored or dropped, never before. When the store can't be written (disk full) the
        message is held, unacknowledged, and retried by each tick in arrival order (so are
        the messages behind it); a platform killed meanwhile gets it again from the broker."""
        with self._held_lock:
            if self._held:
                if len(self._held) < MAX_HELD:
                    self._held.append((topic, payload, ack))
                return  # beyond that, unacknowledged: the broker holds it
            if not self.reports.on_message(topic, payload):
                self._held.append((topic, payload, ack))
                return
        if ack is not None:
            ack()

    def _retry_held(self) -> None:
        with self._held_lock:
            while self._held:
                topic, payload, ack = self._held[0]
                if not self.reports.on_message(topic, payload):
                    return
                self._held.popleft()
                log.info("stored a report held while the disk was full (%d more held)",
                         len(self._held))
                if ack is not None:
                    ack()

    def tick(self) -> int:
        self._retry_held()
        try:  # instances sharing a PostgreSQL store take turns (store.clock_turn)
            with self.store.lock, self.store.clock_turn() as turn:
                if turn:  # the rollout rules hold sub-tasks before notices go out
                    self.rollouts.tick()
                return self.tasks.tick(turn)
        except StorageError as exc:
            self.reports.drop_log("(store)", f"{exc}: task clock held")
            return 0

    def list_devices(self) -> list[dict[str, Any]]:
        """What is known of each device: its last message (`last_seen`, epoch seconds, and
        `last_seen_at`, ISO 8601 UTC) and `online`, which is only claimed while its last
        message is recent (`online_window`) and the platform is connected to the broker."""
        now = time.time()
        # no transport (the store opened by a command while no service runs): not known
        transport = self.tasks.publish is not None or self.tasks.acked_publish is not None
        up = transport and self.tasks.link_up()
        with self.store.lock:
            rows = self.store.devices()
        return [{"id": r["id"], "version": r["version"], "module": r["module"],
                 "first_seen": r["first_seen"], "last_seen": r["last_seen"],
                 "last_seen_at": iso(r["last_seen"]),
                 "online": up and now - r["last_seen"] < self.settings.online_window}
                for r in rows]

    def stats(self) -> dict[str, Any]:
        with self.store.lock:
            self.tasks.batch.write(self.store)
            reports = self.store.total_reports()
        return {"accepted": self.reports.accepted, "dropped": self.reports.dropped,
                "reports": reports, "held": len(self._held)}

    def close(self) -> None:
        try:
            with self.store.lock:
                self.tasks.batch.write(self.store)
            self.store.close()
        finally:
            self.lock.release()
