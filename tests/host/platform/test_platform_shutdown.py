"""A clean stop (SIGTERM) of `fota platform serve` whatever is open at that moment: the
platform ends by itself (a service manager need not kill it) and its log holds no
traceback and no ERROR line.

(Connections open on the embedded broker at shutdown: test_platform_security_broker.py.)
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

from fota_host.platform.options import ServiceOptions
from fota_host.platform.process import PlatformProcess, start_platform
from helpers import free_port
from platform_fakes import FakeDevice, http_get, make_task, wait_for

STOP_DEADLINE = 30.0  # seconds the tests give a SIGTERM before the platform is killed


def clean_log(data: Path) -> str:
    log = (data / "platform.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    return log


def test_downloads_streaming_at_shutdown_end_and_resume_after_restart(tmp_path: Path) -> None:
    """Devices that read slowly (here: nothing) hold 16 MiB downloads when the platform
    stops: they are cut off so the stop ends at once (aiohttp waited up to a minute for each
    handler, and again after cancelling one stuck in sendfile: the stop turned into a
    kill), and each device resumes its download with Range from the restarted platform."""
    image = tmp_path / "big-2.0.0.bin"
    image.write_bytes(os.urandom(16 << 20))
    plat = start_platform(tmp_path / "data")
    dev = FakeDevice("dev-slow", plat.broker).start()
    readers: list[socket.socket] = []
    try:
        _, task = make_task(plat.client(), image, ["dev-slow"])
        plat.client().start_task(task["id"])
        url = dev.download_url(dev.wait_notice(timeout=30))
        parts = urllib.parse.urlsplit(url)
        for _ in range(3):
            sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            readers.append(sock)
        heads = [sock.recv(65536) for sock in readers]
        assert all(h.startswith(b"HTTP/1.1 200") for h in heads), heads
        plat.stop(timeout=STOP_DEADLINE)
        assert plat.returncode == 0, plat.returncode  # ended on SIGTERM, not killed
        log = clean_log(tmp_path / "data")
        assert "3 download(s) cut off" in log, log[-2000:]
        # what each device got before the cut-off: the connection ends, short of the image
        got = []
        for sock, head in zip(readers, heads, strict=True):
            body = head.split(b"\r\n\r\n", 1)[1]
            while True:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    break
                if not data:
                    break
                body += data
            got.append(body)
        assert all(len(b) < image.stat().st_size for b in got), [len(b) for b in got]
        plat.start()
        whole = image.read_bytes()
        new_url = url.replace(f"{parts.hostname}:{parts.port}",
                              urllib.parse.urlsplit(plat.api).netloc)
        for body in got:
            assert whole.startswith(body)
            status, rest, _ = http_get(new_url, {"Range": f"bytes={len(body)}-"}, timeout=60)
            assert status == 206 and body + rest == whole, (status, len(body), len(rest))
    finally:
        for sock in readers:
            sock.close()
        dev.stop()
        plat.stop()


def test_sigterm_while_waiting_for_the_broker_stops_at_once(tmp_path: Path) -> None:
    """An external broker that does not answer: the platform waits up to 15 s for it at
    start. SIGTERM meanwhile ends that wait (it used to hold the stop for the rest of the
    15 s, and a service manager with a shorter stop timeout killed the platform)."""
    data = tmp_path / "data"
    opts = ServiceOptions.build(data, http_port=0, mqtt_port=0,
                                broker=f"mqtt://127.0.0.1:{free_port()}")
    plat = PlatformProcess(opts, 30.0, None)
    plat.launch()
    try:
        wait_for(lambda: "cannot connect to broker" in (data / "platform.log").read_text(),
                 30, what="the platform's first try to reach the broker")
        plat.stop(timeout=10)
        assert plat.returncode == 0, plat.returncode  # ended on SIGTERM, not killed
    finally:
        plat.stop()
    log = clean_log(data)
    assert "platform ready" not in log and not (data / "service.json").exists()


def test_stop_with_http_clients_half_way_is_clean(tmp_path: Path) -> None:
    """SIGTERM while an HTTP client holds a keep-alive connection, one is half-way through
    its request headers, one half-way through a package upload (aiohttp waited a minute
    for that one), and console pages hold their event streams."""
    plat = start_platform(tmp_path / "data")
    port = int(plat.api.rsplit(":", 1)[1])
    token = plat.admin_token
    socks: list[socket.socket] = []

    def connect(first: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(first)
        socks.append(sock)
        return sock

    try:
        assert connect(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n").recv(4096) \
            .startswith(b"HTTP/1.1 401")  # kept alive after its answer
        connect(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Half: wa")
        upload = connect(f"POST /api/packages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         f"{token}\r\nContent-Type: application/octet-stream\r\nContent-Length:"
                         " 1000000\r\nExpect: 100-continue\r\n\r\n".encode())
        assert upload.recv(4096).startswith(b"HTTP/1.1 100")  # the handler reads the body
        upload.sendall(bytes(4000))
        form = urllib.parse.urlencode({"token": token})
        signin = connect(f"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         f"application/x-www-form-urlencoded\r\nContent-Length: {len(form)}"
                         f"\r\n\r\n{form}".encode()).recv(65536).decode()
        cookie = next(line.split(":", 1)[1].split(";")[0].strip()
                      for line in signin.split("\r\n") if line.lower().startswith("set-cookie"))
        for _ in range(2):
            stream = connect(f"GET /console/events HTTP/1.1\r\nHost: x\r\nCookie: {cookie}"
                             "\r\n\r\n".encode())
            assert b"text/event-stream" in stream.recv(65536)
        plat.stop(timeout=STOP_DEADLINE)
        assert plat.returncode == 0, plat.returncode  # ended on SIGTERM, not killed
    finally:
        for sock in socks:
            sock.close()
        plat.stop()
    clean_log(tmp_path / "data")


def test_stop_while_devices_report_is_clean(tmp_path: Path) -> None:
    """SIGTERM while devices send reports as fast as they can (and reconnect at once when
    cut off): the embedded broker's shutdown used to hang for good now and then (a
    client's reader loop that missed its cancel kept reading)."""
    plat = start_platform(tmp_path / "data")
    devices = [FakeDevice(f"busy-{i}", plat.broker).start() for i in range(30)]
    sending = threading.Event()
    sending.set()

    def flood(dev: FakeDevice) -> None:
        while sending.is_set():
            dev.inform(-1, wait=False)
            time.sleep(0.001)

    floods = [threading.Thread(target=flood, args=(d,), daemon=True) for d in devices]
    try:
        for t in floods:
            t.start()
        wait_for(lambda: len(plat.client().list_devices()) == len(devices), 30,
                 what="every device's inform stored")
        plat.stop(timeout=STOP_DEADLINE)
        assert plat.returncode == 0, plat.returncode  # ended on SIGTERM, not killed
    finally:
        sending.clear()
        for t in floods:
            t.join(10)
        for dev in devices:
            dev.stop()
        plat.stop()
    clean_log(tmp_path / "data")


def test_clients_vanishing_half_way_through_a_request_leave_no_traceback(
        tmp_path: Path) -> None:
    """Clients that reset or close their connection half-way through a package upload, a
    JSON body or a console sign-in: one line each, not an ERROR with a traceback (nothing
    failed in the platform), and the platform goes on serving."""
    plat = start_platform(tmp_path / "data")
    port = int(plat.api.rsplit(":", 1)[1])
    auth = f"Authorization: Bearer {plat.admin_token}\r\n"
    halves = [
        f"POST /api/packages HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/"
        "octet-stream\r\nContent-Length: 1000000\r\n\r\n".encode() + bytes(5000),
        f"POST /api/packages HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; "
        "boundary=XX\r\nContent-Length: 1000000\r\n\r\n--XX\r\nContent-Disposition: form-data;"
        ' name="file"; filename="a.bin"\r\n\r\n'.encode() + bytes(5000),
        f"POST /api/tasks HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
        'Content-Length: 100\r\n\r\n{"name":'.encode(),
        b"POST /console/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
        b"x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ntoken=ab",
    ]
    try:
        for first in halves:
            for reset in (True, False):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(first)
                plat.client().list_packages()  # a round trip: the request is under way
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
        log_path = tmp_path / "data" / "platform.log"
        wait_for(lambda: log_path.read_text().count("gone before its request was read") >= 5,
                 30, what="the platform noticing the clients gone")
        assert plat.client().list_packages() == []
    finally:
        plat.stop(timeout=STOP_DEADLINE)
    assert plat.returncode == 0
    clean_log(tmp_path / "data")


def test_https_downloads_cut_off_or_abandoned_leave_no_traceback(tmp_path: Path) -> None:
    """Over TLS (no sendfile): a device that resets its connection mid-download, and one
    still downloading when the platform stops, end with one line each (asyncio's own
    read + write fallback failed with an AttributeError traceback in both cases); ranges
    still come back right."""
    from test_platform_tls import make_cert

    cert, key = make_cert(tmp_path)
    image = tmp_path / "big-2.0.0.bin"
    image.write_bytes(os.urandom(16 << 20))
    whole = image.read_bytes()
    plat = start_platform(tmp_path / "data", tls_cert=cert, tls_key=key)
    dev = FakeDevice("dev-tls", plat.broker).start()
    readers: list[socket.socket] = []
    try:
        _, task = make_task(plat.client(), image, ["dev-tls"])
        plat.client().start_task(task["id"])
        url = dev.download_url(dev.wait_notice(timeout=30))
        ctx = ssl.create_default_context(cafile=str(cert))
        req = urllib.request.Request(url, headers={"Range": "bytes=1000-70999"})
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            assert resp.status == 206 and resp.read() == whole[1000:71000]
        parts = urllib.parse.urlsplit(url)
        for _ in range(2):
            raw = socket.create_connection((parts.hostname, parts.port), timeout=30)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock = ctx.wrap_socket(raw, server_hostname=parts.hostname)
            sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            readers.append(sock)
        gone = readers.pop()
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        log_path = tmp_path / "data" / "platform.log"
        wait_for(lambda: "download stopped: device 'dev-tls'" in log_path.read_text(), 30,
                 what="the platform noticing the device gone")
        plat.stop(timeout=STOP_DEADLINE)
        assert plat.returncode == 0, plat.returncode
        assert "1 download(s) cut off" in clean_log(tmp_path / "data")
    finally:
        for sock in readers:
            sock.close()
        dev.stop()
        plat.stop()
