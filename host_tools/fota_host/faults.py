"""A TCP proxy that misbehaves on purpose, for fault injection (fleet flags and e2e tests).

Put it between devices and the platform's file server (start the platform with
`--public-url http://HOST:<proxy port>` so notices point at it) or between devices and
the MQTT broker. What it can do, each switchable while it runs:

- `rate`: limit the bytes a second sent to each client (slow links; makes a download
  last long enough to cut it in the middle).
- `drop_after` / `drop_count`: cut a connection after it has sent that many bytes to the
  client, for the first `drop_count` connections (None: every connection).
- `corrupt_at`: flip one byte of each HTTP response body at that offset (a bit error the
  transport did not catch: the device must refuse the image, step -3).
- `delay` / `delay_count`: hold each of the first `delay_count` connections (None: all)
  that many seconds before passing it on (a request that reaches the server late, e.g.
  after its download token expired).
- `stall()` / `release()`: accept connections but forward nothing until released.
- `cut()`: close every open connection now; `refuse(seconds)`: close new connections at
  once for a while (a server or broker that went down and comes back).
"""

from __future__ import annotations

import select
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0,
                 host: str = "127.0.0.1", rate: float | None = None,
                 drop_after: int | None = None, drop_count: int | None = None,
                 corrupt_at: int | None = None, delay: float | None = None,
                 delay_count: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.rate = rate
        self.drop_after = drop_after
        self.drop_count = drop_count
        self.corrupt_at = corrupt_at
        self.delay = delay
        self.delay_count = delay_count
        self.connections = 0     # accepted so far
        self.dropped = 0         # cut by drop_after
        self.sent = 0            # bytes sent to clients in total
        self.requests: list[str] = []  # "GET /path Range: bytes=N-" of each HTTP request
        self._go = threading.Event()
        self._go.set()
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
        self._go.clear()

    def release(self) -> None:
        self._go.set()

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
        self._go.set()
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
        self._track(a, True)
        try:
            while not self._go.wait(0.05):
                if self._closed:
                    return
            if self.delay and (self.delay_count is None or nth <= self.delay_count):
                time.sleep(self.delay)  # the request reaches the server late
            b = socket.create_connection(self.target, timeout=10)
            b.settimeout(None)
            if self.rate:   # a slow link holds little in flight (loopback would take MiBs)
                b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            self._track(b, True)
            drop = self.drop_after if (self.drop_count is None or nth <= self.drop_count) \
                else None
            down = 0            # bytes sent to the client on this connection
            body_at = None      # where the HTTP body starts in the downstream bytes
            head = b""
            req: bytes | None = b""
            started = time.monotonic()
            while not self._closed:
                r, _, _ = select.select([a, b], [], [], 0.2)
                if not self._go.is_set():
                    continue
                for s in r:
                    data = s.recv(16384 if self.rate is None else 4096)
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
                    if self.corrupt_at is not None:
                        data, body_at, head = self._corrupt(data, down, body_at, head)
                    if drop is not None and down + len(data) >= drop:
                        a.sendall(data[: max(0, drop - down)])
                        self.dropped += 1
                        return
                    a.sendall(data)
                    down += len(data)
                    self.sent += len(data)
                    if self.rate:
                        ahead = down / self.rate - (time.monotonic() - started)
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
        pos = body_at + (self.corrupt_at or 0) - down
        if 0 <= pos < len(data):
            data = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1:]
        return data, body_at, b""
