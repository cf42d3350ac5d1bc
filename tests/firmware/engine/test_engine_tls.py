"""HTTPS image downloads on the unix port: the server is verified against the configured CA."""

from __future__ import annotations

import ssl

import pytest
from fota_host.boards import certs
from fota_host.images import esp_image
from fota_host.sim import flash as simflash
from fota_host.sim import update as sim
from fota_host.sim.imageserver import ImageServer

# mbedTLS takes its buffers from the MicroPython heap on the unix port (and Pico W).
HEAP = "72K"


@pytest.fixture
def tls_served(tmp_path):
    ca = certs.make_ca(tmp_path / "pki")
    server = certs.issue_server(ca, tmp_path / "pki", ["localhost", "127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    root = tmp_path / "www"
    root.mkdir()
    data = esp_image.build_sim_image("2.0.0", 200_000)
    (root / "v2.bin").write_bytes(data)
    from fota_host.images.synthetic import digests

    with ImageServer(root, tls=ctx) as srv:
        yield srv, ca, digests(data)


def flash(tmp_path):
    f = tmp_path / "flash"
    sim.prepare(f, "esp32", "1.0.0")
    return f


def test_https_with_the_right_ca_succeeds(tmp_path, tls_served):
    srv, ca, info = tls_served
    f = flash(tmp_path)
    report = sim.update(f, "esp32", srv.url("v2.bin", "localhost"), info["md5"], info["size"],
                        ca=ca.cert, heap=HEAP)
    assert report["ok"], report
    assert simflash.status(f)["versions"]["ota_1"] == "2.0.0"


def test_https_with_another_ca_is_refused(tmp_path, tls_served):
    srv, _, info = tls_served
    other = certs.make_ca(tmp_path / "other", name="someone else")
    f = flash(tmp_path)
    report = sim.update(f, "esp32", srv.url("v2.bin", "localhost"), info["md5"], info["size"],
                        ca=other.cert, heap=HEAP)
    assert report["step"] == -2 and "TLS handshake failed" in report["reason"], report
    assert "not correctly signed" in report["reason"]
    assert srv.stats.requests == []                       # no request went out
    assert simflash.status(f)["boot"] == "ota_0"


def test_https_with_a_certificate_for_another_host_is_refused(tmp_path, tls_served):
    srv, ca, info = tls_served
    wrong = certs.issue_server(ca, tmp_path / "pki2", ["elsewhere.example"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(wrong.cert, wrong.key)
    with ImageServer(srv.root, tls=ctx) as bad:
        f = flash(tmp_path)
        report = sim.update(f, "esp32", bad.url("v2.bin", "localhost"), info["md5"],
                            info["size"], ca=ca.cert, heap=HEAP)
    assert report["step"] == -2 and "TLS handshake failed" in report["reason"], report
    assert bad.stats.requests == []


def test_https_without_a_ca_is_refused_unless_insecure_is_allowed(tmp_path, tls_served):
    srv, _, info = tls_served
    f = flash(tmp_path)
    report = sim.update(f, "esp32", srv.url("v2.bin", "localhost"), info["md5"], info["size"])
    assert report["step"] == -1 and "no CA configured" in report["reason"]
    assert srv.stats.requests == []
    report = sim.update(f, "esp32", srv.url("v2.bin", "localhost"), info["md5"], info["size"],
                        insecure=True, heap=HEAP)
    assert report["ok"], report
