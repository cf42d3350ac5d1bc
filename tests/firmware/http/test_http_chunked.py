"""Chunked response bodies (RFC 9112 §7.1) on the real unix port: chunk lines with
extensions, upper- and lower-case hex, a trailer; the notice's size is the length
check; resume keeps using Range where the server honours it."""

from __future__ import annotations

import itertools
import random
import socket

import pytest
from httpkit import Request, Server, chunked, fetch, md5, range_start, send_slowly

IMAGE = random.Random(11).randbytes(50_000 + 123)     # not a whole number of blocks


def _framings() -> dict[str, bytes]:
    rnd = random.Random(5)
    return {
        "lower hex, 1000-byte chunks": chunked(IMAGE, itertools.repeat(1000)),
        "upper hex, block-sized chunks": chunked(IMAGE, itertools.repeat(4096), upper=True),
        "extensions and a trailer": chunked(
            IMAGE, itertools.repeat(7000), ext=';x=y;name="q r"',
            trailer="X-Checksum: abc\r\nExpires: never\r\n"),
        "random sizes, one-byte chunks around block edges": chunked(
            IMAGE, itertools.chain([4095, 1, 1, 1, 4093], (rnd.randint(1, 9000)
                                                           for _ in itertools.count()))),
        "leading zeros and spaces before CRLF": chunked(
            IMAGE, itertools.repeat(0x800), ext="  ").replace(b"800  \r\n", b"0000800 \r\n"),
    }


FRAMINGS = _framings()


def chunked_server(body: bytes = b"", honour_range: bool = False,
                   piece: int = 0) -> Server:
    """Answers every GET with a chunked 200 of IMAGE (framed as `body`), or a chunked
    206 from the asked offset when honour_range is set."""

    def handle(req: Request, sock: socket.socket) -> None:
        start = range_start(req)
        if honour_range and start:
            data = chunked(IMAGE[start:], itertools.repeat(3000))
            head = (f"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-"
                    f"{len(IMAGE) - 1}/{len(IMAGE)}\r\n")
        else:
            data, head = body, "HTTP/1.1 200 OK\r\n"
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        if piece:
            send_slowly(sock, head.encode() + data, piece, 0.001)
        else:
            sock.sendall(head.encode() + data)

    return Server(handle)


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_chunked_image_arrives_whole(framing: str) -> None:
    with chunked_server(FRAMINGS[framing]) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.ok, r
    assert r.md5 == md5(IMAGE) and r.got == len(IMAGE)


def test_chunked_steady_state_allocates_nothing() -> None:
    # The heap is locked for every block after the first (as the engine does with
    # lock_heap); the server writes in small pieces, so reads land mid-buffer.
    with chunked_server(FRAMINGS["random sizes, one-byte chunks around block edges"],
                        piece=1500) as srv:
        r = fetch(srv.url(), len(IMAGE), lock=1)
    assert r.ok, r
    assert r.md5 == md5(IMAGE)


def test_plain_body_in_small_pieces_allocates_nothing() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        send_slowly(sock, f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                    + IMAGE, 700, 0.001)

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE), lock=1)
    assert r.ok, r
    assert r.md5 == md5(IMAGE)


def test_resume_uses_range_when_the_server_honours_it() -> None:
    with chunked_server(FRAMINGS["lower hex, 1000-byte chunks"], honour_range=True) as srv:
        r = fetch(srv.url(), len(IMAGE), offset=8192)
    assert r.ok, r
    assert r.offset == 8192 and r.md5 == md5(IMAGE[8192:])
    assert srv.requests[0].headers["range"] == "bytes=8192-"


def test_resume_restarts_from_zero_when_a_chunked_200_comes_back() -> None:
    with chunked_server(FRAMINGS["upper hex, block-sized chunks"]) as srv:
        r = fetch(srv.url(), len(IMAGE), offset=8192)
    assert r.ok, r
    assert r.offset == 0 and r.md5 == md5(IMAGE)


def test_a_chunked_body_shorter_than_the_notice_is_a_download_failure() -> None:
    short = chunked(IMAGE[:30_000], itertools.repeat(5000))
    with chunked_server(short) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2, r
    assert r.reason == ("download failed: host 127.0.0.1: ended early: the server closed "
                        f"after 30000 of {len(IMAGE)} bytes")


def test_a_plain_body_cut_short_names_the_host_and_where() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                     + IMAGE[:10_000])

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2, r
    assert r.reason == ("download failed: host 127.0.0.1: ended early: the server closed "
                        f"after 10000 of {len(IMAGE)} bytes")


def test_a_chunked_body_longer_than_the_notice_is_refused() -> None:
    longer = chunked(IMAGE + b"extra bytes", itertools.repeat(len(IMAGE) + 11))
    with chunked_server(longer) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -3, r
    assert "127.0.0.1" in r.reason and f"notice's {len(IMAGE)} bytes" in r.reason


@pytest.mark.parametrize("bad", [b"zz\r\n", b"\r\n", b"12g4\r\n", b"-5\r\n"])
def test_a_broken_chunk_header_is_named(bad: bytes) -> None:
    body = chunked(IMAGE[:5000], itertools.repeat(5000))[:-5] + bad + b"junk"
    with chunked_server(body) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2 and "bad chunk header" in r.reason and "127.0.0.1" in r.reason, r


def test_other_transfer_encodings_are_named() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n")

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE))
    assert r.step == -2 and "unsupported transfer encoding 'gzip, chunked'" in r.reason, r
