from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fota_host.sim.device import SimDevice  # noqa: E402
from peer import Peer  # noqa: E402

# A new image has 15 s to come online and be confirmed: plenty on a busy machine (the
# rollback tests set a shorter deadline, which they wait out).
FAST = {"health_deadline_s": 15, "progress_interval_s": 1,
        "broker": {"keepalive": 4, "timeout_s": 2}, "download": {"start_delay_s": 0}}


@pytest.fixture
def peer(mosquitto):
    p = Peer(mosquitto.port)
    yield p
    p.client.disconnect()   # first: paho's loop thread then ends at once, not at its 1 s tick
    p.close()
    assert not p.errors, f"messages off the spec: {p.errors}"


@pytest.fixture
def devices(tmp_path, mosquitto):
    """Factory: start simulated boards (supervised, rebooting) against the broker."""
    started: list[SimDevice] = []

    def start(device_id: str = "d1", board: str = "esp32", version: str = "1.0.0",
              broker_url: str | None = None, **config) -> SimDevice:
        cfg = {**FAST, **config}
        cfg["broker"] = {**FAST["broker"], **config.get("broker", {})}
        cfg["download"] = {**FAST["download"], **config.get("download", {})}
        log = open(tmp_path / f"{device_id}.log", "w")  # noqa: SIM115 (closed at exit)
        dev = SimDevice(tmp_path / device_id, board, device_id, broker_url or mosquitto.url,
                        None, version, "128K", log=log, config=cfg)
        dev.logfile = log
        dev.start()
        started.append(dev)
        return dev

    yield start
    for dev in started:
        dev.stop()
        dev.logfile.close()


import ssl  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from fota_host.boards import certs  # noqa: E402
from fota_host.images import synthetic as images  # noqa: E402
from helpers import Mosquitto, free_port  # noqa: E402


@dataclass
class TlsBroker:
    """A mosquitto with a TLS listener (`url`, verified against `ca`) beside its plain one
    (where `peer`, the platform side, is connected), and a TLS context for an HTTPS image
    server with the same CA; `www` holds v2.bin (esp32 2.0.0), whose digests are `info`."""

    ca: certs.Issued
    url: str
    peer: Peer
    context: ssl.SSLContext
    www: Path
    info: dict


@pytest.fixture
def tls_broker(tmp_path: Path):
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
    peer = Peer(broker.port)
    try:
        yield TlsBroker(ca, f"mqtts://localhost:{tls_port}", peer, ctx, www,
                        images.digests(img))
    finally:
        peer.close()
        broker.stop()
