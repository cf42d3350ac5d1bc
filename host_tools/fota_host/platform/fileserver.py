"""The device file server: `GET /file/upgrade?fileId=&taskId=&deviceId=&accessToken=`.

The spec's download address. The token is checked per device and task
(`Platform.check_download`); the image is streamed from disk by aiohttp's `FileResponse`
(sendfile), which also answers `Range` with 206 + Content-Range, or 416.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from .engine import Platform

log = logging.getLogger("fota.platform.http")

PLATFORM_KEY = web.AppKey("platform", Platform)


async def download(request: web.Request) -> web.StreamResponse:
    q = request.query
    status, result = request.app[PLATFORM_KEY].check_download(
        q.get("fileId", ""), q.get("taskId", ""), q.get("deviceId", ""), q.get("accessToken", ""))
    if status != 200:
        log.info("download refused (%d, %s): device %.64r file %.40r", status, result,
                 q.get("deviceId"), q.get("fileId"))
        return web.Response(status=status, text=f"{result}\n")
    assert isinstance(result, Path)
    return web.FileResponse(result, chunk_size=256 * 1024,
                            headers={"Content-Type": "application/octet-stream"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/file/upgrade", download)
