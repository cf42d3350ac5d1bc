"""The idle agent gives its RAM back: what an update loads (engine, journal, HTTP client,
decoders) leaves again when the update ends without a reboot, so the application keeps
the heap it had. Real unix port with the device code as .mpy, real broker, real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

from fota_host.images import synthetic as images
from helpers import free_port
from peer import payload_for

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from bench_agent_idle import ProbeDevice  # noqa: E402

KIB = 1024


def test_idle_heap_is_the_same_before_and_after_failed_updates(tmp_path, mosquitto, peer,
                                                               served):
    img = served.add("v2.bin", images.sim_image("esp32", "2.0.0", 200_000))
    dev = ProbeDevice(tmp_path / "d1", "esp32", "d1", mosquitto.url, version="1.0.0",
                      heap="256K", log=open(tmp_path / "d1.log", "w"),  # noqa: SIM115
                      config={"health_deadline_s": 15, "broker": {"keepalive": 4}})
    dev.start()
    try:
        idle = dev.reading(1)
        # 1: the whole image comes down, then its MD5 does not match (engine, journal,
        # HTTP client and the checks all loaded).
        peer.notice("d1", 11, payload_for({**img, "md5": "0" * 32}, "2.0.0",
                                          served.server.notice_url("v2.bin")))
        fail = peer.wait_for("progress", "d1", lambda m: m["taskId"] == 11
                             and m["params"]["step"] < 0, timeout=60)
        assert fail["params"]["step"] == -3
        after_md5 = dev.reading(2)
        # 2: nothing listens where the image should be (the download fails at once).
        peer.notice("d1", 12, payload_for(img, "2.0.0",
                                          f"http://127.0.0.1:{free_port()}/file/upgrade/x/1"))
        fail = peer.wait_for("progress", "d1", lambda m: m["taskId"] == 12
                             and m["params"]["step"] < 0, timeout=60)
        assert fail["params"]["step"] == -2
        after_refused = dev.reading(3)
    finally:
        dev.stop()
    assert abs(after_md5 - idle) <= KIB, (idle, after_md5)
    assert abs(after_refused - idle) <= KIB, (idle, after_refused)
    # and the device is still the old version, running (no reboot happened)
    assert dev.boots == 1
