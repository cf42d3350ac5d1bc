"""The upgrade loop under faults, end to end, against the embedded broker and mosquitto.

Each test checks both sides at the end: the device's slots and running version (simflash
status) and the platform's sub-task; and that no device ever booted anything but its old
image or the complete, verified new one.
"""

from __future__ import annotations

import re
import time

from e2e_world import (
    NEW,
    OLD,
    SIZE,
    assert_only_whole_images_booted,
    assert_stayed_on_old,
    assert_upgraded,
    boots,
)
from fota_host.images import synthetic as images

RANGE = re.compile(r"Range: bytes=(\d+)-")


def resumed_from(world, dev_id: str) -> list[int]:
    """Range starts (> 0) of the device's download requests seen by the proxy."""
    return [int(m[1]) for r in world.proxy.requests if f"deviceId={dev_id}" in r
            for m in [RANGE.search(r)] if m and int(m[1]) > 0]


def wait_mid_download(dev, timeout: float = 20) -> None:
    """Until the device's resume journal has a checkpoint (the image is being written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (dev.flash / "fota_journal.json").stat().st_size >= 32:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError("the download never started")


def wait_log(world, dev_id: str, pattern: str, timeout: float = 15) -> None:
    """Until the device's log has a line matching `pattern`."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, world.log(dev_id)):
        assert time.monotonic() < deadline, world.log(dev_id)[-2000:]
        time.sleep(0.1)


def upgrade_pair(world, device_config=None, **pkg_kw):
    """One ESP32 and one Pico W, each in its own task (a task has one package)."""
    world.device("e1", "esp32", **(device_config or {}))
    world.device("p1", "pico_w", **(device_config or {}))
    world.online("e1", "p1")
    out = {}
    for dev_id, board in (("e1", "esp32"), ("p1", "pico_w")):
        pkg = world.package(board, **pkg_kw)
        out[dev_id] = (world.task(pkg, dev_id), world.images[pkg["id"]])
    return out


def test_corrupted_image_is_refused_with_step_minus_3(world):
    world.start(proxy={"corrupt_at": 5000})
    for dev_id, (tid, image) in upgrade_pair(world).items():
        sub = world.wait_sub(tid, dev_id)
        assert (sub["state"], sub["step"]) == ("failed", -3), sub
        assert "mismatch" in sub["desc"]
        assert_stayed_on_old(world, dev_id)
        assert_only_whole_images_booted(world, dev_id, image)


def test_wrong_image_header_is_refused_before_anything_is_booted(world):
    world.start()
    world.device("e1", "esp32")
    world.device("p1", "pico_w")
    world.online("e1", "p1")
    esp = bytearray(images.sim_image("esp32", NEW, SIZE["esp32"]))
    esp[0] = 0x00                           # not the ESP image magic 0xE9
    pico = b"XOTB" + images.sim_image("pico_w", NEW, SIZE["pico_w"])[4:]
    for dev_id, data in (("e1", bytes(esp)), ("p1", pico)):
        pkg = world.package(world.devices[dev_id].board, data=data)
        tid = world.task(pkg, dev_id)
        sub = world.wait_sub(tid, dev_id)
        assert (sub["state"], sub["step"]) == ("failed", -3), sub
        assert_stayed_on_old(world, dev_id)
    assert world.devices["e1"].status()["states"]["ota_1"] == "undefined"  # never selected
    assert world.devices["p1"].status()["versions"]["b"] is None


def test_power_cut_during_the_write_resumes_and_succeeds(world):
    world.start(proxy={"rate": 48 * 1024})
    pair = upgrade_pair(world)
    for dev_id in pair:
        wait_mid_download(world.devices[dev_id])
        world.devices[dev_id].kill()       # SIGKILL mid-write; the supervisor powers it on
    for dev_id, (tid, image) in pair.items():
        sub = world.wait_sub(tid, dev_id)
        assert sub["state"] == "succeeded", sub
        assert_upgraded(world, dev_id, image)
        assert resumed_from(world, dev_id), world.proxy.requests  # resumed, not from byte 0
        assert "exited with status -9" in world.log(dev_id)


def test_broker_restart_mid_update(world):
    world.start(proxy={"rate": 32 * 1024}, retries=2, retry_backoff=0.5)
    world.device("e1", "esp32")
    world.online("e1")
    pkg = world.package("esp32")
    tid = world.task(pkg, "e1")
    wait_mid_download(world.devices["e1"])
    world.restart_broker(down=1.0)
    if world.mosquitto:   # the download went on while the broker was away
        assert (world.devices["e1"].flash / "fota_journal.json").exists()
    sub = world.wait_sub(tid, "e1", timeout=60)
    assert sub["state"] == "succeeded", sub
    assert_upgraded(world, "e1", world.images[pkg["id"]])


def test_http_server_dropping_connections(world):
    # the first two downloads are cut after 40 KB; each failure (-2) is retried and resumed
    # (a slow link: the journal keeps a checkpoint every ~15 ms of download)
    world.start(proxy={"drop_after": 40_000, "drop_count": 2, "rate": 64 * 1024}, retries=3,
                retry_backoff=0.3)
    world.device("e1", "esp32")
    world.online("e1")
    pkg = world.package("esp32")
    tid = world.task(pkg, "e1")
    sub = world.wait_sub(tid, "e1")
    assert sub["state"] == "succeeded", sub
    assert sub["attempts"] == 2 and world.proxy.dropped == 2
    assert_upgraded(world, "e1", world.images[pkg["id"]])
    starts = resumed_from(world, "e1")
    assert len(starts) == 2 and 0 < starts[0] <= 40_000 < starts[1] <= 80_000, \
        world.proxy.requests


def test_new_image_failing_its_health_check_rolls_back_and_is_reported(world):
    world.start()
    for dev_id, (tid, image) in upgrade_pair(world, {"health_deadline_s": 6},
                                             fail_health=True).items():
        sub = world.wait_sub(tid, dev_id)
        assert (sub["state"], sub["step"]) == ("failed", -1), sub
        assert sub["desc"].startswith("rolled back:"), sub
        dev = world.devices[dev_id]
        st = dev.wait_for(lambda s: s["version"] == OLD and not s["pending"], timeout=10)
        # it did try the new image (a trial boot), then came back to the old one
        seen = boots(world, dev_id)
        assert (NEW, True) in [(v, t) for _, v, t in seen], seen
        assert seen[-1][1] == OLD
        assert_only_whole_images_booted(world, dev_id, image)
        if dev.board == "esp32":
            assert st["states"][next(s for s, v in st["versions"].items() if v == NEW)] \
                == "aborted"


def test_device_offline_when_the_task_starts_is_served_on_its_next_inform(world):
    world.start()
    dev = world.device("e1", "esp32", start=False)
    pkg = world.package("esp32")
    tid = world.task(pkg, "e1")
    time.sleep(1.5)
    assert world.sub(tid, "e1")["state"] == "pending"
    assert dev.status()["version"] == OLD
    dev.start()                               # comes online: informs, gets the notice
    sub = world.wait_sub(tid, "e1")
    assert sub["state"] == "succeeded", sub
    assert_upgraded(world, "e1", world.images[pkg["id"]])


def test_expired_token_is_refused_then_a_retry_brings_a_fresh_one(world):
    # The first download request reaches the server 6 s late: its 3 s token has expired.
    # (3 s leaves a loaded machine time to bring the retry's request in with its new token.)
    world.start(proxy={"delay": 6.0, "delay_count": 1}, token_ttl=3, retries=1,
                retry_backoff=0.3)
    world.device("e1", "esp32", download={"timeout_s": 10})
    world.online("e1")
    pkg = world.package("esp32")
    tid = world.task(pkg, "e1")
    sub = world.wait_sub(tid, "e1")
    assert sub["state"] == "succeeded", sub
    assert sub["attempts"] == 1 and world.proxy.connections == 2
    assert "HTTP 403" in world.log("e1")
    assert "token expired" in (world.tmp / "platform" / "platform.log").read_text()
    assert_upgraded(world, "e1", world.images[pkg["id"]])


def test_cancel_during_a_download(world):
    world.start(proxy={})
    world.device("e1", "esp32")
    world.online("e1")
    pkg = world.package("esp32")
    world.proxy.stall()                       # the download is under way, nothing received
    tid = world.task(pkg, "e1")
    deadline = time.monotonic() + 10
    while not world.proxy.connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert world.proxy.connections, "the device never tried to download"
    assert [r["ok"] for r in world.api.cancel(tid, ["e1"])] == [True]
    pushes = world.sub(tid, "e1")["pushes"]
    world.proxy.release()                     # its token is dead now: 403, the device gives up
    wait_log(world, "e1", r"failed: .*HTTP 403")
    time.sleep(1.0)                           # its -2 report reaches the platform
    sub = world.sub(tid, "e1")
    assert sub["state"] == "cancelled" and sub["pushes"] == pushes, sub
    assert world.api.get_task(tid)["state"] == "finished"
    assert_stayed_on_old(world, "e1")
    assert world.devices["e1"].status()["states"]["ota_1"] == "undefined"


def test_cancel_cuts_off_a_download_in_flight(world):
    """Bytes already flowing: the file server closes the connection at the cancel, the
    device's resume is refused, it reports -2 and stays on its old image."""
    world.start(proxy={"rate": 64 * 1024})
    world.device("e1", "esp32")
    world.online("e1")
    # 1 MiB at 64 KiB/s: far more than the buffers along the way hold at the cancel
    pkg = world.package("esp32", data=images.sim_image("esp32", NEW, 1 << 20))
    tid = world.task(pkg, "e1")
    wait_mid_download(world.devices["e1"])
    assert [r["ok"] for r in world.api.cancel(tid, ["e1"])] == [True]
    wait_log(world, "e1", r"task \d+ failed")
    assert "download(s) in flight cut off" in (world.tmp / "platform" / "platform.log").read_text()
    time.sleep(1.0)                           # its -2 report reaches the platform
    sub = world.sub(tid, "e1")
    assert sub["state"] == "cancelled", sub
    assert_stayed_on_old(world, "e1")
    assert world.devices["e1"].status()["states"]["ota_1"] == "undefined"
