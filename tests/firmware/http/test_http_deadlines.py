"""Deadlines and the tick hook on the real unix port: a server that trickles, stalls
or never answers ends in -2 within the idle and overall limits, and tick() keeps
being called while the download waits or reads."""

from __future__ import annotations

import random
import socket
import threading
import time

from httpkit import Request, Server, fetch, md5, send_slowly

IMAGE = random.Random(13).randbytes(12_000)


def trickle_server(stop: threading.Event) -> Server:
    """Announces IMAGE, then sends one byte every two seconds."""

    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode())
        for b in IMAGE:
            if stop.wait(2):
                return
            sock.sendall(bytes([b]))

    return Server(handle)


def test_a_trickling_server_ends_at_the_overall_deadline() -> None:
    stop = threading.Event()
    with trickle_server(stop) as srv:
        r = fetch(srv.url(), len(IMAGE), idle_ms=5000, total_ms=7000)
        stop.set()
    assert r.step == -2, r
    assert r.reason.startswith("download failed: host 127.0.0.1: took longer than 7 s"), r
    assert r.ticks >= 3, r                       # tick() ran while the bytes trickled


def stalling_server(sent: int, stop: threading.Event) -> Server:
    """Sends the head and the first `sent` bytes of IMAGE, then nothing."""

    def handle(req: Request, sock: socket.socket) -> None:
        sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                     + IMAGE[:sent])
        stop.wait(60)

    return Server(handle)


def test_a_server_that_stops_sending_is_stalled() -> None:
    stop = threading.Event()
    with stalling_server(5000, stop) as srv:
        r = fetch(srv.url(), len(IMAGE), idle_ms=2000)
        stop.set()
    assert r.step == -2, r
    assert r.reason == ("download failed: host 127.0.0.1: stalled: no data for 2 s "
                        "(at byte 4096)"), r
    assert r.got == 4096                          # the first block came through
    assert r.ticks >= 1


def test_a_server_that_never_answers_is_stalled() -> None:
    stop = threading.Event()

    def handle(req: Request, sock: socket.socket) -> None:
        stop.wait(60)

    with Server(handle) as srv:
        r = fetch(srv.url(), len(IMAGE), idle_ms=3000)
        stop.set()
    assert r.step == -2 and "127.0.0.1: stalled: no data for 3 s (at byte 0)" in r.reason, r
    assert r.ticks >= 2


def test_a_tls_server_that_never_shakes_hands_times_out(tmp_path) -> None:
    # A TCP listener that accepts and says nothing: the handshake wait is bounded
    # by timeout_ms, and tick() runs meanwhile.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4)
    port = lsock.getsockname()[1]
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(lsock.accept()[0]), daemon=True).start()
    try:
        r = fetch(f"https://127.0.0.1:{port}/v2.bin", len(IMAGE), insecure=1,
                  timeout_ms=3000)
    finally:
        for s in held:
            s.close()
        lsock.close()
    assert r.step == -2, r
    assert r.reason == "download failed: host 127.0.0.1: TLS handshake timed out"
    assert r.ticks >= 2


def test_a_slow_healthy_server_completes_with_ticks_all_along() -> None:
    def handle(req: Request, sock: socket.socket) -> None:
        send_slowly(sock, f"HTTP/1.1 200 OK\r\nContent-Length: {len(IMAGE)}\r\n\r\n".encode()
                    + IMAGE, 1000, 0.3)

    with Server(handle) as srv:
        start = time.monotonic()
        r = fetch(srv.url(), len(IMAGE), idle_ms=10000)
        took = time.monotonic() - start
    assert r.ok and r.md5 == md5(IMAGE), r
    assert took > 3 and r.ticks >= 2, r          # about one tick per second of reading


def test_a_connect_nobody_answers_ends_at_the_connect_deadline() -> None:
    # A listener whose backlog is full drops the SYN: the connect gets no answer,
    # as with a host that vanished. timeout_ms bounds it, with tick() meanwhile.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    filler = [socket.socket()]
    filler[0].connect(("127.0.0.1", port))        # fills the backlog of one
    for _ in range(2):                            # (Linux keeps one more: fill it too)
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        filler.append(s)
    try:
        r = fetch(f"http://127.0.0.1:{port}/v2.bin", len(IMAGE), timeout_ms=3000)
    finally:
        for s in filler:
            s.close()
        lsock.close()
    assert r.step == -2, r
    assert r.reason == "download failed: host 127.0.0.1: connection failed: no answer in 3 s"
    assert r.ticks >= 2
