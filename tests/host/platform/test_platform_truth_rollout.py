"""The platform never claims what it does not know (#11.8): notices are "sent" only once the
broker took them, devices are "online" only on recent evidence, late informs are recorded
as what the device runs, unknown ids and empty tasks are named, and the log tells the story
of a rollout."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from fota_host.platform.client import connect
from fota_host.platform.validate import PlatformError
from platform_fakes import (
    Env,
    FakeDevice,
    device_row,
    http_get,
    make_task,
    wait_device_state,
    wait_for,
)

GRACE = 5.0  # seconds: the platform's retry_backoff where a notice may find no subscriber


@pytest.fixture
def on_mosquitto(tmp_path: Path):
    e = Env("mosquitto", tmp_path)  # a broker that can go away while the platform runs
    yield e
    e.stop()


def test_notice_waits_for_the_broker_and_says_so(on_mosquitto, firmware: Path) -> None:
    env = on_mosquitto
    # Once mosquitto is back, platform and device reconnect in either order. Platform
    # first: its notice finds no subscriber (a clean session) and the device's inform
    # (-1) that follows within the grace (retry_backoff) is taken for one published before
    # the notice, so the notice goes again only when the grace has passed (reports.py,
    # _stale). A short grace keeps that order quick; the wait below covers it.
    env.start(retry_backoff=GRACE)
    api = env.api
    dev = FakeDevice("n-1", env.broker).start()
    wait_for(lambda: any(d["id"] == "n-1" for d in api.list_devices()), what="n-1 seen")
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="truth")
    assert "warning" not in api.add_devices(task["id"], ["n-1"])[0]  # seen: no warning
    seen = {d["id"]: d for d in api.list_devices()}["n-1"]
    assert seen["online"] is True
    assert datetime.fromisoformat(seen["last_seen_at"].replace("Z", "+00:00")).timestamp() \
        == pytest.approx(seen["last_seen"], abs=1)
    try:
        env.mosquitto.stop()
        wait_for(lambda: not api.list_devices()[0]["online"], timeout=15,
                 what="online withdrawn once the broker is gone")
        api.start_task(task["id"])
        row = wait_for(lambda: (r := device_row(api, task["id"], "n-1"))["desc"]
                       == "not sent: no broker connection" and r, timeout=15)
        assert row["pushes"] == 0 and row["notified"] is None
        env.mosquitto.start()
        notice = dev.wait_notice(timeout=30 + 2 * GRACE)
        row = wait_for(lambda: (r := device_row(api, task["id"], "n-1"))["desc"]
                       == "notice sent" and r, timeout=15)
        assert row["pushes"] >= 1  # (again when the device reconnected and informed)
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "n-1", "succeeded")
    finally:
        dev.stop()


def test_late_inform_after_cancel_records_what_the_device_runs(embedded, firmware: Path) -> None:
    embedded.start()
    api = embedded.api
    _, task = make_task(api, firmware, ["late-1"], "late")
    dev = FakeDevice("late-1", embedded.broker).start()
    try:
        api.start_task(task["id"])
        notice = dev.wait_notice()
        status, body, _ = http_get(dev.download_url(notice))  # the device has the image
        assert status == 200 and len(body) == notice["payload"]["size"]
        dev.progress(notice["taskId"], 90, "writing")
        wait_device_state(api, task["id"], "late-1", "upgrading")
        assert api.cancel(task["id"], ["late-1"]) == [{"device": "late-1", "ok": True}]
        assert api.get_task(task["id"])["state"] == "finished"
        # the protocol has no cancel message: the device installs it and informs
        dev.inform(notice["taskId"], "2.0.0")
        row = wait_device_state(api, task["id"], "late-1", "succeeded")
        assert row["desc"] == "upgraded to 2.0.0 after the sub-task was cancelled"
        assert {d["id"]: d for d in api.list_devices()}["late-1"]["version"] == "2.0.0"
    finally:
        dev.stop()


def test_unknown_ids_empty_tasks_and_past_starts(embedded, firmware: Path) -> None:
    # typo-1 is added to a running task before it connects: its notice goes out at the
    # next tick. If that tick comes before the device subscribed (a busy machine), the
    # notice is lost and the device's inform -1 within the grace (retry_backoff) is taken
    # for an old one (reports.py, _stale): the notice goes again only after the grace.
    # A short grace keeps that order quick; the wait for the notice covers it.
    embedded.start(retry_backoff=GRACE)
    api = embedded.api
    pkg = api.create_package(file=str(firmware), version="2.0.0")
    task = api.create_task(package=pkg["id"], name="empty")
    with pytest.raises(PlatformError, match="no devices: add devices first") as err:
        api.start_task(task["id"])
    assert err.value.status == 409
    assert api.get_task(task["id"])["state"] == "not_started"
    # a start time in the past with no devices yet: it starts and keeps running
    past = api.create_task(package=pkg["id"], name="past", start="2020-01-01T00:00:00Z")
    wait_for(lambda: api.get_task(past["id"])["state"] == "running", what="started")
    res = api.add_devices(past["id"], ["typo-1"])
    assert res[0]["ok"] and "never seen" in res[0]["warning"]
    assert api.get_task(past["id"])["state"] == "running"
    dev = FakeDevice("typo-1", embedded.broker).start()
    try:
        dev.upgrade(dev.wait_notice(timeout=10 + 2 * GRACE))
        wait_device_state(api, past["id"], "typo-1", "succeeded")
        wait_for(lambda: api.get_task(past["id"])["state"] == "finished", what="finished")
    finally:
        dev.stop()


@pytest.mark.parametrize("url", ["127.0.0.1:18380", "http//x", "ftp://h/x", "http://h:99999"])
def test_malformed_public_url_is_refused_at_start(embedded, url: str) -> None:
    with pytest.raises(RuntimeError, match="--public-url must look like"):
        embedded.start(public_url=url)
    assert not (embedded.data / "service.json").exists()


def test_wrong_broker_credentials_fail_fast_with_the_reason(tmp_path: Path) -> None:
    import os
    import subprocess

    from fota_host.platform.mosquitto import generate
    from fota_host.platform.process import start_platform
    from helpers import free_port, mosquitto_bin, wait_port

    port = free_port()
    info = generate(tmp_path / "mq", ["d-1"], port=port, bind="127.0.0.1",
                    run_as="root" if os.geteuid() == 0 else None)
    broker = subprocess.Popen([mosquitto_bin(), "-c", info["config"]],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        for url in (f"mqtt://fota-platform:wrong@127.0.0.1:{port}", f"mqtt://127.0.0.1:{port}"):
            with pytest.raises(RuntimeError) as err:
                start_platform(tmp_path / "data", broker=url, timeout=20)
            message = str(err.value)
            assert "refused the platform" in message, message
            assert re.search(r"Not authorized|Bad user name or password", message), message
        proc = start_platform(tmp_path / "data", broker=info["platform_broker"], timeout=20)
        proc.stop()
    finally:
        broker.terminate()
        broker.wait(5)


def test_the_log_tells_the_story_of_a_rollout(embedded, firmware: Path) -> None:
    embedded.start()
    api = embedded.api
    _, task = make_task(api, firmware, ["ok-1", "bad-1"], "story")
    ok = FakeDevice("ok-1", embedded.broker).start()
    bad = FakeDevice("bad-1", embedded.broker).start()
    try:
        # both connected and heard from (a device informing after its notice gets it again)
        wait_for(lambda: len(api.list_devices()) == 2, what="both devices seen")
        api.start_task(task["id"])
        ok.upgrade(ok.wait_notice())
        notice = bad.wait_notice()
        bad.progress(notice["taskId"], -2, "download failed \x1b[31mred\x1b[0m")
        wait_device_state(api, task["id"], "ok-1", "succeeded")
        wait_device_state(api, task["id"], "bad-1", "failed")
        wait_for(lambda: api.get_task(task["id"])["state"] == "finished")
    finally:
        ok.stop()
        bad.stop()
    # with no service running, nobody knows whether the devices are connected
    embedded.proc.stop()
    ops = connect(embedded.data)
    try:
        listed = ops.list_devices()
    finally:
        ops.close()
    assert [(d["id"], d["online"]) for d in listed] == [("bad-1", False), ("ok-1", False)]
    assert all(d["last_seen_at"].endswith("Z") for d in listed)
    tid = task["id"]
    log = (embedded.data / "platform.log").read_text()
    wanted = [rf"INFO .*task {tid} starts: story to version 2\.0\.0, 2 device",
              rf"INFO .*task {tid}: notice sent to ok-1 ",
              rf"INFO .*task {tid}: notice sent to bad-1 ",
              rf"INFO .*task {tid}: ok-1 succeeded .*upgraded to 2\.0\.0",
              # (a control character in a desc is replaced at the edge)
              rf"WARNING .*task {tid}: bad-1 failed .*download failed \ufffd\[31mred",
              rf"INFO .*task {tid} finished: 1 failed, 1 succeeded"]
    for pattern in wanted:
        assert len(re.findall(pattern, log)) == 1, (pattern, log[-3000:])
    assert "\x1b" not in log  # device text escaped
