"""The file server: token checks, Range, refusals, path escapes."""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from pathlib import Path

from platform_fakes import FakeDevice, http_get, make_task


def _setup(embedded, firmware: Path, devices: list[str]):
    api = embedded.api
    pkg, task = make_task(api, firmware, devices, "dl")
    fakes = [FakeDevice(d, embedded.broker).start() for d in devices]
    api.start_task(task["id"])
    return api, pkg, task, fakes, [f.wait_notice() for f in fakes]


def test_tokens_ranges_and_refusals(embedded, firmware: Path) -> None:
    embedded.start(token_ttl=4)
    api, pkg, task, (a, b), (na, nb) = _setup(embedded, firmware, ["dl-a", "dl-b"])
    noticed = time.monotonic()
    data = firmware.read_bytes()
    try:
        url = a.download_url(na)
        status, body, headers = http_get(url)
        assert status == 200 and body == data
        # Range: a resumed download
        status, body, headers = http_get(url, {"Range": "bytes=1000-"})
        assert status == 206 and body == data[1000:]
        assert headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
        status, body, _ = http_get(url, {"Range": "bytes=0-99"})
        assert status == 206 and body == data[:100]
        status, body, headers = http_get(url, {"Range": "bytes=-100"})  # the last 100
        assert status == 206 and body == data[-100:]
        assert headers["Content-Range"] == f"bytes {len(data) - 100}-{len(data) - 1}/{len(data)}"
        status, body, _ = http_get(url, {"Range": "bytes=100-99999999"})  # clamped
        assert status == 206 and body == data[100:]
        for bad in (f"bytes={len(data) + 10}-", f"bytes={len(data)}-"):
            status, _, headers = http_get(url, {"Range": bad})
            assert status == 416, bad
            assert headers["Content-Range"] == f"bytes */{len(data)}"
        for ignored in ("bytes=5-2", "items=0-1", "bytes=x-"):  # RFC 9110: the whole file
            status, body, _ = http_get(url, {"Range": ignored})
            assert status == 200 and body == data, ignored
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200 and resp.headers["Content-Length"] == str(len(data))
            assert resp.read() == b""
        # wrong token, another device's token, someone else's device id
        assert http_get(a.download_url(na, token="x" * 22))[0] == 403
        assert http_get(a.download_url(na, token=""))[0] == 403
        assert http_get(a.download_url(nb))[0] == 403  # dl-a using dl-b's token
        assert http_get(a.download_url(na, device="dl-b"))[0] == 403
        assert http_get(b.download_url(nb))[0] == 200
        # wrong task id in the address
        base, file_id, _ = na["payload"]["url"].rsplit("/", 2)
        q = {"fileId": file_id, "taskId": "999", "deviceId": "dl-a",
             "accessToken": na["payload"]["token"]}
        assert http_get(f"{base}?{urllib.parse.urlencode(q)}")[0] == 403
        for bad_task in ("abc", "9" * 30, "-1", "0"):
            q["taskId"] = bad_task
            assert http_get(f"{base}?{urllib.parse.urlencode(q)}")[0] == 403, bad_task
        q["taskId"] = str(task["id"])
        for bad_token in ("é" * 22, "\x00", na["payload"]["token"] + "x"):
            q["accessToken"] = bad_token
            assert http_get(f"{base}?{urllib.parse.urlencode(q)}")[0] == 403, bad_token
        q["accessToken"], q["deviceId"] = na["payload"]["token"], "dl-ä"
        assert http_get(f"{base}?{urllib.parse.urlencode(q)}")[0] == 403
        q["deviceId"] = "dl-a"
        # unknown files and path escapes are 404 (only store files are served)
        q["taskId"] = str(task["id"])
        for bad in ("0" * 20, "../platform.db", "../../etc/passwd", f"{pkg['id']}/../x",
                    "%2e%2e%2fplatform.db", pkg["id"] + ".bin", "", pkg["id"].upper()):
            q["fileId"] = bad
            assert http_get(f"{base}?{urllib.parse.urlencode(q)}")[0] == 404, bad
        for path in ("/file/upgrade/../platform.db", "/file/../platform.db",
                     "/file/upgrade/%2e%2e/platform.db", "/packages/" + pkg["id"] + ".bin"):
            assert http_get(base.rsplit("/file/upgrade", 1)[0] + path)[0] == 404, path
        # the token expires
        time.sleep(max(0.0, noticed + 4.3 - time.monotonic()))
        assert http_get(url)[0] == 403
    finally:
        a.stop()
        b.stop()


def test_many_concurrent_downloads_stream(embedded, tmp_path: Path) -> None:
    """A 4 MiB image to 20 clients at once: all complete and intact."""
    import hashlib
    import os
    from concurrent.futures import ThreadPoolExecutor

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(4 << 20))
    embedded.start()
    api, _, _, fakes, notices = _setup(embedded, big, [f"m{i}" for i in range(20)])
    try:
        digest = hashlib.md5(big.read_bytes()).hexdigest()
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda fn: http_get(fn[0].download_url(fn[1]), timeout=30),
                                    zip(fakes, notices, strict=True)))
        assert all(s == 200 and hashlib.md5(b).hexdigest() == digest for s, b, _ in results)
    finally:
        for f in fakes:
            f.stop()


def test_cancel_cuts_off_a_download_in_flight(embedded, tmp_path: Path) -> None:
    """A client reading slowly: the cancel resets its connection long before the whole
    image went out, and asking again (a resume) is refused. Another device's download
    goes on to the end."""
    import os
    import socket

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    embedded.start()
    api, _, task, (a, b), (na, nb) = _setup(embedded, big, ["cut-a", "cut-b"])
    try:
        def slow_get(url: str) -> tuple[socket.socket, int]:
            """Send the request, read the headers; the socket and body bytes read so far."""
            u = urllib.parse.urlsplit(url)
            s = socket.create_connection((u.hostname, u.port), timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            s.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\n"
                      "Connection: close\r\n\r\n".encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(4096)
            assert b" 200 " in head.split(b"\r\n", 1)[0]
            return s, len(head.split(b"\r\n\r\n", 1)[1])

        def drain(s: socket.socket, got: int) -> int:
            try:
                while chunk := s.recv(1 << 20):
                    got += len(chunk)
            except ConnectionResetError:
                pass
            s.close()
            return got

        cut, kept = slow_get(a.download_url(na)), slow_get(b.download_url(nb))
        time.sleep(0.5)                            # both are well under way
        assert [r["ok"] for r in api.cancel(task["id"], ["cut-a"])] == [True]
        got = drain(*cut)
        assert got < big.stat().st_size // 4, got  # what was in flight, no more
        status, _, _ = http_get(a.download_url(na), {"Range": f"bytes={got}-"})
        assert status == 403
        assert drain(*kept) == big.stat().st_size  # the other device's download went on
        log = (embedded.data / "platform.log").read_text()
        assert "1 download(s) in flight cut off" in log and "Traceback" not in log
    finally:
        a.stop()
        b.stop()
