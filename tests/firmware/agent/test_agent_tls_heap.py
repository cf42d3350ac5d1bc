"""broker.tls_during_download "close" (issue #17): a board that cannot hold two TLS
sessions closes the MQTT TLS session for the length of a download (its record buffers
and the socket go back to the heap before the HTTPS handshake); the final report (100,
or the failure) is delivered once MQTT is back, and no percentages are sent meanwhile.
Real unix port (.mpy), real mosquitto with TLS and a real HTTPS server, both verified
against the dev CA."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fota_host.sim.device import SimDevice
from fota_host.sim.imageserver import ImageServer
from peer import payload_for

# The agent tests' heap on the 64-bit port (MQTTS and HTTPS sessions held together need
# 115 KiB: agent_tls_min_heap_kib).
HEAP = "128K"


@pytest.fixture
def tls_setup(tmp_path: Path, tls_broker):
    started: list[SimDevice] = []

    def device(name: str) -> SimDevice:
        flash = tmp_path / name
        dev = SimDevice(flash, "esp32", name, tls_broker.url,
                        version="1.0.0", heap=HEAP,
                        log=open(tmp_path / f"{name}.log", "w"),  # noqa: SIM115
                        config={"broker": {"ca": "ca.pem", "keepalive": 4, "timeout_s": 5,
                                           "tls_during_download": "close"},
                                "download": {"ca": "ca.pem", "start_delay_s": 0},
                                "health_deadline_s": 20, "progress_interval_s": 0})
        shutil.copy(tls_broker.ca.cert, flash / "ca.pem")
        dev.start()
        started.append(dev)
        return dev

    try:
        with ImageServer(tls_broker.www, tls=tls_broker.context) as srv:
            yield device, tls_broker.peer, srv, tls_broker.info
    finally:
        for dev in started:
            dev.stop()


def _log(dev: SimDevice) -> str:
    return (dev.flash.parent / f"{dev.device_id}.log").read_text()


def test_upgrade_with_mqtt_closed_during_the_download(tls_setup):
    device, peer, srv, info = tls_setup
    dev = device("c1")
    peer.wait_for("inform", "c1", lambda m: m["taskId"] == -1, timeout=60)
    url = f"https://localhost:{srv.port}/file/upgrade/v2.bin/3"
    peer.notice("c1", 5, payload_for(info, "2.0.0", url))
    done = peer.wait_for("progress", "c1", lambda m: m["taskId"] == 5
                         and m["params"]["step"] == 100, timeout=90)
    assert done["params"]["desc"] == "written and verified, rebooting"
    inform = peer.wait_for("inform", "c1", lambda m: m["taskId"] == 5, timeout=90)
    assert inform["params"]["version"] == "2.0.0"
    st = dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0")
    assert st["running"] == "ota_1"
    # MQTT was closed for the download: no percentages reached the platform.
    steps = [m["params"]["step"] for m in peer.of("progress", "c1") if m["taskId"] == 5]
    assert steps == [100]
    assert "MQTT closed for the download" in _log(dev)
    assert dev.boots == 2           # one reboot, into the new image: never out of memory
    assert not peer.errors


def test_failed_download_is_reported_once_mqtt_is_back(tls_setup):
    device, peer, srv, info = tls_setup
    dev = device("c2")
    peer.wait_for("inform", "c2", lambda m: m["taskId"] == -1, timeout=60)
    url = f"https://localhost:{srv.port}/file/upgrade/v2.bin/3"
    peer.notice("c2", 6, payload_for({**info, "md5": "0" * 32}, "2.0.0", url))
    fail = peer.wait_for("progress", "c2", lambda m: m["taskId"] == 6
                         and m["params"]["step"] < 0, timeout=90)
    assert fail["params"]["step"] == -3
    assert "md5 mismatch" in fail["params"]["desc"]
    # back online and idle on the old version: the next inform says so
    peer.notice("c2", 7, payload_for(info, "1.0.0", url))
    again = peer.wait_for("inform", "c2", lambda m: m["taskId"] == 7, timeout=60)
    assert again["params"]["version"] == "1.0.0"
    assert dev.boots == 1
    assert not peer.errors
