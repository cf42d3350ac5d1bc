"""The device file server: `GET /file/upgrade?fileId=&taskId=&deviceId=&accessToken=`.

The spec's download address. The token is checked per device and task
(`Downloads.check`); the image is streamed from disk with sendfile (never read
into memory). Ranges per RFC 9110: one byte range gets 206 + Content-Range (suffix and
open ranges too), an unsatisfiable one 416 + `Content-Range: bytes */SIZE`; several ranges,
other units, bad syntax and any If-Range get the whole file (200).
A download whose sub-task is cancelled (or whose task ends) while it streams is reset
(`Downloads.watch`), and so is every download still streaming when the platform stops
(the devices resume with Range from the next instance or the restarted one).

`send_file` does what aiohttp's `FileResponse` does for this case without its thread-pool
round trips (stat, open, looking for .gz/.br variants of the file), which cost a fifth of
the throughput with 200 concurrent clients; the package store is on local disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from .core import Platform

log = logging.getLogger("fota.platform.http")

PLATFORM_KEY = web.AppKey("platform", Platform)
STALL_KEY = web.AppKey("stall_timeout", float)  # seconds a download may make no progress
SEND_BUFFER = 256 * 1024  # bytes per download socket (the kernel doubles it)
TLS_CHUNK = 64 * 1024  # bytes read and written at a time over TLS
# the cut-offs of the downloads streaming now, called when the platform stops
STREAMING_KEY = web.AppKey("downloads_streaming", set)


_NOT_SATISFIABLE = (-1, -1)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(offset, count) of one `Range` value per RFC 9110 section 14; None: ignore it and
    send the whole file (another unit, bad syntax, several ranges); _NOT_SATISFIABLE."""
    unit, eq, spec = value.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in spec:
        return None  # unknown unit or several ranges: a 200 with everything is allowed
    first, dash, last = spec.strip().partition("-")
    numbers = [n for n in (first, last) if n]
    if not dash or not numbers or len(spec) > 40 or \
            not all(n.isascii() and n.isdigit() for n in numbers):
        return None
    if not first:  # suffix: the last N bytes
        count = min(int(last), size)
        return (size - count, count) if count else _NOT_SATISFIABLE
    start = int(first)
    stop = size - 1 if not last else int(last)
    if last and stop < start:
        return None  # invalid range-spec: ignored
    if start >= size:
        return _NOT_SATISFIABLE
    stop = min(stop, size - 1)
    return start, stop - start + 1


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(offset, count) of the request's Range within `size` bytes; None for the whole file
    (no Range, or one to ignore: RFC 9110); `_NOT_SATISFIABLE` for a 416.

    If-Range: the server sends no validators (ETag, Last-Modified), so none can match:
    the whole file (RFC 9110 13.1.5).
    """
    values = request.headers.getall(hdrs.RANGE, [])
    if len(values) != 1 or hdrs.IF_RANGE in request.headers or request.method != hdrs.METH_GET:
        return None
    return _parse_range(values[0], size)


async def send_file(request: web.Request, path: Path) -> web.StreamResponse:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        headers = {hdrs.CONTENT_TYPE: "application/octet-stream", hdrs.ACCEPT_RANGES: "bytes"}
        span = byte_range(request, size)
        if span == _NOT_SATISFIABLE:
            headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        offset, count, status = 0, size, 200
        if span is not None:
            offset, count = span
            status = 206
            headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{offset + count - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = count
        await resp.prepare(request)  # sends the headers at once
        if request.method != hdrs.METH_HEAD and count:
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("client gone")
            try:
                if transport.get_extra_info("sslcontext") is None:
                    await asyncio.get_running_loop().sendfile(transport, f, offset, count)
                else:
                    await _copy(resp, f, offset, count)
            except ConnectionError as exc:
                # The device went away, or a cancel cut it off: one line, no traceback;
                # aiohttp sees the dead connection when it finishes the response.
                log.info("download stopped: device %.64r: %s",
                         request.query.get("deviceId"), exc)
                return resp
        await resp.write_eof()
        return resp


async def _copy(resp: web.StreamResponse, f: Any, offset: int, count: int) -> None:
    """Read + write for TLS, which has no sendfile. Not asyncio's own fallback: in Python
    3.11 it fails with an AttributeError (and a traceback) when the connection ends under
    it, a device gone or a download cut off."""
    loop = asyncio.get_running_loop()
    f.seek(offset)
    while count > 0:
        data = await loop.run_in_executor(None, f.read, min(TLS_CHUNK, count))
        if not data:
            raise OSError("the package file ended early")
        await resp.write(data)  # waits while the device has not taken the last chunk
        count -= len(data)


async def download(request: web.Request) -> web.StreamResponse:
    q = request.query
    status, result = request.app[PLATFORM_KEY].downloads.check(
        q.get("fileId", ""), q.get("taskId", ""), q.get("deviceId", ""), q.get("accessToken", ""))
    if status != 200:
        log.info("download refused (%d, %s): device %.64r file %.40r", status, result,
                 q.get("deviceId"), q.get("fileId"))
        return web.Response(status=status, text=f"{result}\n")
    assert isinstance(result, Path)
    # Cut off by a cancel (or the task's end) while it streams: the token only guarded
    # the start. Closing the connection makes the device's download fail, and its
    # retry with Range gets 403.
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None:
        # What sits in the kernel's send buffer can't be called back: keep it small (on
        # loopback it grows to MiBs, a whole image) so a cancel stops the download.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    loop = asyncio.get_running_loop()

    def shutdown() -> None:
        # A reset, not a FIN: linger 0 drops what still waits in the send buffer (a FIN
        # would deliver it). Not transport.abort(): asyncio (3.11) mishandles an abort
        # during its native sendfile; a shutdown makes that fail like a client gone away.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)

    def stop() -> None:
        if sock is not None:
            loop.call_soon_threadsafe(shutdown)

    unwatch = request.app[PLATFORM_KEY].downloads.watch(int(q["taskId"]), q["deviceId"], stop)
    stall = request.app.get(STALL_KEY, 60.0)
    watchdog = loop.create_task(_stalled(sock, stall, q.get("deviceId"))) if sock else None
    streaming = request.app.get(STREAMING_KEY)
    if streaming is not None and sock is not None:
        streaming.add(shutdown)
    try:
        return await send_file(request, result)
    finally:
        unwatch()
        if streaming is not None:
            streaming.discard(shutdown)
        if watchdog is not None:
            watchdog.cancel()


def _bytes_acked(sock: socket.socket) -> int:
    """Bytes of this connection the client acknowledged so far (Linux TCP_INFO
    tcpi_bytes_acked, at offset 120); a client that reads nothing acknowledges nothing, even
    while it answers the kernel's zero-window probes."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("Q", info, 120)[0] if len(info) >= 128 else -1


async def _stalled(sock: socket.socket, stall: float, device: str | None) -> None:
    """Reset a download whose client stopped reading: nothing acknowledged for `stall`
    seconds (a slow link still moves, however slowly)."""
    loop = asyncio.get_running_loop()
    last, since = -1, loop.time()
    while True:
        await asyncio.sleep(max(0.05, min(1.0, stall / 4)))
        try:
            acked = _bytes_acked(sock)
        except (OSError, ValueError):
            return  # closed meanwhile
        now = loop.time()
        if acked < 0:
            return  # a kernel without the counter: no watchdog
        if acked != last:
            last, since = acked, now
        elif now - since >= stall:
            log.info("download stopped: device %.64r read nothing for %.0f s", device, stall)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            return


async def _cut_off_streaming(app: web.Application) -> None:
    """The platform stops: reset the downloads still streaming. aiohttp would else wait for
    each (a slow device: minutes, up to its shutdown timeout, then once more after
    cancelling a handler stuck in sendfile), and a service manager kills the platform
    first."""
    streaming = app[STREAMING_KEY]
    if streaming:
        log.info("platform stopping: %d download(s) cut off (the devices resume them)",
                 len(streaming))
    for cut_off in list(streaming):
        cut_off()


def add_routes(app: web.Application) -> None:
    app[STREAMING_KEY] = set()
    app.on_shutdown.append(_cut_off_streaming)
    app.router.add_get("/file/upgrade", download)
