"""A small threaded HTTP file server with Range support and fault injection
(`faults.ServerFaults`).

Used by tests and benchmarks to serve images to simulated devices the way real
servers behave, and misbehave: truncated bodies, dropped connections, wrong
status codes, a Content-Range that lies, no Range support, slow links.
"""

from __future__ import annotations

import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .faults import ServerFaults


@dataclass
class Stats:
    requests: list[dict] = field(default_factory=list)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ImageServer:
    """Serves files from `root` at http://127.0.0.1:PORT/<name>."""

    def __init__(self, root: Path, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.root = Path(root)
        self.faults = ServerFaults()
        self.stats = Stats()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if tls else "http"
        if tls:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        # shutdown() waits for the loop's next poll: 50 ms, not the default half second
        # (every test that serves an image stops one)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}/{name}"

    def notice_url(self, name: str, url_task: int | str = 1) -> str:
        """The url of a CTWing notice for file `name`: <base>/file/upgrade/<fileId>/<taskId>."""
        return f"{self.scheme}://127.0.0.1:{self.port}/file/upgrade/{name}/{url_task}"

    def start(self) -> ImageServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        f = self.faults
        parsed = urlparse(h.path)
        name = parsed.path.lstrip("/")
        query = {k: v[0] for k, v in parse_qs(parsed.query).items()}
        if name == "file/upgrade" and "fileId" in query:
            # CTWing's download address: /file/upgrade?fileId=&taskId=&deviceId=&accessToken=
            name = query["fileId"]
        path = (self.root / name).resolve()
        rng = h.headers.get("Range")
        with self.stats.lock:
            first = not self.stats.requests
            self.stats.requests.append({"path": h.path, "range": rng, "query": query})
        if f.status:
            self._plain(h, f.status)
            return
        if not name or self.root.resolve() not in path.parents or not path.is_file():
            self._plain(h, 404)
            return
        size = path.stat().st_size
        start, status = 0, 200
        if rng and not f.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= size:
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{size}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            start, status = int(m.group(1)), 206
        h.send_response(status)
        length = size - start
        h.send_header("Content-Length", str(f.wrong_length or length))
        if status == 206:
            shown = start + 4096 if f.bad_content_range else start
            h.send_header("Content-Range", f"bytes {shown}-{size - 1}/{size}")
        h.send_header("Connection", "close")
        h.end_headers()
        limit = length
        if f.truncate_at is not None and (first or not f.truncate_once):
            limit = min(limit, max(0, f.truncate_at - start))
        sent = 0
        try:
            with open(path, "rb") as src:
                src.seek(start)
                while sent < limit:
                    if f.stall_after is not None and start + sent >= f.stall_after:
                        time.sleep(3600)
                    chunk = src.read(min(16384, limit - sent))
                    if not chunk:
                        break
                    h.wfile.write(chunk)
                    sent += len(chunk)
                    if f.delay_per_chunk:
                        time.sleep(f.delay_per_chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with self.stats.lock:
            self.stats.bytes_sent += sent
        h.close_connection = True

    @staticmethod
    def _plain(h: BaseHTTPRequestHandler, status: int) -> None:
        body = f"{status}\n".encode()
        h.send_response(status)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(body)
