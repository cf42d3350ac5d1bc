"""Redirects and error texts on the real unix port: 301/302/303/307/308 with absolute,
scheme-relative, absolute-path and relative-path Locations (RFC 9110 §10.2.2), a
limit, and every failure naming the host and the real cause."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess

import pytest
from helpers import free_port
from httpkit import FIRMWARE, HERE, Request, Server, fetch, md5, micropython_bin

IMAGE = random.Random(12).randbytes(20_000)


def image_server(prefix: str = "/files/") -> Server:
    """200 with IMAGE for paths under `prefix`, 404 for the rest."""

    def handle(req: Request, sock: socket.socket) -> None:
        if req.path.startswith(prefix):
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                         + IMAGE)
        else:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    return Server(handle)


def redirector(status: int, location: str, then: Server | None = None) -> Server:
    """Redirects every path to `location` ({port} is this server's port, {other} the
    `then` server's) except /files/v2.bin..., which gets IMAGE."""

    def handle(req: Request, sock: socket.socket) -> None:
        if req.path.startswith("/files/v2.bin"):
            sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                         + IMAGE)
            return
        loc = location.format(port=srv.port, other=then.port if then else 0)
        sock.sendall(f"HTTP/1.1 {status} Moved\r\nLocation: {loc}\r\nContent-Length: 0\r\n\r\n"
                     .encode())

    srv = Server(handle)
    return srv


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("location,path", [
    ("/files/v2.bin", "/files/v2.bin"),                            # absolute path
    ("../../files/v2.bin?sig=a%2Fb", "/files/v2.bin?sig=a%2Fb"),   # relative, dot segments
    ("//127.0.0.1:{port}/files/x/../v2.bin", "/files/v2.bin"),     # scheme-relative
    ("http://127.0.0.1:{port}/files/v2.bin#frag", "/files/v2.bin"),  # absolute url
])
def test_redirects_are_followed_to_the_image(status: int, location: str, path: str) -> None:
    with redirector(status, location) as srv:
        r = fetch(srv.url("/dl/d1/v2.bin?token=t"), len(IMAGE))
    assert r.ok, r
    assert r.md5 == md5(IMAGE)
    assert [q.path for q in srv.requests] == ["/dl/d1/v2.bin?token=t", path]


def test_a_relative_path_location_resolves_against_the_request_folder() -> None:
    with redirector(302, "v2.bin") as srv:
        r = fetch(srv.url("/files/old/../latest"), len(IMAGE))
    assert r.ok, r
    assert srv.requests[-1].path == "/files/v2.bin"


def test_a_redirect_to_another_server_keeps_the_range() -> None:
    with image_server() as files, redirector(307, "http://127.0.0.1:{other}/files/v2.bin",
                                             files) as srv:
        r = fetch(srv.url("/dl/v2.bin"), len(IMAGE), offset=4096)
    assert r.ok and r.offset == 0, r              # the file server ignores Range: from 0
    assert files.requests[0].headers["range"] == "bytes=4096-"
    assert files.requests[0].headers["host"] == f"127.0.0.1:{files.port}"


def test_a_redirect_loop_ends_with_too_many_redirects() -> None:
    with redirector(302, "/dl/again") as srv:
        r = fetch(srv.url("/dl/start"), len(IMAGE))
    assert r.step == -2, r
    assert r.reason == "download failed: host 127.0.0.1: too many redirects (more than 5)"
    assert len(srv.requests) == 6


def test_a_redirect_without_location_is_named() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n")

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2 and "host 127.0.0.1: HTTP 302 without a Location" in r.reason, r


def test_a_redirect_to_an_unsupported_scheme_is_named() -> None:
    with redirector(301, "ftp://mirror.example/v2.bin") as srv:
        r = fetch(srv.url("/dl/v2.bin"), len(IMAGE))
    assert r.step == -2, r
    assert r.reason == ("download failed: host mirror.example: "
                        "unsupported url scheme 'ftp'")


def test_http_errors_name_the_host_and_the_status() -> None:
    with image_server() as srv:
        r = fetch(srv.url("/nothing/here.bin"), len(IMAGE))
    assert r.step == -2 and r.reason == "download failed: host 127.0.0.1: HTTP 404", r


def test_connection_refused_names_the_host_and_the_cause() -> None:
    r = fetch(f"http://127.0.0.1:{free_port()}/v2.bin", len(IMAGE))
    assert r.step == -2, r
    assert r.reason == "download failed: host 127.0.0.1: connection failed: connection refused"


def test_an_unknown_host_is_a_dns_failure() -> None:
    r = fetch("http://no-such-host.invalid/v2.bin", len(IMAGE))
    assert r.step == -2, r
    assert r.reason == "download failed: host no-such-host.invalid: DNS lookup failed"


def test_the_length_check_names_the_host() -> None:
    with image_server() as srv:
        r = fetch(srv.url("/files/v2.bin"), len(IMAGE) + 1)
    assert r.step == -3 and "host 127.0.0.1" in r.reason, r
    assert f"server sends {len(IMAGE)} bytes, the notice says {len(IMAGE) + 1}" in r.reason


def test_malformed_responses_are_named() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2 and r.reason.endswith("127.0.0.1: malformed HTTP response"), r


# RFC 3986 §5.4.1 and §5.4.2: every normal example and the abnormal ones a server
# could send, resolved on the unix port in one process.
RFC3986 = {
    "g:h": "g:h", "g": "http://a/b/c/g", "./g": "http://a/b/c/g", "g/": "http://a/b/c/g/",
    "/g": "http://a/g", "//g": "http://g/", "?y": "http://a/b/c/d;p?y",
    "g?y": "http://a/b/c/g?y", "#s": "http://a/b/c/d;p?q", "g#s": "http://a/b/c/g",
    "g?y#s": "http://a/b/c/g?y", ";x": "http://a/b/c/;x", "g;x": "http://a/b/c/g;x",
    "": "http://a/b/c/d;p?q", ".": "http://a/b/c/", "./": "http://a/b/c/",
    "..": "http://a/b/", "../": "http://a/b/", "../g": "http://a/b/g", "../..": "http://a/",
    "../../": "http://a/", "../../g": "http://a/g", "../../../g": "http://a/g",
    "../../../../g": "http://a/g", "/./g": "http://a/g", "/../g": "http://a/g",
    "g.": "http://a/b/c/g.", ".g": "http://a/b/c/.g", "g..": "http://a/b/c/g..",
    "..g": "http://a/b/c/..g", "./../g": "http://a/b/g", "./g/.": "http://a/b/c/g/",
    "g/./h": "http://a/b/c/g/h", "g/../h": "http://a/b/c/h",
    "g;x=1/./y": "http://a/b/c/g;x=1/y", "g;x=1/../y": "http://a/b/c/y",
    "g?y/./x": "http://a/b/c/g?y/./x", "g?y/../x": "http://a/b/c/g?y/../x",
    "g#s/./x": "http://a/b/c/g", "HTTPS://Other:8443/x/../y": "https://Other:8443/y",
}


def test_locations_resolve_as_rfc3986_says() -> None:
    code = ("import json, sys\nfrom fota.http import resolve\n"
            "refs = json.loads(sys.stdin.read())\n"
            "print(json.dumps([resolve('http://a/b/c/d;p?q', r) for r in refs]))\n")
    env = dict(os.environ, MICROPYPATH=f"{HERE / 'scripts'}:{FIRMWARE}")
    proc = subprocess.run([micropython_bin(), "-c", code], input=json.dumps(list(RFC3986)),
                          env=env, capture_output=True, text=True, timeout=60)
    got = dict(zip(RFC3986, json.loads(proc.stdout), strict=True))
    assert got == RFC3986


def test_an_endless_response_head_is_cut_off() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: 0123456789abcdef\r\n" * 5000)

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2 and r.reason == "download failed: host 127.0.0.1: response head too long"


def test_a_server_that_closes_without_answering_is_named() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        pass                                       # the kit closes the socket

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2, r
    assert r.reason == ("download failed: host 127.0.0.1: connection closed before the "
                        "response head")
