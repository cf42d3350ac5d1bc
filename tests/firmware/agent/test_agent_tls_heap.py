"""broker.tls_during_download "close" (issue #17): a board that cannot hold two TLS
sessions closes the MQTT TLS session for the length of a download (its record buffers
and the socket go back to the heap before the HTTPS handshake); the final report (100,
or the failure) is delivered once MQTT is back, and no percentages are sent meanwhile.
Real unix port (.mpy), real mosquitto with TLS and a real HTTPS server, both verified
against the dev CA."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest
from fota_host.boards import certs
from fota_host.images import synthetic as images
from fota_host.sim.device import SimDevice
from fota_host.sim.imageserver import ImageServer
from helpers import Mosquitto, free_port
from peer import Peer, payload_for

# The agent tests' heap on the 64-bit port (MQTTS and HTTPS sessions held together need
# 115 KiB: agent_tls_min_heap_kib).
HEAP = "128K"


@pytest.fixture
def tls_setup(tmp_path: Path):
    pki = tmp_path / "pki"
    ca = certs.make_ca(pki)
    server = certs.issue_server(ca, pki, ["localhost", "127.0.0.1"])
    tls_port = free_port()
    broker = Mosquitto(tmp_path, extra_conf=(
        f"listener {tls_port} 127.0.0.1\ncafile {ca.cert}\ncertfile {server.cert}\n"
        f"keyfile {server.key}\n")).start()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    www = tmp_path / "www"
    www.mkdir()
    img = images.sim_image("esp32", "2.0.0", 300_000)
    (www / "v2.bin").write_bytes(img)
    peer = Peer(broker.port)                      # the platform side on the plain listener
    started: list[SimDevice] = []

    def device(name: str) -> SimDevice:
        flash = tmp_path / name
        dev = SimDevice(flash, "esp32", name, f"mqtts://localhost:{tls_port}",
                        version="1.0.0", heap=HEAP,
                        log=open(tmp_path / f"{name}.log", "w"),  # noqa: SIM115
                        config={"broker": {"ca": "ca.pem", "keepalive": 4, "timeout_s": 5,
                                           "tls_during_download": "close"},
                                "download": {"ca": "ca.pem", "start_delay_s": 0},
                                "health_deadline_s": 20, "progress_interval_s": 0})
        shutil.copy(ca.cert, flash / "ca.pem")
        dev.start()
        started.append(dev)
        return dev

    try:
        with ImageServer(www, tls=ctx) as srv:
            yield device, peer, srv, images.digests(img)
    finally:
        for dev in started:
            dev.stop()
        peer.close()
        broker.stop()


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
