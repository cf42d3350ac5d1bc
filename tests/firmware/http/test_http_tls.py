"""HTTPS downloads on the real unix port against a real TLS server made with the
project's dev CA helpers: CA bundles (every certificate loaded, the right root
anywhere in the file), named certificate failures, insecure-option warnings and
https -> http redirects."""

from __future__ import annotations

import random
import socket
import ssl
import threading
from pathlib import Path

import pytest
from helpers import free_port
from httpkit import Request, Server, fetch, md5

try:
    from fota_host.boards import certs
except ImportError:                              # the layout before boards/
    from fota_host import certs  # type: ignore[no-redef]

IMAGE = random.Random(14).randbytes(30_000)


def pem_to_der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca(d / "ca")
    server = certs.issue_server(ca, d / "ca", ["localhost", "127.0.0.1"])
    elsewhere = certs.issue_server(ca, d / "ca", ["elsewhere.example"], stem="elsewhere")
    others = [certs.make_ca(d / f"other{i}", name=f"unrelated CA {i}") for i in range(3)]
    return {"ca": ca.cert, "server": server.cert, "key": server.key,
            "elsewhere": elsewhere.cert, "elsewhere_key": elsewhere.key,
            **{f"other{i}": o.cert for i, o in enumerate(others)}}


def image_handler(req: Request, sock: socket.socket) -> None:
    sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode() + IMAGE)


def tls_server(pki: dict[str, Path], handler=image_handler, name: str = "server") -> Server:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki[name], pki["key" if name == "server" else f"{name}_key"])
    return Server(handler, tls=ctx)


def bundle(tmp_path: Path, name: str, parts: list[bytes]) -> Path:
    f = tmp_path / name
    f.write_bytes(b"".join(parts))
    return f


def test_a_pem_bundle_with_the_root_last_verifies(tmp_path: Path, pki) -> None:
    ca = bundle(tmp_path, "bundle.pem", [
        b"# unrelated roots first, as in a system bundle\n", pki["other0"].read_bytes(),
        b"\n", pki["other1"].read_bytes(), b"Subject: fota dev CA\n", pki["ca"].read_bytes()])
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=ca)
    assert r.ok and r.md5 == md5(IMAGE), r


def test_a_bundle_with_crlf_line_ends_and_the_root_in_the_middle(tmp_path: Path, pki) -> None:
    parts = [pki[k].read_bytes().replace(b"\n", b"\r\n") for k in ("other0", "ca", "other2")]
    ca = bundle(tmp_path, "bundle.crt", parts)
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="127.0.0.1"), len(IMAGE), ca=ca)
    assert r.ok, r


def test_a_certificate_mbedtls_cannot_parse_does_not_hide_the_others(tmp_path: Path,
                                                                     pki) -> None:
    junk = (b"-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGUgYXQgYWxsLCBqdXN0IHRleHQu"
            b"\n-----END CERTIFICATE-----\n")
    ca = bundle(tmp_path, "bundle.pem", [pki["other0"].read_bytes(), junk,
                                         pki["ca"].read_bytes()])
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=ca)
    assert r.ok, r


def test_a_der_ca_file_verifies(tmp_path: Path, pki) -> None:
    ca = bundle(tmp_path, "ca.der", [pem_to_der(pki["ca"].read_bytes())])
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=ca)
    assert r.ok, r


def test_a_bundle_without_the_root_names_the_certificate_failure(tmp_path: Path,
                                                                 pki) -> None:
    ca = bundle(tmp_path, "bundle.pem", [pki[f"other{i}"].read_bytes() for i in range(3)])
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=ca)
        assert srv.requests == []                # nothing was asked of an unverified server
    assert r.step == -2, r
    assert r.reason.startswith("download failed: host localhost: TLS handshake failed: "
                               "certificate could not be verified ("), r
    assert "not correctly signed by the trusted CA" in r.reason


def test_a_certificate_for_another_host_is_named(tmp_path: Path, pki) -> None:
    with tls_server(pki, name="elsewhere") as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=pki["ca"])
    assert r.step == -2 and "host localhost" in r.reason, r
    assert "certificate could not be verified" in r.reason and "CN" in r.reason


def test_connection_refused_is_not_a_certificate_failure(pki) -> None:
    r = fetch(f"https://localhost:{free_port()}/v2.bin", len(IMAGE), ca=pki["ca"])
    assert r.step == -2, r
    assert "connection refused" in r.reason and "certificate" not in r.reason


def test_a_plain_http_server_behind_an_https_url_is_a_handshake_failure(pki) -> None:
    # A plain HTTP server answers the ClientHello with a 400 and closes.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)

    def answer() -> None:
        conn = lsock.accept()[0]
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    try:
        r = fetch(f"https://localhost:{lsock.getsockname()[1]}/v2.bin", len(IMAGE),
                  ca=pki["ca"])
    finally:
        lsock.close()
    assert r.step == -2 and "TLS handshake failed" in r.reason, r
    assert "certificate" not in r.reason


def test_an_empty_ca_file_is_refused_before_connecting(tmp_path: Path, pki) -> None:
    ca = bundle(tmp_path, "empty.pem", [b"# no certificates here\n"])
    with tls_server(pki) as srv:
        r = fetch(srv.url(host="localhost"), len(IMAGE), ca=ca)
        assert srv.requests == [] and srv.tls_errors == []
    assert r.step == -1 and "no certificate in the CA file" in r.reason, r


def self_redirect(pki, location: str) -> Server:
    def handle(req: Request, sock: socket.socket) -> None:
        if req.path == "/v2.bin":
            image_handler(req, sock)
        else:
            loc = location.format(port=srv.port)
            sock.sendall(f"HTTP/1.1 302 Found\r\nLocation: {loc}\r\n\r\n".encode())

    srv = tls_server(pki, handle)
    return srv


def test_insecure_tls_warns_once(pki) -> None:
    with self_redirect(pki, "/v2.bin") as srv:              # two TLS connections
        r = fetch(srv.url("/dl/v2.bin", host="localhost"), len(IMAGE), insecure=1)
    assert r.ok, r
    warnings = [x for x in r.stdout.splitlines() if "WARNING" in x]
    assert warnings == ["fota: WARNING: image download: the server's certificate is NOT "
                        "verified (insecure option set, no CA)"], r.stdout


def test_an_https_to_http_redirect_is_refused(pki) -> None:
    with Server(image_handler) as plain, self_redirect(
            pki, f"http://127.0.0.1:{plain.port}/v2.bin") as srv:
        r = fetch(srv.url("/dl/v2.bin", host="localhost"), len(IMAGE), ca=pki["ca"])
        assert plain.requests == []
    assert r.step == -2, r
    assert r.reason == ("download failed: host localhost: https -> http redirect to "
                        f"127.0.0.1:{plain.port} refused (insecure downloads not allowed)")


def test_an_https_to_http_redirect_when_insecure_downloads_are_allowed(pki) -> None:
    with Server(image_handler) as plain, self_redirect(
            pki, f"http://127.0.0.1:{plain.port}/v2.bin") as srv:
        r = fetch(srv.url("/dl/v2.bin", host="localhost"), len(IMAGE), ca=pki["ca"],
                  downgrade=1)
    assert r.ok and r.md5 == md5(IMAGE), r
    assert "WARNING: following an https -> http redirect to 127.0.0.1" in r.stdout
