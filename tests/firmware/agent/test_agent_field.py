"""What real deployments hit, on the real unix port against mosquitto: UTF-8 on the wire,
slow links and the watchdog, board limits, a full filesystem, damaged device state
(issues #11.2-#11.6, #12.5, #12.15, #13.5)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from fota_host.boards import chips
from fota_host.images import synthetic as images
from fota_host.sim import mprun
from fota_host.sim import update as sim
from fota_host.sim.device import device_config
from helpers import Output
from peer import payload_for


def log_of(dev) -> str:
    return Path(dev.logfile.name).read_text()


def first_inform(peer, dev="d1", timeout=30):
    return peer.wait_for("inform", dev, lambda m: True, timeout)


def failure(peer, task, dev="d1", timeout=60):
    return peer.wait_for("progress", dev, lambda m: m["taskId"] == task
                         and m["params"]["step"] < 0, timeout)


# --- #11.2: text is UTF-8 bytes on the wire ---------------------------------------------

def test_non_ascii_version_and_chinese_desc_arrive_intact(peer, devices, served):
    """A version `2.0.0-β` and a Chinese desc travel as valid JSON (the peer checks every
    message's shape), the stream stays in step and the platform sees the success."""
    dev = devices("d1", desc_lang="zh")
    first_inform(peer)
    peer.notice("d1", 21, payload_for({"size": 5000, "md5": "0" * 32}, "2.0.0-β",
                                      served.server.notice_url("missing.bin")))
    fail = failure(peer, 21)
    assert fail["params"]["desc"] == "固件下载失败: download failed: host 127.0.0.1: HTTP 404"
    img = served.add("v2.bin", images.sim_image("esp32", "2.0.0-β", 200_000))
    peer.notice("d1", 22, payload_for(img, "2.0.0-β", served.server.notice_url("v2.bin")))
    done = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 22, timeout=60)
    assert done["params"]["version"] == "2.0.0-β"
    dev.wait_for(lambda s: s["version"] == "2.0.0-β" and not s["pending"])
    assert "connection to" not in log_of(dev)          # the MQTT stream never broke


# --- #11.3: slow links, the watchdog and MQTT during downloads --------------------------

def test_slow_download_feeds_the_watchdog_and_keeps_mqtt(peer, devices, served):
    """16 KiB every 3 s (pauses of 3 s, 8 s between two 32 KiB checkpoints) with a 4 s
    watchdog and pings due every second: the watchdog is fed by time (the simulated
    one resets the board on a late feed), the MQTT connection stays up throughout,
    and notices arriving meanwhile are answered."""
    dev = devices("p1", "pico_w", wdt_s=4)
    first_inform(peer, "p1")
    img = served.add("v2.fotb", images.sim_image("pico_w", "2.0.0", 64 * 1024))
    served.server.faults.delay_per_chunk = 3.0
    payload = payload_for(img, "2.0.0", served.server.notice_url("v2.fotb"))
    peer.notice("p1", 31, payload)
    peer.wait_for("progress", "p1", lambda m: m["taskId"] == 31 and m["params"]["step"] > 0)
    peer.notice("p1", 32, payload)                     # answered during the download
    busy = peer.wait_for("progress", "p1", lambda m: m["taskId"] == 32, timeout=30)
    assert busy["params"]["desc"] == "busy"
    done = peer.wait_for("inform", "p1", lambda m: m["taskId"] == 31, timeout=90)
    assert done["params"]["version"] == "2.0.0"
    log = log_of(dev)
    assert "watchdog reset" not in log, log
    download = log.split("machine: hard reset")[0]     # the first boot: the download
    assert " lost: " not in download, log
    assert download.count("fota: mqtt connected to") == 1, log
    assert dev.boots == 2                              # the update's reboot only


class DribblingServer:
    """An HTTP server that answers with a 100 kB body and then sends one byte every
    `every` seconds, for ever (until closed)."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            try:
                c.recv(4096)
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                while not self.stop.wait(self.every):
                    c.sendall(b"\xe9")
            except OSError:
                pass

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/upgrade/f/9"

    def close(self) -> None:
        self.stop.set()
        self.srv.close()


def test_a_dribbling_server_ends_in_minus_2_at_the_overall_deadline(peer, devices):
    """One byte a second never trips the 3 s idle deadline (2 s of slack for a loaded
    machine; a byte every 2 s left 1 s); the 8 s overall deadline ends it with -2, and the
    MQTT link lived through it."""
    server = DribblingServer(1.0)
    try:
        dev = devices("d1", download={"idle_s": 3, "total_s": 8})
        first_inform(peer)
        started = time.monotonic()
        peer.notice("d1", 41, payload_for({"size": 100_000, "md5": "0" * 32}, "2.0.0",
                                          server.url()))
        fail = failure(peer, 41, timeout=60)
        took = time.monotonic() - started
        assert fail["params"]["step"] == -2
        assert "took longer than 8 s" in fail["params"]["desc"], fail
        assert took < 40                                  # ended by the deadline, not hung
        log = log_of(dev)
        assert " lost: " not in log and log.count("fota: mqtt connected to") == 1, log
    finally:
        server.close()


def test_a_silent_server_ends_in_minus_2_at_the_idle_deadline(peer, devices):
    server = DribblingServer(3600.0)
    try:
        devices("d1", download={"idle_s": 2, "total_s": 60})
        first_inform(peer)
        peer.notice("d1", 42, payload_for({"size": 100_000, "md5": "0" * 32}, "2.0.0",
                                          server.url()))
        fail = failure(peer, 42, timeout=40)
        assert fail["params"]["step"] == -2
        assert "stalled: no data for 2 s" in fail["params"]["desc"], fail
    finally:
        server.close()


# --- #11.4: board limits and layouts ---------------------------------------------------

def check_watchdog(peer, devices, board: str, wdt_s: float) -> None:
    limit = chips.BOARDS[board].wdt_max_s
    dev = devices("p1", board, wdt_s=wdt_s)
    msg = first_inform(peer, "p1")
    assert msg["params"]["version"] == "1.0.0"
    log = log_of(dev)
    if wdt_s > limit:
        line = (f"fota: watchdog: wdt_s {wdt_s} is above this board's maximum ({limit:.3f} s):"
                " using the maximum")
        assert log.count(line) == 1, log
    else:
        assert "fota: watchdog:" not in log, log
    assert dev.boots == 1 and "Traceback" not in log


def test_watchdog_above_the_board_maximum_is_clamped_and_the_app_runs(peer, devices, any_board):
    """The rp2 port refuses a WDT timeout above 8388 ms on the RP2040 and 16777 ms on the
    RP2350 (so does the simulated one): the device clamps wdt_s 30 to its board's maximum,
    says so in one line, and runs; an ESP32 takes 30 s as it is."""
    check_watchdog(peer, devices, any_board, 30)


def test_a_watchdog_between_the_two_rp2_limits(peer, devices, pico_board):
    """12 s: clamped on a Pico W (RP2040), taken as it is by a Pico 2 W (RP2350)."""
    check_watchdog(peer, devices, pico_board, 12)


def factory_esp32(flash: Path, broker_url: str, board: str = "esp32") -> None:
    """A plain (non-OTA) ESP32 firmware: one `factory` app partition, no otadata."""
    sim.prepare(flash, board, "1.0.0")
    (flash / "ota_0").rename(flash / "factory")
    (flash / "ota_1").unlink()
    (flash / "otadata.json").unlink()
    (flash / "running").write_text("factory")
    cfg = device_config("f1", broker_url, None, health_deadline_s=15,
                        broker={"keepalive": 4, "timeout_s": 2})
    (flash / "fota_config.json").write_text(json.dumps(cfg))


def test_esp32_without_ota_slots_runs_and_answers_notices_with_minus_1(peer, tmp_path,
                                                                      mosquitto, esp32_board):
    flash = tmp_path / "f1"
    factory_esp32(flash, mosquitto.url, esp32_board)
    proc = mprun.popen(["-m", "fota_sim", "agent"], heap="128K", flash=flash, cwd=flash,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    try:
        msg = first_inform(peer, "f1")
        assert msg["params"]["version"] == "1.0.0"
        peer.notice("f1", 51, payload_for({"size": 5000, "md5": "0" * 32}, "2.0.0",
                                          "http://127.0.0.1:1/file/upgrade/a/b"))
        fail = failure(peer, 51, "f1")
        assert fail["params"]["step"] == -1
        assert fail["params"]["desc"].startswith(
            "OTA is off: this firmware has no OTA partitions (running from factory)")
        assert proc.poll() is None                       # still running
    finally:
        proc.kill()
        proc.wait()
    assert "fota: OTA off: this firmware has no OTA partitions" in out.text()


# --- #11.6, #12.15: a full filesystem ---------------------------------------------------

def _mount_tmpfs(path: Path, size_kib: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
            capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _fill(path: Path, leave: int) -> None:
    """Take the filesystem's space, `leave` bytes excepted (the app's own data)."""
    with open(path / "appdata.bin", "wb") as f:
        while _free(path) > leave:
            try:
                f.write(b"\0" * min(65536, max(4096, _free(path) - leave)))
                f.flush()
            except OSError:
                break


def test_pico_w_refuses_an_update_the_filesystem_cannot_hold(peer, devices, served,
                                                             tmp_path, pico_board):
    """Checked before a byte is downloaded (-4, need and have in KiB); a failed attempt
    gives its space back, so the app can still write."""
    fs = tmp_path / "p1"
    _mount_tmpfs(fs, 1024)
    dev = None
    try:
        dev = devices("p1", pico_board)
        first_inform(peer, "p1")
        _fill(fs, 400 * 1024)
        before = _free(fs)
        big = served.add("big.fotb", images.sim_image(pico_board, "2.0.0", 300 * 1024))
        peer.notice("p1", 61, payload_for(big, "2.0.0", served.server.notice_url("big.fotb")))
        fail = failure(peer, 61, "p1")
        assert fail["params"]["step"] == -4
        m = re.fullmatch(r"not enough space: need (\d+) KiB, have (\d+) KiB",
                         fail["params"]["desc"])
        assert m and int(m[1]) >= 600 and 390 <= int(m[2]) <= 400, fail
        assert served.server.stats.requests == []           # nothing downloaded
        # One that fits but fails its check: its bundle does not stay behind.
        small = served.add("s.fotb", images.sim_image(pico_board, "2.0.0", 120 * 1024))
        bad = payload_for(small, "2.0.0", served.server.notice_url("s.fotb"))
        bad["md5"] = "f" * 32
        peer.notice("p1", 62, bad)
        assert failure(peer, 62, "p1")["params"]["step"] == -3
        assert not (fs / "slots" / "b.img").exists() and not (fs / "slots" / "b").exists()
        assert _free(fs) >= before - 8192
        (fs / "more-app-data.bin").write_bytes(b"x" * 200 * 1024)   # the app keeps its room
    finally:
        if dev:
            dev.stop()
        _umount(fs)


def test_esp32_with_a_full_filesystem_reports_minus_4(peer, devices, served, tmp_path,
                                                      esp32_board):
    """The partitions have their room; the resume journal finds none: a write failure
    (-4), not "internal error: OSError(28)"."""
    fs = tmp_path / "d1"
    # room for the board's two OTA slots (its partitions) and 256 KiB of filesystem
    _mount_tmpfs(fs, 2 * chips.BOARDS[esp32_board].ota_slot // 1024 + 256)
    dev = None
    try:
        dev = devices("d1", esp32_board)
        first_inform(peer)
        _fill(fs, 0)
        img = served.add("v2.bin", images.sim_image(esp32_board, "2.0.0", 200_000))
        peer.notice("d1", 71, payload_for(img, "2.0.0", served.server.notice_url("v2.bin")))
        fail = failure(peer, 71)
        assert fail["params"]["step"] == -4, fail
        assert "internal error" not in fail["params"]["desc"]
        assert dev.status()["version"] == "1.0.0"
    finally:
        if dev:
            dev.stop()
        _umount(fs)


# --- #12.5: damaged device state -------------------------------------------------------

def test_esp32_damaged_trial_record_is_a_failure_and_the_old_image_returns(
        peer, devices, served, tmp_path, esp32_board):
    flash = tmp_path / "d1"
    sim.prepare(flash, esp32_board, "1.0.0")
    img = served.add("v2.bin", images.sim_image(esp32_board, "2.0.0", 200_000))
    assert sim.update(flash, esp32_board, img["url"], img["md5"], img["size"], task=81)["ok"]
    trial = flash / "fota_trial.json"
    text = trial.read_text()
    trial.write_text(text.replace('"slot": "ota_1"', '"slot": "ota_0"'))   # one flipped value
    dev = devices("d1", esp32_board)
    fail = failure(peer, 81)
    assert fail["params"]["step"] == -1
    assert "trial record fota_trial.json is damaged (checksum mismatch)" in \
        fail["params"]["desc"], fail
    # The image on trial was never confirmed: the reset returns to the old one.
    peer.wait(lambda: [m for m in peer.of("inform", "d1")
                       if m["params"]["version"] == "1.0.0"], timeout=60)
    assert not [m for m in peer.of("inform", "d1") if m["taskId"] == 81]
    st = dev.wait_for(lambda s: s["version"] == "1.0.0" and not s["pending"])
    assert st["running"] == "ota_0"
    assert "device state damaged" in log_of(dev)


def test_pico_w_damaged_boot_pointer_is_a_failure_and_said(peer, devices, served, tmp_path,
                                                           pico_board):
    flash = tmp_path / "p1"
    sim.prepare(flash, pico_board, "1.0.0")
    img = served.add("v2.fotb", images.sim_image(pico_board, "2.0.0", None))
    assert sim.update(flash, pico_board, img["url"], img["md5"], img["size"], task=82)["ok"]
    pointer = flash / "fota_boot.json"
    pointer.write_text(pointer.read_text().replace('"trial": 0', '"trial": 7'))
    devices("p1", pico_board)
    fail = failure(peer, 82, "p1")
    assert fail["params"]["step"] == -1
    assert fail["params"]["desc"] == ("boot pointer fota_boot.json is damaged (checksum "
                                      "mismatch): booted slot a"), fail
    inform = peer.wait_for("inform", "p1", lambda m: m["taskId"] == -1)
    assert inform["params"]["version"] == "1.0.0"
    assert not [m for m in peer.of("inform", "p1") if m["taskId"] == 82]


# --- #13.5: both task ids in the device log --------------------------------------------

def test_device_log_names_the_sub_task_and_the_platform_task(peer, devices):
    dev = devices("d1")
    first_inform(peer)
    peer.notice("d1", 91, payload_for({"size": 10, "md5": "0" * 32}, "1.0.0",
                                      "http://127.0.0.1:1/file/upgrade/abc/147589"))
    peer.wait_for("inform", "d1", lambda m: m["taskId"] == 91)
    assert "fota: task 91 (platform task 147589): version 1.0.0 offered" in log_of(dev)


def test_a_broken_agent_never_stops_the_application(devices, tmp_path):
    """A broker CA file that can't be read fails the agent on its first poll: OTA goes
    off with the reason, the board's main loop (and the app in it) goes on."""
    dev = devices("d1", broker={"tls": True, "ca": "missing-ca.pem"})
    deadline = time.monotonic() + 30
    while "OTA off until the next reset" not in log_of(dev) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)                                        # and it stays up
    log = log_of(dev)
    assert "fota: OTA off until the next reset: cannot read the CA file missing-ca.pem" in log
    assert dev.boots == 1 and dev.proc.poll() is None, log
