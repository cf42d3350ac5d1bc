"""Faults on purpose, in one vocabulary: where a fault strikes names its kind.

- `DeviceFaults`: what happens to simulated devices of a fleet (power cuts, late power-on,
  freezes, a broker outage on their MQTT path).
- `LinkFaults`: what a `FaultProxy` does to the bytes of a TCP connection (a slow link,
  a cut after N bytes, a flipped body byte, a request held back).
- `ServerFaults`: how the test image server (`imageserver.ImageServer`) misbehaves as an
  HTTP server (wrong status, truncated body, Range ignored or lied about).
- `FaultProxy`: the one fault-injecting TCP proxy, between devices and the file server or
  the broker. Besides its `LinkFaults`, switchable while it runs: `stall()` / `release()`
  (the path goes silent, nothing is closed), `cut()` (close every open connection now),
  `refuse(seconds)` (close new connections at once for a while: a server or broker that
  went down and comes back).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class DeviceFaults:
    """Device-side faults of a fleet. Each picks its devices at random (seeded) once."""

    power_cut: int = 0          # devices that lose power once in the middle of a download
    offline: int = 0            # devices powered on `offline_for` seconds after the others
    offline_for: float = 10.0
    pause: int = 0              # devices frozen (SIGSTOP) `pause_for` seconds mid-download
    pause_for: float = 5.0
    mqtt_outage: tuple[float, float] | None = None  # (at, seconds): broker link cut, refused
    seed: int = 1


@dataclass
class LinkFaults:
    """What a FaultProxy does to each connection (None: nothing)."""

    rate: float | None = None       # bytes a second sent to each client (a slow link)
    drop_after: int | None = None   # cut a connection after this many bytes to the client ...
    drop_count: int | None = None   # ... for the first N connections (None: every one)
    corrupt_at: int | None = None   # flip the HTTP response body's byte at this offset
    delay: float | None = None      # hold each new connection this long before passing it on
    delay_count: int | None = None  # ... for the first N connections (None: every one)


@dataclass
class ServerFaults:
    """How the image server answers a GET (None/False: as a good server does)."""

    status: int | None = None          # answer every GET with this status
    truncate_at: int | None = None     # close the connection after this many body bytes
    truncate_once: bool = False        # ... only on the first request
    ignore_range: bool = False         # answer Range requests with 200 and the whole file
    bad_content_range: bool = False    # 206 with a Content-Range that does not match
    delay_per_chunk: float = 0.0       # seconds slept per 16 KiB sent
    stall_after: int | None = None     # stop sending (without closing) after this many bytes
    wrong_length: int | None = None    # announce this Content-Length instead


class FaultProxy:
    """A TCP proxy on `host:port` (0: a free port) to `target_host:target_port`.

    `drop_held`: connections opened while stalled are closed on `release()` instead of
    passed on late (on an MQTT path a CONNECT delivered late would take over, and so cut,
    the client's newer session).
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0,
                 host: str = "127.0.0.1", faults: LinkFaults | None = None,
                 drop_held: bool = False) -> None:
        self.target = (target_host, target_port)
        self.faults = faults or LinkFaults()
        self.drop_held = drop_held
        self.connections = 0     # accepted so far
        self.dropped = 0         # cut by drop_after
        self.sent = 0            # bytes sent to clients in total
        self.requests: list[str] = []  # "GET /path Range: bytes=N-" of each HTTP request
        self.forward = threading.Event()  # set while bytes flow; clear: stalled
        self.forward.set()
        self._refuse_until = 0.0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.srv = socket.create_server((host, port), backlog=1024)
        self.host, self.port = host, self.srv.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- controls --
    def stall(self) -> None:
        self.forward.clear()

    def release(self) -> None:
        self.forward.set()

    def refuse(self, seconds: float) -> None:
        self._refuse_until = time.monotonic() + seconds
        self.cut()

    def cut(self) -> None:
        with self._lock:
            socks = list(self._open)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self.forward.set()
        try:
            self.srv.close()
        except OSError:
            pass
        self.cut()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the work --
    def _accept(self) -> None:
        while not self._closed:
            try:
                a, _ = self.srv.accept()
            except OSError:
                if self._closed:
                    return
                continue
            if time.monotonic() < self._refuse_until:
                a.close()
                continue
            with self._lock:
                self.connections += 1
                nth = self.connections
            threading.Thread(target=self._pipe, args=(a, nth), daemon=True).start()

    def _track(self, s: socket.socket, add: bool) -> None:
        with self._lock:
            (self._open.add if add else self._open.discard)(s)

    def _pipe(self, a: socket.socket, nth: int) -> None:
        b = None
        f = self.faults
        self._track(a, True)
        try:
            if not self.forward.is_set():
                while not self.forward.wait(0.05):
                    if self._closed:
                        return
                if self.drop_held:
                    return
            if f.delay and (f.delay_count is None or nth <= f.delay_count):
                time.sleep(f.delay)  # the request reaches the server late
            b = socket.create_connection(self.target, timeout=10)
            b.settimeout(None)
            if f.rate:   # a slow link holds little in flight (loopback would take MiBs)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            self._track(b, True)
            drop = f.drop_after if (f.drop_count is None or nth <= f.drop_count) else None
            down = 0            # bytes sent to the client on this connection
            body_at = None      # where the HTTP body starts in the downstream bytes
            head = b""
            req: bytes | None = b""
            started = time.monotonic()
            while not self._closed:
                if not self.forward.is_set():   # stalled: keep both ends open, pass nothing
                    self.forward.wait(0.05)
                    continue
                r, _, _ = select.select([a, b], [], [], 0.2)
                for s in r:
                    data = s.recv(16384 if f.rate is None else 4096)
                    if not data:
                        return
                    if s is a:
                        if req is not None:       # the first request's head
                            req += data
                            if b"\r\n\r\n" in req or len(req) > 8192:
                                if req.startswith((b"GET ", b"HEAD ")):
                                    self._note_request(req)
                                req = None
                        b.sendall(data)
                        continue
                    if f.corrupt_at is not None:
                        data, body_at, head = self._corrupt(data, down, body_at, head)
                    if drop is not None and down + len(data) >= drop:
                        a.sendall(data[: max(0, drop - down)])
                        self.dropped += 1
                        return
                    a.sendall(data)
                    down += len(data)
                    self.sent += len(data)
                    if f.rate:
                        ahead = down / f.rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
        except OSError:
            return
        finally:
            for s in (a, b):
                if s is not None:
                    self._track(s, False)
                    try:
                        s.close()
                    except OSError:
                        pass

    def _note_request(self, data: bytes) -> None:
        lines = data.split(b"\r\n")
        rng = [ln.split(b":", 1)[1].strip() for ln in lines if ln.lower().startswith(b"range:")]
        self.requests.append(lines[0].decode(errors="replace")
                             + (" Range: " + rng[0].decode(errors="replace") if rng else ""))

    def _corrupt(self, data: bytes, down: int, body_at: int | None,
                 head: bytes) -> tuple[bytes, int | None, bytes]:
        if body_at is None:
            head += data
            end = head.find(b"\r\n\r\n")
            if end < 0:
                return data, None, head
            body_at = end + 4
        pos = body_at + (self.faults.corrupt_at or 0) - down
        if 0 <= pos < len(data):
            data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
        return data, body_at, b""
