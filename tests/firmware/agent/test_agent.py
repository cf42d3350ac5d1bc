"""The agent on the real MicroPython unix port against mosquitto and a scripted platform.

Each simulated board runs the device code as .mpy, reboots through the simulated
bootloader after a hard reset, and talks the spec's exact message shapes (the peer
fixture fails the test on any message off the spec).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from fota_host.images import synthetic as images
from fota_host.sim import flash as simflash
from fota_host.sim import mprun
from helpers import Output, StallingProxy
from peer import payload_for


def log_of(dev) -> str:
    """What a simulated board printed (the devices fixture gives each one a log file)."""
    return Path(dev.logfile.name).read_text()


def first_inform(peer, dev="d1", timeout=30):
    return peer.wait_for("inform", dev, lambda m: True, timeout)


def test_first_inform_once_with_the_spec_shape(peer, devices):
    devices("d1")
    msg = first_inform(peer)
    assert msg == {"taskId": -1, "params": {"version": "1.0.0", "module": "MCU"}}
    time.sleep(5)                              # longer than a keepalive: still just one
    assert len(peer.of("inform", "d1")) == 1


HOSTILE = [
    b"not json at all",
    b"\xff\xfe\x00",
    b"[1, 2, 3]",
    b'{"taskId": "7", "payload": {}}',
    b'{"taskId": true, "payload": {}}',
    b'{"taskId": 7, "payload": "x"}',
    b'{"taskId": 7}',
    b'{"taskId": 7, "payload": {"size": -5, "version": "9", "url": "http://h/a/b",'
    b' "md5": "00000000000000000000000000000000", "token": "t", "module": "MCU"}}',
    b'{"taskId": 7, "payload": {"size": 5, "version": 9, "url": "http://h/a/b",'
    b' "md5": "00000000000000000000000000000000", "token": "t", "module": "MCU"}}',
    b'{"taskId": 7, "payload": {"size": 5, "version": "9", "url": "ftp://h/a/b",'
    b' "md5": "00000000000000000000000000000000", "token": "t", "module": "MCU"}}',
    b'{"taskId": 7, "payload": {"size": 5, "version": "9", "url": "http://h/a/b",'
    b' "md5": "not-a-digest", "token": "t", "module": "MCU"}}',
    b'{"taskId": 7, "payload": {"size": 5, "version": "9", "url": "http://h/a/b",'
    b' "md5": "00000000000000000000000000000000", "module": "MCU"}}',
    b'{"taskId": 7, "payload": {"size": 5, "version": "9", "url": "http://h/a/b",'
    b' "md5": "00000000000000000000000000000000", "token": "t", "module": "MCU",'
    b' "pad": "' + b"x" * 6000 + b'"}}',                        # bigger than the device takes
]


def test_hostile_notices_are_dropped_and_the_device_keeps_working(peer, devices):
    dev = devices("d1")
    first_inform(peer)
    for raw in HOSTILE:
        peer.notice("d1", 0, raw)
    # Another module's notice is not ours either.
    peer.notice("d1", 8, payload_for({"size": 10, "md5": "0" * 32}, "9.9.9",
                                     "http://127.0.0.1:1/file/upgrade/a/b", module="WIFI"))
    # Still alive and answering: a notice for the version it runs is informed at once.
    peer.notice("d1", 77, payload_for({"size": 10, "md5": "0" * 32}, "1.0.0",
                                      "http://127.0.0.1:1/file/upgrade/a/b"))
    msg = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 77)
    assert msg["params"]["version"] == "1.0.0"
    assert peer.of("progress", "d1") == []       # nothing was attempted
    assert dev.boots == 1                          # and nothing crashed
    assert log_of(dev).count("notice dropped") >= len(HOSTILE) - 2


def test_md5_mismatch_is_step_minus_3_and_boot_unchanged(peer, devices, served, esp32_board):
    dev = devices("d1", esp32_board)
    first_inform(peer)
    img = served.add("v2.bin", images.sim_image(esp32_board, "2.0.0", 200_000))
    payload = payload_for(img, "2.0.0", served.server.notice_url("v2.bin"))
    payload["md5"] = "f" * 32
    peer.notice("d1", 31, payload)
    fail = peer.wait_for("progress", "d1", lambda m: m["params"]["step"] < 0)
    assert fail["taskId"] == 31 and fail["params"]["step"] == -3
    assert "md5" in fail["params"]["desc"]
    assert dev.status()["boot"] == "ota_0" and dev.boots == 1


def test_download_failure_is_step_minus_2(peer, devices, served):
    devices("d1")
    first_inform(peer)
    payload = payload_for({"size": 5000, "md5": "0" * 32}, "2.0.0",
                          served.server.notice_url("missing.bin"))
    peer.notice("d1", 32, payload)
    fail = peer.wait_for("progress", "d1", lambda m: m["params"]["step"] < 0)
    assert fail == {"taskId": 32, "params": {
        "step": -2, "desc": "download failed: host 127.0.0.1: HTTP 404", "module": "MCU"}}


def dev_model(dev) -> str:
    return (dev.flash / "model").read_text().strip()


def test_full_upgrade_through_reboot_and_confirm(peer, devices, served, any_board):
    # Every board people buy (boards/chips.py): its chip id in the images, its slot size.
    dev = devices("d1", any_board)
    first_inform(peer)
    board = dev.board                   # the family: esp32 or pico_w
    size = 600_000 if board == "esp32" else 200_000
    img = served.add("v2.bin", images.sim_image(dev_model(dev), "2.0.0", size))
    served.server.faults.delay_per_chunk = 0.02
    peer.notice("d1", 41, payload_for(img, "2.0.0", served.server.notice_url("v2.bin", 147589)))
    done = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 41, timeout=60)
    assert done["params"]["version"] == "2.0.0"
    steps = [m["params"]["step"] for m in peer.of("progress", "d1") if m["taskId"] == 41]
    assert steps[-1] == 100 and steps == sorted(steps) and min(steps) >= 1
    assert all(b - a >= 5 for a, b in zip(steps[:-2], steps[1:-1], strict=True))  # throttled
    # The download address was built as the spec says, values URL-encoded.
    query = served.server.stats.requests[0]["query"]
    assert query == {"fileId": "v2.bin", "taskId": "147589", "deviceId": "d1",
                     "accessToken": "tok en/1"}
    assert "accessToken=tok%20en%2F1" in served.server.stats.requests[0]["path"]
    st = dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0"
                      and not (dev.flash / "fota_trial.json").exists())
    assert st["running"] == ("ota_1" if board == "esp32" else "b")
    # Later informs (after reconnects) carry -1 again; the new image stays after a reboot.
    dev.kill()
    peer.wait(lambda: len([m for m in peer.of("inform", "d1") if m["taskId"] == -1]) >= 2)
    assert dev.status()["version"] == "2.0.0"


def test_image_failing_health_check_rolls_back_and_reports(peer, devices, served, any_board):
    dev = devices("d1", any_board, max_trials=1, health_deadline_s=6)
    first_inform(peer)
    data = images.sim_image(any_board, "2.0.0", 300_000 if dev.board == "esp32" else None,
                            fail_health=True)
    img = served.add("bad.bin", data)
    peer.notice("d1", 51, payload_for(img, "2.0.0", served.server.notice_url("bad.bin")))
    fail = peer.wait_for("progress", "d1", lambda m: m["params"]["step"] == -1, timeout=90)
    assert fail["taskId"] == 51
    assert "rolled back" in fail["params"]["desc"] and "health" in fail["params"]["desc"]
    informs = peer.wait(lambda: [m for m in peer.of("inform", "d1")
                                 if m["params"]["version"] == "1.0.0"][1:], timeout=30)
    assert informs[0]["taskId"] == -1                  # the old image is back online
    # The platform never saw the new version confirmed with the task's id.
    assert not [m for m in peer.of("inform", "d1")
                if m["taskId"] == 51 and m["params"]["version"] == "2.0.0"]
    st = dev.status()
    assert st["version"] == "1.0.0" and not st["pending"]
    assert dev.boots >= 3        # old, new on trial, old again


def test_broker_restart_mid_download_finishes_and_reports(peer, devices, served, mosquitto):
    dev = devices("d1")
    first_inform(peer)
    img = served.add("v2.bin", images.sim_image("esp32", "2.0.0", 800_000))
    served.server.faults.delay_per_chunk = 0.06            # about 3 s for the image
    peer.notice("d1", 61, payload_for(img, "2.0.0", served.server.notice_url("v2.bin")))
    peer.wait_for("progress", "d1", lambda m: m["params"]["step"] > 0)
    mosquitto.restart(down_seconds=1.5)
    done = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 61, timeout=90)
    assert done["params"]["version"] == "2.0.0"
    # The outage did not restart the download.
    assert len(served.server.stats.requests) == 1
    dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0")


def test_half_open_link_is_detected_and_recovered(peer, devices, mosquitto):
    proxy = StallingProxy(mosquitto.port)
    try:
        dev = devices("d1", broker_url=f"mqtt://127.0.0.1:{proxy.port}",
                      broker={"keepalive": 2, "timeout_s": 1})
        first_inform(peer)
        proxy.forward.clear()             # packets stop, nothing is closed
        time.sleep(4)
        proxy.forward.set()
        # Coming back online is a new session: the device informs again.
        peer.wait(lambda: len(peer.of("inform", "d1")) >= 2, timeout=40)
        assert proxy.conns >= 2 and dev.boots == 1
    finally:
        proxy.close()


def test_same_task_is_ignored_and_another_is_refused_busy(peer, devices, served):
    devices("d1")
    first_inform(peer)
    img = served.add("v2.bin", images.sim_image("esp32", "2.0.0", 600_000))
    served.server.faults.delay_per_chunk = 0.05
    payload = payload_for(img, "2.0.0", served.server.notice_url("v2.bin"))
    peer.notice("d1", 71, payload)
    peer.wait_for("progress", "d1", lambda m: m["taskId"] == 71 and m["params"]["step"] > 0)
    peer.notice("d1", 71, payload)                      # a duplicate (QoS 1 may resend)
    peer.notice("d1", 72, payload)                      # another task while busy
    busy = peer.wait_for("progress", "d1", lambda m: m["taskId"] == 72)
    assert busy["params"] == {"step": -1, "desc": "busy", "module": "MCU"}
    peer.wait_for("inform", "d1", lambda m: m["taskId"] == 71, timeout=60)
    assert len(served.server.stats.requests) == 1       # one download only
    assert not [m for m in peer.of("progress", "d1")
                if m["taskId"] == 71 and m["params"]["step"] < 0]


def test_bad_config_is_a_clear_error_not_a_crash_loop(tmp_path):
    flash = tmp_path / "flash"
    from fota_host.sim import update as sim

    sim.prepare(flash, "esp32", "1.0.0")
    (flash / "fota_config.json").write_text('{"device_id": "", "broker": {}}')
    proc = mprun.popen(["-m", "fota_sim", "agent"], heap="128K", flash=flash, cwd=flash,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    said = out.wait("config error: device_id must be a non-empty string")
    time.sleep(1)                        # and it stays up, waiting for a fixed config
    alive = proc.poll() is None
    proc.kill()
    proc.wait()
    assert said and alive, out.text()
    assert simflash.status(flash)["version"] == "1.0.0"


def test_empty_prefix_uses_ctwing_literal_topics(devices, mosquitto, served):
    """Real CTWing: no prefix, the device publishes on /ota/inform itself."""
    import json
    import threading

    import paho.mqtt.client as paho

    got: list[tuple[str, dict]] = []
    seen = threading.Event()
    subscribed = threading.Event()

    def on_message(_c, _u, m):
        got.append((m.topic, json.loads(m.payload)))
        seen.set()

    sub = paho.Client(paho.CallbackAPIVersion.VERSION2)
    sub.on_message = on_message
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("/ota/#", 1)
    sub.loop_start()
    try:
        assert subscribed.wait(30)   # SUBACK: the device's first inform cannot go unseen
        devices("d1", topic_prefix="")
        assert seen.wait(30)
        assert got[0] == ("/ota/inform",
                          {"taskId": -1, "params": {"version": "1.0.0", "module": "MCU"}})
        # Notices arrive on the literal /ota/upgrade too. (The subscriber also gets its own
        # notice back on /ota/#: wait for the device's answer itself, not any taskId 3.)
        sub.publish("/ota/upgrade", json.dumps({"taskId": 3, "payload": payload_for(
            {"size": 10, "md5": "0" * 32}, "1.0.0", "http://127.0.0.1:1/file/upgrade/a/b")}),
            qos=1)
        answer = ("/ota/inform", {"taskId": 3, "params": {"version": "1.0.0", "module": "MCU"}})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and answer not in got:
            time.sleep(0.1)
        assert answer in got, got
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_url_as_is_fetches_the_notice_url_unchanged(peer, devices, served):
    dev = devices("d1", download={"url_as_is": True})
    first_inform(peer)
    img = served.add("plain.bin", images.sim_image("esp32", "2.0.0", 200_000))
    peer.notice("d1", 81, payload_for(img, "2.0.0", served.server.url("plain.bin")))
    peer.wait_for("inform", "d1", lambda m: m["taskId"] == 81, timeout=60)
    assert served.server.stats.requests[0]["path"] == "/plain.bin"
    dev.wait_for(lambda s: s["version"] == "2.0.0")
