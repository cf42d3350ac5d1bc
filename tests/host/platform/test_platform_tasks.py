"""The platform's task rules, driven directly (no broker): push rate, end time, imports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fota_host.platform.core import Platform
from fota_host.platform.options import Settings
from fota_host.platform.validate import PlatformError
from platform_fakes import Recorder


@pytest.fixture
def plat(tmp_path: Path):
    rec = Recorder()
    p = Platform(tmp_path / "data", Settings(push_rate=6, file_base="http://h/file/upgrade"),
                 publish=rec)
    p.rec = rec
    yield p
    p.close()


def _task(plat: Platform, firmware: Path, devices: list[str], **kw) -> dict:
    pkg = plat.packages.add_package_file(firmware, version="2.0.0")
    task = plat.tasks.create_task(package=pkg["id"], name="t", **kw)
    plat.tasks.add_devices(task["id"], devices)
    return task


def test_push_rate_limits_notices(plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["p1", "p2", "p3"])
    plat.tasks.start_task(task["id"])
    assert plat.tick() == 1  # 6 a minute: a burst of one, then one every 10 s
    assert plat.tick() == 0
    assert [t for t, _ in plat.rec.sent] == ["devices/p1/ota/upgrade"]
    plat.tasks.rate.at -= 10  # ten seconds later
    assert plat.tick() == 1
    assert [t for t, _ in plat.rec.sent][-1] == "devices/p2/ota/upgrade"


def test_a_big_burst_goes_out_over_several_ticks(plat: Platform, firmware: Path) -> None:
    """A burst of 250 due notices (the push rate allows them all) goes out 100 a tick, each
    once: between ticks the store lock is free, and a report that arrives meanwhile is
    applied while the rest of the burst still waits (the whole burst under the lock kept
    the MQTT thread waiting for minutes with 10k devices: the broker dropped the platform)."""
    plat.tasks.rate.per_minute = 6000  # a burst of 1000 allowed
    plat.tasks.rate.tokens = 1000
    devices = [f"b{i:03d}" for i in range(250)]
    task = _task(plat, firmware, devices)
    plat.tasks.start_task(task["id"])
    assert plat.tick() == 100
    topic, notice = plat.rec.sent[0]
    device = topic.split("/")[1]
    plat.on_message(f"devices/{device}/ota/progress", json.dumps(
        {"taskId": notice["taskId"], "params": {"step": 5, "desc": "downloading"}}).encode())
    rows = {d["device"]: d for d in plat.tasks.get_task(task["id"])["devices"]}
    assert (rows[device]["state"], rows[device]["step"]) == ("upgrading", 5)
    assert sum(1 for d in rows.values() if d["pushes"] == 0) == 150  # still waiting
    assert [plat.tick(), plat.tick(), plat.tick()] == [100, 50, 0]
    assert sorted(t.split("/")[1] for t, _ in plat.rec.sent) == devices


def test_end_time_times_out_active_subtasks(plat: Platform, firmware: Path) -> None:
    end = time.time() + 2
    task = _task(plat, firmware, ["e1"], end=end)
    plat.tasks.start_task(task["id"])
    plat.tick()
    assert plat.tasks.get_task(task["id"])["devices"][0]["state"] == "pending"
    stopped: list[str] = []   # a download the file server is streaming to e1
    plat.downloads.watch(task["id"], "e1", lambda: stopped.append("e1"))
    time.sleep(max(0.0, end - time.time()) + 0.1)
    plat.tick()
    detail = plat.tasks.get_task(task["id"])
    assert detail["state"] == "finished"
    assert detail["devices"][0]["state"] == "timed_out"
    assert detail["devices"][0]["desc"] == "task end time reached"
    assert stopped == ["e1"]  # cut off with its sub-task


def test_started_task_cannot_start_again_and_finished_refuses_devices(
        plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["s1"])
    plat.tasks.start_task(task["id"])
    with pytest.raises(PlatformError, match="already running"):
        plat.tasks.start_task(task["id"])
    plat.tasks.cancel(task["id"], None)
    with pytest.raises(PlatformError, match="finished"):
        plat.tasks.add_devices(task["id"], ["s2"])


def test_import_variants(plat: Platform, firmware: Path) -> None:
    pkg = plat.packages.add_package_file(firmware, version="2.0.0")
    task = plat.tasks.create_task(package=pkg["id"], name="imp")
    res = plat.tasks.import_devices(task["id"], "i1\ni2\n\n i3 \n")
    assert [(r["row"], r["device"], r["ok"]) for r in res] == [
        (1, "i1", True), (2, "i2", True), (3, "i3", True)]
    with pytest.raises(PlatformError, match="empty"):
        plat.tasks.import_devices(task["id"], "\n\n")


def test_progress_is_persisted_for_a_new_reader(plat: Platform, firmware: Path,
                                                tmp_path: Path) -> None:
    """Batched progress reaches the database file by the next tick."""
    import sqlite3

    task = _task(plat, firmware, ["b1"])
    plat.tasks.start_task(task["id"])
    plat.tick()
    sid = plat.rec.sent[0][1]["taskId"]
    for step in range(1, 51):
        plat.on_message("devices/b1/ota/progress",
                        json.dumps({"taskId": sid, "params": {"step": step, "desc": "d"}}).encode())
    plat.tick()
    db = sqlite3.connect(str(tmp_path / "data" / "platform.db"))
    row = db.execute("SELECT state, step, reports FROM subtasks WHERE id=?", (sid,)).fetchone()
    assert row == ("upgrading", 50, 50)


def test_interleaved_progress_then_failure_and_success(plat: Platform, firmware: Path) -> None:
    """Batched progress of several devices stays exact, and a final report after it wins."""
    plat.tasks.rate.per_minute = 600
    task = _task(plat, firmware, ["x1", "x2", "x3"])
    plat.tasks.start_task(task["id"])
    plat.tasks.rate.tokens = 10
    plat.tick()
    sids = {t.split("/")[1]: n["taskId"] for t, n in plat.rec.sent}
    for step in range(1, 31):
        for dev, sid in sids.items():
            plat.on_message(f"devices/{dev}/ota/progress", json.dumps(
                {"taskId": sid, "params": {"step": step, "desc": f"{dev} {step}"}}).encode())
    plat.on_message("devices/x2/ota/progress", json.dumps(
        {"taskId": sids["x2"], "params": {"step": -3, "desc": "bad digest"}}).encode())
    plat.on_message("devices/x3/ota/inform", json.dumps(
        {"taskId": sids["x3"], "params": {"version": "2.0.0"}}).encode())
    plat.on_message("devices/x3/ota/progress", json.dumps(
        {"taskId": sids["x3"], "params": {"step": 40, "desc": "late"}}).encode())
    plat.tick()
    rows = {d["device"]: d for d in plat.tasks.get_task(task["id"])["devices"]}
    assert (rows["x1"]["state"], rows["x1"]["step"], rows["x1"]["desc"]) == (
        "upgrading", 30, "x1 30")
    assert (rows["x2"]["state"], rows["x2"]["step"], rows["x2"]["desc"]) == (
        "failed", -3, "bad digest")
    assert (rows["x3"]["state"], rows["x3"]["step"]) == ("succeeded", 100)
    assert plat.stats()["reports"] == 30 * 3 + 2  # every valid report is counted
    seen = {d["id"]: d for d in plat.list_devices()}
    assert set(seen) == {"x1", "x2", "x3"} and all(d["online"] for d in seen.values())


def test_custom_topic_prefix(tmp_path: Path, firmware: Path) -> None:
    rec = Recorder()
    p = Platform(tmp_path / "custom", Settings(topic_prefix="fleet/{device}/fw"), publish=rec)
    try:
        task = _task(p, firmware, ["c-1"])
        p.tasks.start_task(task["id"])
        p.tick()
        topic, notice = rec.sent[0]
        assert topic == "fleet/c-1/fw/ota/upgrade"
        p.on_message("fleet/c-1/fw/ota/inform", json.dumps(
            {"taskId": notice["taskId"], "params": {"version": "2.0.0"}}).encode())
        p.on_message("devices/c-1/ota/inform", b"{}")  # not ours: ignored, not an error
        assert p.tasks.get_task(task["id"])["devices"][0]["state"] == "succeeded"
        assert p.stats()["dropped"] == 0
    finally:
        p.close()
    with pytest.raises(PlatformError):
        Platform(tmp_path / "bad", Settings(topic_prefix="fleet/+/x"))
