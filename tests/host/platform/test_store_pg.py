"""Several platforms on one PostgreSQL database, driven directly (no broker), at the same
time from threads: each due notice goes out once, the push rate holds for all of them
together, reports handled by either are all applied once, a cancel through one cuts off
a download another serves; a lost connection or a restarted server is caught up."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psycopg
import pytest
from fota_host.platform.core import Platform
from fota_host.platform.options import Settings
from helpers import wait_for


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.lock = threading.Lock()

    def __call__(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.sent.append((topic, json.loads(payload)))

    def devices(self) -> list[str]:
        with self.lock:
            return [t.split("/")[1] for t, _ in self.sent]


def _open(tmp_path: Path, pg_url: str, name: str, **knobs) -> Platform:
    rec = Recorder()
    plat = Platform(tmp_path / name, Settings(file_base="http://h/file/upgrade", db=pg_url,
                                              packages_dir=str(tmp_path / "packages"),
                                              **knobs), publish=rec)
    plat.rec = rec  # type: ignore[attr-defined]
    return plat


@pytest.fixture
def pair(tmp_path: Path, pg_url: str):
    """Two platform instances on one database and one package folder."""
    a = _open(tmp_path, pg_url, "a", push_rate=60)
    b = _open(tmp_path, pg_url, "b", push_rate=60)
    yield a, b
    a.close()
    b.close()


def _task(plat: Platform, firmware: Path, devices: list[str]) -> dict:
    pkg = plat.packages.add_package_file(firmware, version="2.0.0")
    task = plat.tasks.create_task(package=pkg["id"], name="t")
    plat.tasks.add_devices(task["id"], devices)
    plat.tasks.start_task(task["id"])
    return task


def _tick_together(plats: tuple[Platform, ...], until) -> None:
    """Each platform ticks in its own thread (as each service's clock would) until
    `until()`; a tick that raised fails the test."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(p: Platform) -> None:
        try:
            while not stop.is_set():
                p.tick()
                time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(p,)) for p in plats]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: until() or errors, timeout=60, what="the platforms' work")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []


def test_each_notice_goes_out_once_and_the_push_rate_holds_fleet_wide(
        pair: tuple[Platform, Platform], firmware: Path) -> None:
    a, b = pair
    devices = [f"n{i:02d}" for i in range(30)]
    task = _task(a, firmware, devices)
    burst, window = a.tasks.rate.burst, a.tasks.rate.window  # 10 in 10 s at 60 a minute
    _tick_together(pair, lambda: len(a.store.notices()) >= burst)
    for _ in range(20):  # both keep ticking: the budget is spent for the whole fleet
        a.tick()
        b.tick()
    sent = a.rec.devices() + b.rec.devices()
    times = [n["sent"] for n in a.store.notices()]
    assert len(sent) == len(times) and len(set(sent)) == len(sent)  # no notice twice
    assert all(sum(1 for u in times if t - window < u <= t) <= burst for t in times)
    # a higher rate: the rest go out, split between the two, each once
    for p in pair:
        p.tasks.rate.per_minute = 60_000
    _tick_together(pair, lambda: len(a.store.notices()) >= len(devices))
    sent = a.rec.devices() + b.rec.devices()
    assert sorted(sent) == devices
    assert {n["device"] for n in a.store.notices(task["id"])} == set(devices)


def test_reports_handled_by_either_instance_are_applied_once(
        pair: tuple[Platform, Platform], firmware: Path) -> None:
    a, b = pair
    for p in pair:
        p.tasks.rate.per_minute = 60_000
    devices = [f"r{i:02d}" for i in range(12)]
    task = _task(a, firmware, devices)
    _tick_together(pair, lambda: len(a.store.notices()) >= len(devices))
    ids = {t.split("/")[1]: n["taskId"] for t, n in a.rec.sent + b.rec.sent}
    steps = 20

    def feed(plat: Platform, parity: int) -> None:  # a shared subscription's share
        for step in range(1, steps + 1):
            for dev in devices:
                if (step + devices.index(dev)) % 2 == parity:
                    if dev in devices[::2]:  # these off the batched fast path: each report
                        plat.tasks.batch.hot.clear()  # read, changed, written under a lock
                    plat.on_message(f"devices/{dev}/ota/progress", json.dumps(
                        {"taskId": ids[dev], "params": {"step": step, "desc": f"{step}"}})
                        .encode())

    feeders = [threading.Thread(target=feed, args=(p, i)) for i, p in enumerate(pair)]
    for t in feeders:
        t.start()
    _tick_together(pair, lambda: not any(t.is_alive() for t in feeders))
    for i, dev in enumerate(devices):
        pair[i % 2].on_message(f"devices/{dev}/ota/inform", json.dumps(
            {"taskId": ids[dev], "params": {"version": "2.0.0"}}).encode())
    detail = b.tasks.get_task(task["id"])
    assert detail["state"] == "finished"
    assert {d["state"] for d in detail["devices"]} == {"succeeded"}
    assert a.stats()["reports"] == b.stats()["reports"] == steps * len(devices)


def test_only_the_instance_with_the_clock_turn_sends(pair: tuple[Platform, Platform],
                                                    firmware: Path) -> None:
    a, b = pair
    _task(a, firmware, ["c1"])
    with a.store.lock, a.store.clock_turn() as turn:
        assert turn
        assert b.tick() == 0 and b.rec.sent == []
    assert b.tick() == 1 and b.rec.devices() == ["c1"]


def test_a_cancel_through_one_instance_cuts_off_the_download_another_serves(
        pair: tuple[Platform, Platform], firmware: Path) -> None:
    a, b = pair
    task = _task(a, firmware, ["d1"])
    b.tick()
    stopped: list[str] = []
    a.downloads.watch(task["id"], "d1", lambda: stopped.append("d1"))
    assert b.tasks.cancel(task["id"], ["d1"]) == [{"device": "d1", "ok": True}]

    def swept() -> bool:
        a.tick()
        return stopped == ["d1"]
    wait_for(swept, timeout=30, what="instance a cutting off its download")


def _kill_connections(pg_url: str, plat: Platform) -> None:
    pid = plat.store.db.conn.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_connection_is_reopened_and_a_report_kept_until_stored(
        tmp_path: Path, pg_url: str, firmware: Path) -> None:
    plat = _open(tmp_path, pg_url, "solo", push_rate=600)
    try:
        task = _task(plat, firmware, ["l1"])
        plat.tick()
        (sid,) = [n["taskId"] for _, n in plat.rec.sent]
        _kill_connections(pg_url, plat)  # idle: the next call just opens a new one
        assert plat.tasks.get_task(task["id"])["devices"][0]["state"] == "pending"
        plat.on_message("devices/l1/ota/progress", json.dumps(
            {"taskId": sid, "params": {"step": 10, "desc": "downloading"}}).encode())
        _kill_connections(pg_url, plat)  # inside a transaction: its message is held
        acked: list[bool] = []
        plat.on_message("devices/l1/ota/inform", json.dumps(
            {"taskId": sid, "params": {"version": "2.0.0"}}).encode(), lambda: acked.append(True))

        def caught_up() -> bool:
            plat.tick()
            return acked == [True]
        wait_for(caught_up, timeout=30, what="the held inform stored")
        assert plat.tasks.get_task(task["id"])["devices"][0]["state"] == "succeeded"
    finally:
        plat.close()


def test_instances_catch_up_after_a_postgresql_restart(pg_server, tmp_path: Path,
                                                       firmware: Path) -> None:
    url = pg_server.new_database()
    plat = _open(tmp_path, url, "restart", push_rate=600)
    try:
        task = _task(plat, firmware, ["p1", "p2"])
        plat.tick()
        ids = {t.split("/")[1]: n["taskId"] for t, n in plat.rec.sent}
        pg_server.restart("immediate")  # a crash and a restart of the database server
        acks: list[str] = []
        for dev in ("p1", "p2"):
            plat.on_message(f"devices/{dev}/ota/inform", json.dumps(
                {"taskId": ids[dev], "params": {"version": "2.0.0"}}).encode(),
                lambda dev=dev: acks.append(dev))

        def caught_up() -> bool:
            plat.tick()
            return sorted(acks) == ["p1", "p2"]
        wait_for(caught_up, timeout=60, what="both informs stored after the restart")
        assert plat.tasks.get_task(task["id"])["state"] == "finished"
        assert len(plat.store.notices()) == 2  # nothing sent again
    finally:
        plat.close()
