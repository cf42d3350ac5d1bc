"""The file server and the listeners against hostile clients (#12.3, #12.12): RFC 9110
ranges in every form; idle connections are closed and capped per address, downloads and
MQTT logins keep working under a thousand of them, and the log stays small."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from platform_fakes import FakeDevice, http_get, make_task, wait_device_state, wait_for

IDLE = 1100


def _setup(env, firmware: Path, device: str = "r-1"):
    api = env.api
    _, task = make_task(api, firmware, [device], "sec")
    dev = FakeDevice(device, env.broker).start()
    api.start_task(task["id"])
    return api, task, dev, dev.wait_notice()


def test_ranges_follow_rfc9110(embedded, firmware: Path) -> None:
    embedded.start()
    api, task, dev, notice = _setup(embedded, firmware)
    data = firmware.read_bytes()
    size = len(data)
    url = dev.download_url(notice)
    try:
        partial = {  # Range -> (first byte, end) of a 206
            "bytes=0-0": (0, 1),
            "bytes=10-19": (10, 20),
            "bytes=1000-": (1000, size),
            f"bytes={size - 1}-": (size - 1, size),
            "bytes=-1": (size - 1, size),
            "bytes=-100": (size - 100, size),
            f"bytes=-{size + 50}": (0, size),  # a suffix longer than the file: all of it
            "bytes=100-99999999": (100, size),
            "Bytes=5-6": (5, 7),  # the unit is case-insensitive
            "bytes=5-6 ": (5, 7),
        }
        for rng, (first, end) in partial.items():
            status, body, headers = http_get(url, {"Range": rng})
            assert (status, body) == (206, data[first:end]), rng
            assert headers["Content-Range"] == f"bytes {first}-{end - 1}/{size}", rng
        for rng in (f"bytes={size}-", f"bytes={size + 10}-", "bytes=-0", f"bytes={size}-{size}"):
            status, body, headers = http_get(url, {"Range": rng})
            assert status == 416, rng
            assert headers["Content-Range"] == f"bytes */{size}", rng
        whole = ["bytes=0-1,5-6", "bytes=0-1, 5-6", "items=0-5", "bytes=5-2", "bytes=x-",
                 "bytes=", "bytes=-", "bytes=1-2-3", "0-5", "bytes=\u00b2-", "bytes=0x10-"]
        for rng in whole:  # several ranges, other units, bad syntax: the whole file
            status, body, headers = http_get(url, {"Range": rng})
            assert (status, len(body)) == (200, size), rng
            assert body == data and "Content-Range" not in headers, rng
        # If-Range: this server sends no validators, so none matches: the whole file
        for validator in ('"abc"', "Tue, 01 Jan 2030 00:00:00 GMT"):
            status, body, _ = http_get(url, {"Range": "bytes=0-9", "If-Range": validator})
            assert (status, body) == (200, data)
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "r-1", "succeeded")
    finally:
        dev.stop()
    assert "Traceback" not in (embedded.data / "platform.log").read_text()


# A child holds the idle connections: paho's network loop uses select(), which fails on
# descriptors over 1023, so the test process keeps its own few.
_HOLDER = r"""
import resource, select, socket, sys, time
count, source, ports = int(sys.argv[1]), sys.argv[2], [int(p) for p in sys.argv[3:]]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count * len(ports) + 256), hard))
socks = []
for port in ports:
    for _ in range(count):
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
print("holding", len(socks), flush=True)
poll = select.poll()
for s in socks:
    poll.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
open_ = {s.fileno(): s for s in socks}
deadline = time.monotonic() + float(sys.stdin.readline() or 60)
while open_ and time.monotonic() < deadline:
    for fd, _ in poll.poll(500):
        s = open_.pop(fd, None)
        if s is None:
            continue
        poll.unregister(fd)
        try:
            s.recv(1)  # b"" (closed) or an error (reset): either way the server let go
        except OSError:
            pass
        s.close()
print("still open", len(open_), flush=True)
"""


def test_idle_connections_cannot_starve_downloads_or_mqtt(embedded, firmware: Path) -> None:
    embedded.start(idle_timeout=3, connect_timeout=3)
    api, task, dev, notice = _setup(embedded, firmware, "idle-1")
    http_port = int(embedded.proc.api.rsplit(":", 1)[1])
    mqtt_port = int(embedded.broker.rsplit(":", 1)[1])
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(IDLE), "127.0.0.2",
                               str(http_port), str(mqtt_port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().split() == ["holding", str(2 * IDLE)]
        # downloads and MQTT logins from elsewhere still work meanwhile
        status, body, _ = http_get(dev.download_url(notice), timeout=20)
        assert status == 200 and body == firmware.read_bytes()
        late = FakeDevice("idle-2", embedded.broker).start(timeout=20)
        late.stop()
        dev.progress(notice["taskId"], 50, "half")
        dev.upgrade(notice)
        wait_device_state(api, task["id"], "idle-1", "succeeded", timeout=20)
        # every idle connection ends: refused over the caps, closed after the timeouts
        holder.stdin.write("60\n")
        holder.stdin.flush()
        assert holder.stdout.readline().split() == ["still", "open", "0"]
    finally:
        holder.kill()
        holder.wait()
        dev.stop()
    assert embedded.proc.proc.poll() is None
    embedded.proc.stop()  # writes the summaries of the rate-limited lines
    log = (embedded.data / "platform.log").read_text()
    assert "Traceback" not in log
    assert len(log) < 20_000, f"log grew to {len(log)} bytes"
    assert "refused" in log and "more from 127.0.0.2" in log


def test_nul_byte_in_a_header_is_a_400_without_traceback(embedded) -> None:
    embedded.start()
    port = int(embedded.proc.api.rsplit(":", 1)[1])
    for request in (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
                    b"GET /file/upgrade?fileId=\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /api/health HTTP/1.1\r\nAuthorization: Bearer \x00\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(request)
            assert s.recv(100).split(b" ")[1] == b"400", request
    time.sleep(0.5)
    log = (embedded.data / "platform.log").read_text()
    assert "Traceback" not in log


def test_out_of_descriptors_is_a_few_log_lines_and_passes(embedded, firmware: Path) -> None:
    """Descriptors run out under the platform (its limit cut after the start): each failed
    accept was a traceback; now a few lines and a count, and service resumes."""
    import psutil

    embedded.start(max_per_address=1000)
    api, task, dev, notice = _setup(embedded, firmware, "fd-1")
    http_port = int(embedded.proc.api.rsplit(":", 1)[1])
    mqtt_port = int(embedded.broker.rsplit(":", 1)[1])
    child = psutil.Process(embedded.proc.proc.pid)
    limit = child.rlimit(psutil.RLIMIT_NOFILE)
    child.rlimit(psutil.RLIMIT_NOFILE, (child.num_fds() + 8, limit[1]))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "100", "127.0.0.2",
                               str(http_port), str(mqtt_port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().split() == ["holding", "200"]
        time.sleep(3)  # accepts fail meanwhile
    finally:
        holder.kill()
        holder.wait()
    child.rlimit(psutil.RLIMIT_NOFILE, limit)
    try:
        status, body, _ = http_get(dev.download_url(notice), timeout=20)  # service resumed
        assert status == 200 and body == firmware.read_bytes()
    finally:
        dev.stop()
    embedded.proc.stop()
    log = (embedded.data / "platform.log").read_text()
    assert "out of system resource" in log
    assert "Traceback" not in log
    assert len(log) < 30_000, f"log grew to {len(log)} bytes"


def test_a_download_nobody_reads_is_reset(embedded, tmp_path: Path) -> None:
    """A client that asks for the image and stops reading held the connection (and the
    open file) for good; now it is reset once nothing moved for four idle timeouts."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 << 20))  # far more than the socket buffers hold
    embedded.start(idle_timeout=1)  # 4 s without progress
    api, task, dev, notice = _setup(embedded, big, "stall-1")
    parts = urllib.parse.urlsplit(dev.download_url(notice))
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((parts.hostname, parts.port))
            s.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            log = embedded.data / "platform.log"
            wait_for(lambda: "read nothing for 4 s" in log.read_text(), 30,
                     what="the stalled download reset")
            got, s_ended = 0, False
            s.settimeout(10)
            try:
                while chunk := s.recv(1 << 16):
                    got += len(chunk)
                s_ended = True
            except ConnectionResetError:
                s_ended = True
            assert s_ended and got < big.stat().st_size
        with socket.socket() as s:  # a slow reader (a slow link) is left alone
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((parts.hostname, parts.port))
            s.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            s.settimeout(10)
            deadline = time.monotonic() + 10  # more than twice the 4 s without progress
            while time.monotonic() < deadline:
                assert s.recv(2048)  # still open, still sending
                time.sleep(0.5)
        dev.upgrade(notice)  # a reading client still gets it whole
        wait_device_state(api, task["id"], "stall-1", "succeeded")
    finally:
        dev.stop()
