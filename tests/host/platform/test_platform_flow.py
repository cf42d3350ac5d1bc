"""End to end: the platform process on a real broker, fake devices speaking the spec."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fota_host.platform.validate import PlatformError
from platform_fakes import FakeDevice, device_row, http_get, make_task, wait_device_state, wait_for

FAST = {"device_timeout": 30, "retry_backoff": 0.3}


@contextmanager
def one_device(platform: Any, firmware: Path, name: str, **options: Any
               ) -> Iterator[tuple[Any, dict[str, Any], FakeDevice]]:
    """Start `platform` with `options`, create a task (not started) of `firmware` for the
    device `name` and connect that device: (api, task, device); the device stops after."""
    platform.start(**options)
    api = platform.api
    _, task = make_task(api, firmware, [name])
    dev = FakeDevice(name, platform.broker).start()
    try:
        yield api, task, dev
    finally:
        dev.stop()


def test_notice_download_and_success(env, firmware: Path) -> None:
    env.start(**FAST)
    api = env.api
    pkg, task = make_task(api, firmware, ["dev-a", "dev-b"], sign="sha256")
    devices = [FakeDevice(d, env.broker).start() for d in ("dev-a", "dev-b")]
    try:
        api.start_task(task["id"])
        for dev in devices:
            notice = dev.wait_notice()
            # exactly the spec's shape (+ sha256 for a SHA-256 package)
            assert set(notice) == {"taskId", "payload"}
            assert isinstance(notice["taskId"], int)
            payload = notice["payload"]
            assert set(payload) == {"size", "version", "url", "md5", "token", "module",
                                    "sha256"}
            data = firmware.read_bytes()
            assert payload["size"] == len(data)
            assert payload["version"] == "2.0.0"
            assert payload["md5"] == hashlib.md5(data).hexdigest()
            assert payload["sha256"] == hashlib.sha256(data).hexdigest()
            assert payload["module"] == "MCU"
            assert payload["url"] == f"{env.proc.file_base}/{pkg['id']}/{task['id']}"
            assert dev.upgrade(notice) == data
        ids = {device_row(api, task["id"], d.id)["subtask"] for d in devices}
        assert len(ids) == 2  # one sub-task id per device
        for dev in devices:
            row = wait_device_state(api, task["id"], dev.id, "succeeded")
            assert row["step"] == 100
        detail = wait_for(lambda: (t := api.get_task(task["id"]))["state"] == "finished" and t)
        assert {d["state"] for d in detail["devices"]} == {"succeeded"}
        seen = {d["id"]: d for d in api.list_devices()}
        assert seen["dev-a"]["version"] == "2.0.0" and seen["dev-a"]["online"]
    finally:
        for dev in devices:
            dev.stop()


def test_offline_device_gets_notice_on_next_inform(env, firmware: Path) -> None:
    env.start(**FAST)
    api = env.api
    _, task = make_task(api, firmware, ["late"])
    api.start_task(task["id"])
    # The notice goes out while nobody listens: waited for, not slept for (after a sleep a
    # busy machine's first push tick could come only once the device listened).
    wait_for(lambda: device_row(api, task["id"], "late")["desc"] == "notice sent",
             what="the notice sent to nobody")
    dev = FakeDevice("late", env.broker).start()  # informs -1 on connect
    try:
        notice = dev.wait_notice()
        # an MD5 package: exactly the spec's payload
        assert set(notice["payload"]) == {"size", "version", "url", "md5", "token", "module"}
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "late", "succeeded")
    finally:
        dev.stop()


def test_step_100_is_not_success_and_wrong_version_fails(embedded, firmware: Path) -> None:
    with one_device(embedded, firmware, "d1", **FAST) as (api, task, dev):
        api.start_task(task["id"])
        notice = dev.wait_notice()
        dev.progress(notice["taskId"], 100, "written")
        row = wait_for(lambda: (r := device_row(api, task["id"], "d1"))["step"] == 100 and r)
        assert row["state"] == "upgrading"
        dev.inform(notice["taskId"], version="1.0.0")  # rebooted into the old image
        row = wait_device_state(api, task["id"], "d1", "failed")
        assert "1.0.0" in row["desc"]
        assert api.get_task(task["id"])["state"] == "finished"


def test_already_on_target_succeeds_without_download(embedded, firmware: Path) -> None:
    embedded.start(**FAST)
    api = embedded.api
    _, task = make_task(api, firmware, ["up2date"])
    api.start_task(task["id"])
    # The notice goes out while nobody listens: waited for, not slept for. After a sleep
    # on a busy machine the push tick could come after the device subscribed and before
    # its inform was handled, and the device then rightly got the notice.
    wait_for(lambda: device_row(api, task["id"], "up2date")["desc"] == "notice sent",
             what="the notice sent to nobody")
    dev = FakeDevice("up2date", embedded.broker, version="2.0.0").start()
    try:
        wait_device_state(api, task["id"], "up2date", "succeeded")
        assert dev.no_notice(0.5)
    finally:
        dev.stop()


def test_refusal_busy_fails_with_desc(env, firmware: Path) -> None:
    with one_device(env, firmware, "busy", **FAST) as (api, task, dev):
        api.start_task(task["id"])
        notice = dev.wait_notice()
        dev.progress(notice["taskId"], -1, "busy: another upgrade in progress")
        row = wait_device_state(api, task["id"], "busy", "failed")
        assert row["step"] == -1 and row["desc"].startswith("busy")
        # the token dies with the sub-task
        assert http_get(dev.download_url(notice))[0] == 403


def test_retry_with_backoff_then_success(embedded, firmware: Path) -> None:
    with one_device(embedded, firmware, "flaky", retries=1, retry_backoff=0.5,
                    device_timeout=30) as (api, task, dev):
        # the connect-time inform handled first: an inform arriving after the task started
        # rightly brings a fresh notice, which this test would take for the retry
        wait_for(lambda: any(d["id"] == "flaky" and d["version"] == "1.0.0"
                             for d in api.list_devices()), what="the device's inform")
        api.start_task(task["id"])
        first = dev.wait_notice()
        failed_at = time.monotonic()
        dev.progress(first["taskId"], -2, "download failed")
        # pending again (as it was before the failure arrived), with the retry named
        row = wait_for(lambda: (r := device_row(api, task["id"], "flaky"))["desc"]
                       .startswith("retry") and r, what="the retry")
        assert row["state"] == "pending" and row["desc"].startswith("retry 1/1")
        second = dev.wait_notice()
        assert time.monotonic() - failed_at >= 0.45  # the backoff was kept
        assert second["taskId"] == first["taskId"]
        assert second["payload"]["token"] != first["payload"]["token"]
        dev.upgrade(second)
        row = wait_device_state(api, task["id"], "flaky", "succeeded")
        assert row["attempts"] == 1
        # a second failure after the last retry is final


def test_silent_device_times_out(embedded, firmware: Path) -> None:
    with one_device(embedded, firmware, "mute", device_timeout=1) as (api, task, dev):
        api.start_task(task["id"])
        notice = dev.wait_notice()
        dev.progress(notice["taskId"], 10, "downloading")
        row = wait_device_state(api, task["id"], "mute", "timed_out", timeout=30)
        assert "no report" in row["desc"]
        assert api.get_task(task["id"])["state"] == "finished"


def test_cancel_some_then_all(env, firmware: Path) -> None:
    env.start(**FAST)
    api = env.api
    _, task = make_task(api, firmware, ["c1", "c2", "c3"])
    devices = [FakeDevice(d, env.broker).start() for d in ("c1", "c2", "c3")]
    try:
        api.start_task(task["id"])
        notices = {d.id: d.wait_notice() for d in devices}
        res = api.cancel(task["id"], ["c1", "nope"])
        assert res == [{"device": "c1", "ok": True},
                       {"device": "nope", "ok": False, "error": "not in this task"}]
        assert device_row(api, task["id"], "c1")["state"] == "cancelled"
        assert http_get(devices[0].download_url(notices["c1"]))[0] == 403
        # a late success inform of a cancelled sub-task is what the device runs: recorded
        # (the protocol has no cancel message), the cancel named
        devices[0].inform(notices["c1"]["taskId"], "2.0.0")
        devices[1].upgrade(notices["c2"])
        wait_device_state(api, task["id"], "c2", "succeeded")
        late = wait_device_state(api, task["id"], "c1", "succeeded")
        assert "after the sub-task was cancelled" in late["desc"]
        res = api.cancel(task["id"], None)
        assert res == [{"device": "c3", "ok": True}]
        detail = api.get_task(task["id"])
        assert detail["state"] == "finished"
        assert [d["state"] for d in detail["devices"]] == ["succeeded", "succeeded", "cancelled"]
    finally:
        for dev in devices:
            dev.stop()


def test_one_running_task_per_device(embedded, firmware: Path) -> None:
    embedded.start(**FAST)
    api = embedded.api
    pkg, task = make_task(api, firmware, ["shared"])
    api.start_task(task["id"])
    other = api.create_task(package=pkg["id"], name="second")
    res = api.add_devices(other["id"], ["shared", "free", "bad/id", "free"])
    assert res[0] == {"device": "shared", "ok": False, "error": f"busy in task {task['id']}"}
    assert res[1]["ok"] is True
    assert not res[2]["ok"] and "invalid device id" in res[2]["error"]
    assert res[3] == {"device": "free", "ok": False, "error": "listed twice"}
    assert [d["device"] for d in api.get_task(other["id"])["devices"]] == ["free"]


def test_restart_mid_task_carries_on(env, firmware: Path) -> None:
    from helpers import free_port

    ports = {"http_port": free_port()}
    if env.kind == "embedded":
        ports["mqtt_port"] = free_port()
    env.start(**FAST, **ports)
    api = env.api
    _, task = make_task(api, firmware, ["r1", "r2"])
    d1 = FakeDevice("r1", env.broker).start()
    d2 = FakeDevice("r2", env.broker).start()
    try:
        api.start_task(task["id"])
        n1, n2 = d1.wait_notice(), d2.wait_notice()
        d1.progress(n1["taskId"], 50, "half")
        wait_for(lambda: device_row(api, task["id"], "r1")["step"] == 50)
        time.sleep(0.3)  # let the periodic commit of progress happen
        # A device busy downloading does not inform again when its link comes back (the
        # agent informs only between updates); an inform with taskId -1 would rightly
        # re-queue the notice and race the state check below.
        d1.inform_on_connect = d2.inform_on_connect = False
        env.proc.kill()  # crash: no clean shutdown
        if env.kind == "mosquitto":
            # reports sent while the platform is down wait in its persistent session
            d2.progress(n2["taskId"], 30, "while down")
        env.start()
        api = env.api
        assert device_row(api, task["id"], "r1")["state"] == "upgrading"
        assert api.get_task(task["id"])["state"] == "running"
        if env.kind == "mosquitto":
            row = wait_for(lambda: (r := device_row(api, task["id"], "r2"))["step"] == 30 and r)
            assert row["desc"] == "while down"
        wait_for(lambda: d1.connected.is_set() and d2.connected.is_set())
        d1.upgrade(n1)  # the token issued before the crash still works
        d2.upgrade(n2)
        wait_device_state(api, task["id"], "r1", "succeeded")
        wait_device_state(api, task["id"], "r2", "succeeded")
        assert api.get_task(task["id"])["state"] == "finished"
    finally:
        d1.stop()
        d2.stop()


def test_scheduled_start(embedded, firmware: Path) -> None:
    embedded.start(**FAST)
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5))  # 4-5 s
    task = api.create_task(package=pkg["id"], name="later", start=soon)
    api.add_devices(task["id"], ["sched"])
    assert api.get_task(task["id"])["state"] == "not_started"
    dev = FakeDevice("sched", embedded.broker).start()
    try:
        notice = dev.wait_notice(timeout=20)
        assert api.get_task(task["id"])["state"] == "running"
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "sched", "succeeded")
    finally:
        dev.stop()


def test_bad_api_input_changes_nothing(embedded, firmware: Path, tmp_path: Path) -> None:
    embedded.start(**FAST)
    api = embedded.api
    with pytest.raises(PlatformError, match="unknown package"):
        api.create_task(package="0" * 20, name="x")
    with pytest.raises(PlatformError, match="name is required"):
        api.create_task(package="0" * 20, name="")
    with pytest.raises(PlatformError, match="unknown task"):
        api.get_task(999)
    with pytest.raises(PlatformError, match="not an ISO 8601"):
        pkg = api.create_package(file=str(firmware), version="2.0.0")
        api.create_task(package=pkg["id"], name="x", start="tomorrow")
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(PlatformError, match="empty"):
        api.create_package(file=str(empty), version="3.0.0")
    with pytest.raises(PlatformError, match="sign"):
        api.create_package(file=str(firmware), version="3.0.0", sign="crc32")
    assert [p["version"] for p in api.list_packages()] == ["2.0.0"]
    assert api.list_tasks() == []
    stored = sorted(p.name for p in (embedded.data / "packages").iterdir())
    assert stored == [f"{pkg['id']}.bin"]  # no half-written uploads left behind
    # the admin token guards the API; the OpenAPI document is public
    info = json.loads((embedded.data / "service.json").read_text())
    status, _, _ = http_get(info["api"] + "/api/tasks")
    assert status == 401
    status, body, _ = http_get(info["api"] + "/openapi.json")
    assert status == 200 and "/api/tasks/{id}/start" in json.loads(body)["paths"]


def test_fleet_upgrade_respects_push_rate(env, firmware: Path) -> None:
    """24 devices, 120 notices a minute (a burst of 20, then 2 a second): all succeed."""
    env.start(push_rate=120, device_timeout=30)
    api = env.api
    names = [f"fleet-{i:02d}" for i in range(24)]
    _, task = make_task(api, firmware, names)
    devices = [FakeDevice(n, env.broker).start() for n in names]
    try:
        started = time.monotonic()
        api.start_task(task["id"])
        arrivals = []
        for dev in devices:
            notice = dev.wait_notice(timeout=15)
            arrivals.append(time.monotonic() - started)
            dev.upgrade(notice, steps=(50, 100))
        # the last 4 notices waited for the rate limit (2 a second after the burst)
        assert max(arrivals) >= 1.4
        wait_for(lambda: api.get_task(task["id"])["state"] == "finished", timeout=15)
        assert {d["state"] for d in api.get_task(task["id"])["devices"]} == {"succeeded"}
    finally:
        for dev in devices:
            dev.stop()
