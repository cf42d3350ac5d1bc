"""`Platform`: one data folder's store, packages, tasks, device reports and downloads,
composed. Synchronous and transport-free: the service feeds it MQTT messages
(`on_message`) and clock ticks (`tick`) and hands it a `publish(topic, payload)` callable
for the notices; the admin API, the local client and the tests call its parts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .ctwing import TopicMap
from .downloads import Downloads
from .options import Settings
from .packages import PackageStore
from .reports import Reports
from .store import Store
from .tasks import Publish, Tasks


class Platform:
    def __init__(self, data_dir: Path, settings: Settings | None = None,
                 publish: Publish | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.settings = settings or Settings()
        self.topics = TopicMap(self.settings.topic_prefix)
        self.store = Store(self.data_dir / "platform.db")
        self.packages = PackageStore(self.store, self.data_dir / "packages")
        self.downloads = Downloads(self.store, self.packages)
        self.tasks = Tasks(self.store, self.settings, self.topics, self.downloads, publish)
        self.reports = Reports(self.store, self.topics, self.tasks)

    def on_message(self, topic: str, payload: bytes) -> None:
        self.reports.on_message(topic, payload)

    def tick(self) -> int:
        return self.tasks.tick()

    def list_devices(self) -> list[dict[str, Any]]:
        now = time.time()
        with self.store.lock:
            rows = self.store.devices()
        return [{"id": r["id"], "version": r["version"], "module": r["module"],
                 "first_seen": r["first_seen"], "last_seen": r["last_seen"],
                 "online": now - r["last_seen"] < self.settings.online_window} for r in rows]

    def stats(self) -> dict[str, Any]:
        with self.store.lock:
            self.tasks.batch.write(self.store)
            reports = self.store.total_reports()
        return {"accepted": self.reports.accepted, "dropped": self.reports.dropped,
                "reports": reports}

    def close(self) -> None:
        with self.store.lock:
            self.tasks.batch.write(self.store)
        self.store.close()
