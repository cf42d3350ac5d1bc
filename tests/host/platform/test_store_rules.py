"""The task rules over each store: a platform driven directly (no broker) on SQLite and on
PostgreSQL behaves the same: notices, batched progress, failures and retries, cancels,
end times, a reopened store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fota_host.platform.core import Platform
from fota_host.platform.options import Settings


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, json.loads(payload)))

    def ids(self) -> dict[str, int]:
        return {t.split("/")[1]: n["taskId"] for t, n in self.sent}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "sqlite" else request.getfixturevalue("pg_url")


def _open(tmp_path: Path, db: str | None, name: str = "data", **knobs) -> Platform:
    rec = Recorder()
    knobs.setdefault("push_rate", 600)
    plat = Platform(tmp_path / name, Settings(file_base="http://h/file/upgrade", db=db,
                                              **knobs), publish=rec)
    plat.rec = rec  # type: ignore[attr-defined]
    return plat


@pytest.fixture
def plat(tmp_path: Path, db: str | None):
    p = _open(tmp_path, db, retries=1, retry_backoff=0)
    yield p
    p.close()


def _task(plat: Platform, firmware: Path, devices: list[str], **kw) -> dict:
    pkg = plat.packages.add_package_file(firmware, version="2.0.0")
    task = plat.tasks.create_task(package=pkg["id"], name="t", **kw)
    plat.tasks.add_devices(task["id"], devices)
    plat.tasks.start_task(task["id"])
    return task


def _say(plat: Platform, dev: str, kind: str, task_id: int, **params) -> None:
    plat.on_message(f"devices/{dev}/ota/{kind}",
                    json.dumps({"taskId": task_id, "params": params}).encode())


def _rows(plat: Platform, task: dict) -> dict[str, dict]:
    return {d["device"]: d for d in plat.tasks.get_task(task["id"])["devices"]}


def test_a_rollout_runs_the_same_on_either_store(plat: Platform, firmware: Path) -> None:
    task = _task(plat, firmware, ["x1", "x2", "x3"])
    assert plat.tick() == 3
    sids = plat.rec.ids()
    for step in range(1, 31):
        for dev, sid in sids.items():
            _say(plat, dev, "progress", sid, step=step, desc=f"{dev} {step}")
    _say(plat, "x2", "progress", sids["x2"], step=-2, desc="connection reset")
    _say(plat, "x3", "inform", sids["x3"], version="2.0.0")
    assert plat.tick() == 1  # x2's retry notice (no backoff)
    rows = _rows(plat, task)
    assert (rows["x1"]["state"], rows["x1"]["step"], rows["x1"]["desc"]) == \
        ("upgrading", 30, "x1 30")
    assert (rows["x2"]["state"], rows["x2"]["attempts"], rows["x2"]["pushes"]) == \
        ("pending", 1, 2)  # notified again: a retry was left
    assert (rows["x3"]["state"], rows["x3"]["step"]) == ("succeeded", 100)
    assert plat.stats()["reports"] == 30 * 3 + 1
    assert plat.tick() == 0
    _say(plat, "x2", "inform", sids["x2"], version="2.0.0")
    cancelled = plat.tasks.cancel(task["id"], ["x1"])
    assert cancelled == [{"device": "x1", "ok": True}]
    detail = plat.tasks.get_task(task["id"])
    assert detail["state"] == "finished"
    assert {d["device"]: d["state"] for d in detail["devices"]} == \
        {"x1": "cancelled", "x2": "succeeded", "x3": "succeeded"}
    notices = plat.store.notices(task["id"])
    assert sorted(n["device"] for n in notices) == ["x1", "x2", "x2", "x3"]


def test_the_end_time_and_silence_time_out(tmp_path: Path, db: str | None,
                                           firmware: Path) -> None:
    # "late" reports every 0.1 s: a silence of 3 s is a stall no busy machine makes, so only
    # "quiet" times out (0.5 s timed "late" out too when one loop took longer, CI under load)
    plat = _open(tmp_path, db, device_timeout=3.0)
    try:
        end = time.time() + 8
        task = _task(plat, firmware, ["quiet", "late"], end=end)
        plat.tick()
        sids = plat.rec.ids()
        _say(plat, "quiet", "progress", sids["quiet"], step=10, desc="downloading")
        _say(plat, "late", "progress", sids["late"], step=10, desc="downloading")
        stopped: list[str] = []
        plat.downloads.watch(task["id"], "late", lambda: stopped.append("late"))
        deadline = time.monotonic() + 30
        while _rows(plat, task)["quiet"]["state"] == "upgrading" and \
                time.monotonic() < deadline:
            _say(plat, "late", "progress", sids["late"], step=20, desc="still here")
            plat.tick()
            time.sleep(0.1)
        assert _rows(plat, task)["quiet"]["state"] == "timed_out"
        while time.time() < end + 0.2:
            _say(plat, "late", "progress", sids["late"], step=30, desc="still here")
            plat.tick()
            time.sleep(0.1)
        plat.tick()
        detail = plat.tasks.get_task(task["id"])
        assert detail["state"] == "finished"
        assert _rows(plat, task)["late"]["desc"] == "task end time reached"
        assert stopped == ["late"]
    finally:
        plat.close()


def test_a_reopened_store_carries_on(tmp_path: Path, db: str | None, firmware: Path) -> None:
    plat = _open(tmp_path, db)
    task = _task(plat, firmware, ["r1"])
    plat.tick()
    sid = plat.rec.ids()["r1"]
    _say(plat, "r1", "progress", sid, step=50, desc="half")
    plat.close()
    again = _open(tmp_path, db)
    try:
        assert _rows(again, task)["r1"]["step"] == 50
        _say(again, "r1", "inform", sid, version="2.0.0")
        assert again.tasks.get_task(task["id"])["state"] == "finished"
        assert again.tick() == 0  # nothing is sent twice
    finally:
        again.close()
