"""Test kit for fota.http on the MicroPython unix port: scripted HTTP(S) servers on
real sockets (stdlib socketserver), and `fetch()`, which runs the device script
scripts/http_fetch.py and returns its JSON report."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
FIRMWARE = HERE.parents[2] / "firmware"


def micropython_bin() -> str:
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    return str(Path(sys.executable).parent / "micropython")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Report:
    step: int
    reason: str
    offset: int | None
    md5: str
    got: int
    ticks: int
    stdout: str

    @property
    def ok(self) -> bool:
        return self.step == 100


def fetch(url: str, size: int, timeout: float = 120, **opts: object) -> Report:
    """Run the device script against `url`; `opts` become key=value arguments."""
    env = dict(os.environ)
    env["MICROPYPATH"] = f"{HERE / 'scripts'}:{FIRMWARE}:.frozen"
    args = [micropython_bin(), "-m", "http_fetch", url, str(size)]
    args += [f"{k}={v}" for k, v in opts.items()]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no report (rc {proc.returncode}): {proc.stderr}"
    r = json.loads(lines[-1])
    return Report(r["step"], r["reason"], r["offset"], r["md5"], r["got"], r["ticks"],
                  proc.stdout)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


Handler = Callable[[Request, socket.socket], None]


@dataclass
class Server:
    """A threaded TCP server on 127.0.0.1 whose `handler(request, sock)` writes the
    raw response (status line, headers, body framing: all up to the test)."""

    handler: Handler
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    tls_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class _H(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                if outer.tls is not None:
                    try:
                        sock = outer.tls.wrap_socket(sock, server_side=True)
                    except (ssl.SSLError, OSError) as exc:
                        outer.tls_errors.append(str(exc))
                        return
                try:
                    req = _read_request(sock)
                    if req is None:
                        return
                    outer.requests.append(req)
                    outer.handler(req, sock)
                except OSError:
                    pass                       # the client went away: its business
                finally:
                    try:
                        sock.close()
                    except OSError:
                        pass

        class _S(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._srv = _S(("127.0.0.1", 0), _H)
        self.port = self._srv.server_address[1]
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def url(self, path: str = "/v2.bin", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(4096)
        if not part:
            return None
        data += part
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, path, _ = head[0].split(" ", 2)
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)


def range_start(req: Request) -> int:
    """The first byte a `Range: bytes=N-` asks for (0 without one)."""
    r = req.headers.get("range", "")
    if r.startswith("bytes=") and r.endswith("-"):
        return int(r[6:-1])
    return 0


def chunked(body: bytes, sizes: Iterator[int], upper: bool = False, ext: str = "",
            trailer: str = "") -> bytes:
    """`body` in chunked framing: chunk lengths from `sizes`, hex in upper or lower
    case, `ext` appended to each size line, `trailer` lines after the last chunk."""
    out = []
    i = 0
    while i < len(body):
        n = min(next(sizes), len(body) - i)
        size = f"{n:X}" if upper else f"{n:x}"
        out.append(f"{size}{ext}\r\n".encode() + body[i:i + n] + b"\r\n")
        i += n
    out.append(f"0{ext}\r\n{trailer}\r\n".encode())
    return b"".join(out)


def send_slowly(sock: socket.socket, data: bytes, piece: int, pause: float) -> None:
    for i in range(0, len(data), piece):
        sock.sendall(data[i:i + piece])
        time.sleep(pause)
