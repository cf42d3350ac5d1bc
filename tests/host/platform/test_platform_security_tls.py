"""TLS failures said plainly (#12.13, host side): a broker certificate the platform does not
accept is named as such in the log, not as "not reachable"; insecure options are warned."""

from __future__ import annotations

from pathlib import Path

from fota_host.platform.process import start_platform
from helpers import Mosquitto, free_port, wait_port
from test_platform_tls import make_cert


def _tls_broker(tmp_path: Path) -> tuple[Mosquitto, int, Path]:
    cert, key = make_cert(tmp_path)
    port = free_port()
    broker = Mosquitto(tmp_path, extra_conf=f"listener {port} 127.0.0.1\n"
                                            f"certfile {cert}\nkeyfile {key}\n").start()
    wait_port(port)
    return broker, port, cert


def test_a_refused_broker_certificate_is_named(tmp_path: Path) -> None:
    broker, port, _ = _tls_broker(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _ = make_cert(other)  # a CA that did not sign the broker's certificate
    try:
        proc = start_platform(tmp_path / "data", broker=f"mqtts://127.0.0.1:{port}",
                              ca=wrong_ca, timeout=60)
        proc.stop()
    finally:
        broker.stop()
    log = (tmp_path / "data" / "platform.log").read_text()
    assert "TLS certificate of 127.0.0.1 not accepted" in log
    assert "certificate verify failed" in log or "self-signed" in log or "unable" in log
    assert "Traceback" not in log


def test_insecure_tls_is_warned(tmp_path: Path) -> None:
    broker, port, cert = _tls_broker(tmp_path)
    try:
        proc = start_platform(tmp_path / "data", broker=f"mqtts://127.0.0.1:{port}",
                              ca=cert, insecure=True)
        proc.stop()
    finally:
        broker.stop()
    log = (tmp_path / "data" / "platform.log").read_text()
    assert "connected to broker" in log
    assert "WARNING fota.platform: --insecure: the broker certificate's host name is not " \
           "checked" in log
