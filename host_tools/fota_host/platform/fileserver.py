"""The device file server: `GET /file/upgrade?fileId=&taskId=&deviceId=&accessToken=`.

The spec's download address. The token is checked per device and task
(`Downloads.check`); the image is streamed from disk with sendfile (never read
into memory). One `Range` gets 206 + Content-Range, an unsatisfiable or malformed one 416.
A download whose sub-task is cancelled (or whose task ends) while it streams is reset
(`Downloads.watch`).

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

from aiohttp import hdrs, web

from .core import Platform

log = logging.getLogger("fota.platform.http")

PLATFORM_KEY = web.AppKey("platform", Platform)
SEND_BUFFER = 256 * 1024  # bytes per download socket (the kernel doubles it)


def byte_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """(offset, count) of the request's Range within `size` bytes; None when unsatisfiable.

    No Range header: the whole file.
    """
    if hdrs.RANGE not in request.headers:
        return 0, size
    try:
        rng = request.http_range  # parses bytes=a-b, bytes=a-, bytes=-n
    except ValueError:
        return None
    start, stop = rng.start, rng.stop
    if start is None or size == 0:
        return None
    if start < 0:  # the last -start bytes
        start = max(0, size + start)
    stop = size if stop is None else min(stop, size)
    if start >= stop:
        return None
    return start, stop - start


async def send_file(request: web.Request, path: Path) -> web.StreamResponse:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        headers = {hdrs.CONTENT_TYPE: "application/octet-stream", hdrs.ACCEPT_RANGES: "bytes"}
        span = byte_range(request, size)
        if span is None:
            headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        offset, count = span
        status = 200
        if hdrs.RANGE in request.headers:
            status = 206
            headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{offset + count - 1}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = count
        await resp.prepare(request)  # sends the headers at once
        if request.method != hdrs.METH_HEAD and count:
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("client gone")
            # falls back to read + write when the transport can't sendfile (TLS)
            try:
                await asyncio.get_running_loop().sendfile(transport, f, offset, count)
            except ConnectionError as exc:
                # The device went away, or a cancel cut it off: one line, no traceback;
                # aiohttp sees the dead connection when it finishes the response.
                log.info("download stopped: device %.64r: %s",
                         request.query.get("deviceId"), exc)
                return resp
        await resp.write_eof()
        return resp


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
    try:
        return await send_file(request, result)
    finally:
        unwatch()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/file/upgrade", download)
