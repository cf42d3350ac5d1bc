"""MQTT over TLS and HTTPS images, both verified against the CA in the device config."""

from __future__ import annotations

import shutil
import ssl

from fota_host.boards import certs
from fota_host.images import synthetic as images
from fota_host.sim.device import SimDevice
from fota_host.sim.imageserver import ImageServer
from peer import Peer, payload_for


def test_upgrade_over_mqtts_and_https_with_verified_servers(tmp_path, tls_broker):
    peer = tls_broker.peer                        # the platform side on the plain listener
    dev = None
    try:
        with ImageServer(tls_broker.www, tls=tls_broker.context) as srv:
            flash = tmp_path / "d1"
            # Two TLS sessions at once: on the unix port mbedTLS allocates from the
            # MicroPython heap (on ESP32 it uses the IDF heap), so give it room.
            dev = SimDevice(flash, "esp32", "d1", tls_broker.url,
                            version="1.0.0", heap="256K",
                            log=open(tmp_path / "d1.log", "w"),  # noqa: SIM115
                            config={"broker": {"ca": "ca.pem", "keepalive": 4},
                                    "download": {"ca": "ca.pem"}, "health_deadline_s": 15})
            shutil.copy(tls_broker.ca.cert, flash / "ca.pem")
            dev.start()
            peer.wait_for("inform", "d1", lambda m: m["taskId"] == -1)
            url = f"https://localhost:{srv.port}/file/upgrade/v2.bin/3"
            peer.notice("d1", 5, payload_for({**tls_broker.info}, "2.0.0", url))
            done = peer.wait_for("inform", "d1", lambda m: m["taskId"] == 5, timeout=60)
            assert done["params"]["version"] == "2.0.0"
            st = dev.wait_for(lambda s: not s["pending"] and s["version"] == "2.0.0")
            assert st["running"] == "ota_1"
            assert srv.stats.requests[0]["query"]["deviceId"] == "d1"
        assert not peer.errors
    finally:
        if dev:
            dev.stop()


def test_mqtts_with_an_unknown_ca_never_connects(tmp_path, tls_broker):
    other = certs.make_ca(tmp_path / "other", name="not the broker's CA")
    peer = tls_broker.peer
    flash = tmp_path / "d2"
    dev = SimDevice(flash, "esp32", "d2", tls_broker.url, version="1.0.0",
                    log=open(tmp_path / "d2.log", "w"),  # noqa: SIM115
                    config={"broker": {"ca": "ca.pem", "timeout_s": 2}})
    shutil.copy(other.cert, flash / "ca.pem")
    dev.start()
    try:
        import time

        time.sleep(5)
        assert peer.of("inform", "d2") == []          # it never got through
        assert dev.boots == 1                          # and it did not crash-loop
    finally:
        dev.stop()


def test_https_to_http_redirect_is_refused_unless_insecure_downloads_are_allowed(
        tmp_path, mosquitto, served):
    """An https image address that redirects to http would carry the image in clear text:
    -2 naming the refused host, unless download.allow_insecure (then it is followed)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    pki = tmp_path / "pki"
    ca = certs.make_ca(pki)
    server = certs.issue_server(ca, pki, ["localhost", "127.0.0.1"])
    img = served.add("v2.bin", images.sim_image("esp32", "2.0.0", 200_000))
    plain = f"127.0.0.1:{served.server.port}"

    class Redirect(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(302)
            self.send_header("Location", f"http://{plain}/v2.bin")
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"https://localhost:{httpd.server_address[1]}/file/upgrade/v2.bin/3"
    peer = Peer(mosquitto.port)
    devs = []
    try:
        for dev_id, insecure in (("d1", False), ("d2", True)):
            flash = tmp_path / dev_id
            dev = SimDevice(flash, "esp32", dev_id, mosquitto.url, version="1.0.0",
                            heap="256K", log=open(tmp_path / f"{dev_id}.log", "w"),  # noqa: SIM115
                            config={"download": {"ca": "ca.pem", "allow_insecure": insecure},
                                    "health_deadline_s": 15, "broker": {"keepalive": 4}})
            shutil.copy(ca.cert, flash / "ca.pem")
            dev.start()
            devs.append(dev)
            peer.wait_for("inform", dev_id, lambda m: m["taskId"] == -1)
            peer.notice(dev_id, 6, payload_for(img, "2.0.0", url))
        fail = peer.wait_for("progress", "d1", lambda m: m["params"]["step"] < 0, timeout=60)
        assert fail["params"]["step"] == -2
        assert f"https -> http redirect to {plain} refused" in fail["params"]["desc"], fail
        assert devs[0].status()["version"] == "1.0.0"
        done = peer.wait_for("inform", "d2", lambda m: m["taskId"] == 6, timeout=60)
        assert done["params"]["version"] == "2.0.0"
        assert "following an https -> http redirect" in (tmp_path / "d2.log").read_text()
        assert not peer.errors
    finally:
        for dev in devs:
            dev.stop()
        peer.close()
        httpd.shutdown()
