"""The agent's heap as an application sees it (issue #17), on the real unix port with the
device code as .mpy, a real broker and a real HTTP server: the idle agent stays within
its budget, and a signed image upgrades in a heap little above a plain one's (the HTTP
client is gone before the RSA check: issue #14).

Budgets are the 64-bit port's `make bench` figures (agent_idle_heap_kib 50.8) with room
for fragmentation; a regression such as a module left loaded while idle, or the HTTP
client held through the signature check, fails them."""

from __future__ import annotations

import sys
from pathlib import Path

from fota_host.images import signing
from fota_host.images import synthetic as images
from fota_host.sim.device import SimDevice
from peer import payload_for

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
from bench_agent_idle import ProbeDevice  # noqa: E402

KIB = 1024
IDLE_BUDGET = 56 * KIB
# Measured for this test's image: passes from 96K; with the HTTP client held through the
# RSA check it failed at 96K and 98K (passed at 100K).
SIGNED_HEAP = "98K"


def test_idle_agent_stays_within_its_budget(tmp_path, mosquitto):
    dev = ProbeDevice(tmp_path / "i1", "esp32", "i1", mosquitto.url, version="1.0.0",
                      heap="256K", log=open(tmp_path / "i1.log", "w"),  # noqa: SIM115
                      config={"health_deadline_s": 15})
    dev.start()
    try:
        idle = dev.reading(1)
    finally:
        dev.stop()
    assert idle <= IDLE_BUDGET, f"idle agent holds {idle / KIB:.1f} KiB"


def test_signed_image_upgrades_in_a_tight_heap(tmp_path, mosquitto, peer, served):
    key = signing.generate_key()
    img = served.add("s2.bin", signing.sign(images.sim_image("esp32", "2.0.0", 300_000), key))
    dev = SimDevice(tmp_path / "s1", "esp32", "s1", mosquitto.url, version="1.0.0",
                    heap=SIGNED_HEAP, log=open(tmp_path / "s1.log", "w"),  # noqa: SIM115
                    config={"health_deadline_s": 15, "trusted_keys": [signing.key_digest(key)],
                            "broker": {"keepalive": 4}, "download": {"start_delay_s": 0}})
    dev.start()
    try:
        peer.wait_for("inform", "s1", lambda m: m["taskId"] == -1, timeout=60)
        peer.notice("s1", 8, payload_for(img, "2.0.0", served.server.notice_url("s2.bin")))
        done = peer.wait_for("inform", "s1", lambda m: m["taskId"] == 8, timeout=90)
        assert done["params"]["version"] == "2.0.0"
        st = dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0")
        assert st["running"] == "ota_1"
        assert dev.boots == 2           # one reboot into the new image, no out-of-memory crash
    finally:
        dev.stop()
