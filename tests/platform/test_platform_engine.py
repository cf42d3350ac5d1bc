"""The task engine's rules, driven directly (no broker): push rate, end time, imports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fota_host.platform.engine import Platform, PlatformError, Settings


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, json.loads(payload)))


@pytest.fixture
def plat(tmp_path: Path):
    rec = Recorder()
    p = Platform(tmp_path / "data", Settings(push_rate=6, file_base="http://h/file/upgrade"),
                 publish=rec)
    p.rec = rec
    yield p
    p.close()


def _task(plat: Platform, firmware: Path, devices: list[str], **kw) -> dict:
    pkg = plat.add_package_file(firmware, version="2.0.0")
    task = plat.create_task(package=pkg["id"], name="t", **kw)
    plat.add_devices(task["id"], devices)
    return task


def test_push_rate_limits_notices(plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["p1", "p2", "p3"])
    plat.start_task(task["id"])
    assert plat.tick() == 1  # 6 a minute: a burst of one, then one every 10 s
    assert plat.tick() == 0
    assert [t for t, _ in plat.rec.sent] == ["devices/p1/ota/upgrade"]
    plat._bucket_at -= 10  # ten seconds later
    assert plat.tick() == 1
    assert [t for t, _ in plat.rec.sent][-1] == "devices/p2/ota/upgrade"


def test_end_time_times_out_active_subtasks(plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["e1"], end=time.time() + 0.2)
    plat.start_task(task["id"])
    plat.tick()
    time.sleep(0.3)
    plat.tick()
    detail = plat.get_task(task["id"])
    assert detail["state"] == "finished"
    assert detail["devices"][0]["state"] == "timed_out"
    assert detail["devices"][0]["desc"] == "task end time reached"


def test_started_task_cannot_start_again_and_finished_refuses_devices(
        plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["s1"])
    plat.start_task(task["id"])
    with pytest.raises(PlatformError, match="already running"):
        plat.start_task(task["id"])
    plat.cancel(task["id"], None)
    with pytest.raises(PlatformError, match="finished"):
        plat.add_devices(task["id"], ["s2"])


def test_import_variants(plat: Platform, firmware: Path) -> None:
    pkg = plat.add_package_file(firmware, version="2.0.0")
    task = plat.create_task(package=pkg["id"], name="imp")
    res = plat.import_devices(task["id"], "i1\ni2\n\n i3 \n")
    assert [(r["row"], r["device"], r["ok"]) for r in res] == [
        (1, "i1", True), (2, "i2", True), (3, "i3", True)]
    with pytest.raises(PlatformError, match="empty"):
        plat.import_devices(task["id"], "\n\n")


def test_progress_is_persisted_for_a_new_reader(plat: Platform, firmware: Path,
                                                tmp_path: Path) -> None:
    """Batched progress reaches the database file by the next tick."""
    import sqlite3

    task = _task(plat, firmware, ["b1"])
    plat.start_task(task["id"])
    plat.tick()
    sid = plat.rec.sent[0][1]["taskId"]
    for step in range(1, 51):
        plat.on_message("devices/b1/ota/progress",
                        json.dumps({"taskId": sid, "params": {"step": step, "desc": "d"}}).encode())
    plat.tick()
    db = sqlite3.connect(str(tmp_path / "data" / "platform.db"))
    row = db.execute("SELECT state, step, reports FROM subtasks WHERE id=?", (sid,)).fetchone()
    assert row == ("upgrading", 50, 50)
