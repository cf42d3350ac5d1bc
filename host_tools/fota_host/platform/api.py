"""The admin JSON API (aiohttp) and the app that also holds the device file server.

- `/api/...`: the console's operations, guarded by `Authorization: Bearer <admin token>`;
  bad input gets `{"error": message}` with 400/404/409/413.
- `GET /openapi.json`: the API description (no token needed).
- `GET /file/upgrade`: see `fileserver.py`.
- `/console`: the web console (`console/`); its session cookie also opens `/api/...`.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any

from aiohttp import web

from . import api_rollouts, fileserver
from .apijson import answer, answer_on, error, json_body, json_response, platform
from .console import auth as console_auth
from .console import routes as console_routes
from .core import Platform
from .fileserver import PLATFORM_KEY, STALL_KEY
from .lograte import LogRate
from .openapi import OPENAPI
from .store import DISK_FULL_ERRNOS
from .validate import PlatformError, same_secret

log = logging.getLogger("fota.platform.http")
_rate = LogRate(log)

MAX_UPLOAD = 64 << 20
TOKEN_KEY = web.AppKey("admin_token", str)


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        given = request.headers.get("Authorization", "")
        if not same_secret(given, "Bearer " + request.app[TOKEN_KEY]):
            refused = console_auth.api_refusal(request)  # or the console's session cookie
            if refused is not None:
                return error(*refused)
    try:
        return await handler(request)
    except PlatformError as exc:
        return error(exc.status, str(exc))
    except web.HTTPException as exc:
        if request.path.startswith("/api/") and exc.status >= 400:
            return _api_refusal(request, exc)
        raise
    except UnicodeError:
        # bytes a client sent that are not UTF-8 (a header, a form, a query): its fault,
        # one rate-limited line, no traceback
        _rate.log(logging.WARNING, request.remote or "?", "%s %s from %s: refused (400), "
                  "text that is not valid UTF-8", request.method, request.path, request.remote)
        return error(400, "the request holds text that is not valid UTF-8")
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # the client vanished half-way through its request (an upload): nothing failed
            # here, and the answer goes nowhere
            _rate.log(logging.INFO, request.remote or "?", "%s %s: client %s gone before "
                      "its request was read", request.method, request.path, request.remote)
            return error(400, "the connection was lost before the request was read")
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            log.error("%s %s: disk full: %s", request.method, request.path, exc)
            return error(507, f"disk full on the platform: {exc.strerror}")
        log.exception("%s %s failed", request.method, request.path)
        return error(500, "internal error (see the platform log)")


def _api_refusal(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no such route, method not allowed) in the API's JSON shape, so
    a script reading `error` gets one there too; a 405 keeps its Allow header."""
    if exc.status == 404:
        message = f"no API route {request.path} (see GET /openapi.json)"
    elif exc.status == 405:
        message = f"{request.method} is not allowed on {request.path}; allowed: " + \
            exc.headers.get("Allow", "")
    else:
        message = exc.reason
    answer = error(exc.status, message)
    if "Allow" in exc.headers:
        answer.headers["Allow"] = exc.headers["Allow"]
    return answer


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _check_url(url: Any) -> None:
    """A package URL the fetch can even try: http(s), a host, a port in range (urllib raises
    ValueError, not an HTTP error, for `http://[` or `http://h:99999`)."""
    try:
        parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        if ok:
            parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        ok = False
    if not ok or len(url) > 2000:
        raise PlatformError(f"url must be an http(s) address with a host, got {url!r:.100}")


# -- admin API ----------------------------------------------------------------------------
async def openapi(request: web.Request) -> web.Response:
    return json_response(OPENAPI)


async def health(request: web.Request) -> web.Response:
    return json_response({"ok": True})


async def create_package(request: web.Request) -> web.Response:
    packages = platform(request).packages
    require_signed = platform(request).settings.require_signed
    if request.content_type == "application/json":
        body = await json_body(request)
        meta = {k: body.get(k) for k in ("version", "name", "product", "desc", "module")}
        meta["sign"] = body.get("sign", "md5")
        if not body.get("url"):
            raise PlatformError("give the firmware as the request body, or a JSON object with url")
        _check_url(body["url"])
        # fetched on the event loop, not in a thread: a stalled server holds no thread
        pkg = await packages.add_package_url_async(body["url"], MAX_UPLOAD,
                                                   require_signed=require_signed, **meta)
        return json_response(pkg, status=201)
    q = request.query
    meta = {k: q.get(k) for k in ("version", "name", "product", "desc", "module")}
    meta["sign"] = q.get("sign", "md5")
    upload = packages.new_upload_path()
    total = 0
    try:
        with open(upload, "wb") as out:
            async for chunk in request.content.iter_chunked(1 << 16):
                total += len(chunk)
                if total > MAX_UPLOAD:
                    raise PlatformError(f"firmware larger than {MAX_UPLOAD} bytes", 413)
                out.write(chunk)
    except BaseException:
        upload.unlink(missing_ok=True)
        raise
    source = q.get("source") or "upload"
    pkg = await asyncio.to_thread(packages.add_package, upload, source=source[:200],
                                  require_signed=require_signed, **meta)
    return json_response(pkg, status=201)


async def add_variant(request: web.Request) -> web.Response:
    body = await json_body(request)
    variant = await asyncio.to_thread(platform(request).packages.add_variant,
                                      request.match_info["id"], body.get("kind"),
                                      body.get("from"))
    return json_response(variant, status=201)


async def create_task(request: web.Request) -> web.Response:
    body = await json_body(request)  # with the rollout options of rollout_spec.SPEC_KEYS
    task = platform(request).rollouts.create_task(body)
    return json_response(task, status=201)


async def add_devices(request: web.Request) -> web.Response:
    body = await json_body(request)
    devices = body.get("devices")
    if not isinstance(devices, list) or not devices:
        raise PlatformError("devices must be a non-empty list of device ids")
    return json_response(platform(request).tasks.add_devices(request.match_info["id"], devices))


async def import_devices(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PlatformError("the device list must be UTF-8 CSV") from None
    # a thread: a list of many thousand rows takes a while, the loop serves on meanwhile
    results = await asyncio.to_thread(platform(request).tasks.import_devices,
                                      request.match_info["id"], text)
    return json_response(results)


async def cancel(request: web.Request) -> web.Response:
    body = await json_body(request)
    if body.get("all") is True:
        devices = None
    else:
        devices = body.get("devices")
        if not isinstance(devices, list) or not devices:
            raise PlatformError('give {"devices": [...]} or {"all": true}')
    return json_response(platform(request).tasks.cancel(request.match_info["id"], devices))


def make_app(platform: Platform, admin_token: str,
             stall_timeout: float = 60.0) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=4 << 20)
    app[PLATFORM_KEY] = platform
    app[STALL_KEY] = stall_timeout
    app[TOKEN_KEY] = admin_token
    r = app.router
    fileserver.add_routes(app)
    console_routes.add_routes(app, admin_token, MAX_UPLOAD)
    r.add_get("/openapi.json", openapi)
    r.add_get("/api/health", health)
    r.add_get("/api/stats", answer(Platform.stats))
    r.add_get("/api/packages", answer(lambda p: p.packages.list_packages()))
    r.add_post("/api/packages", create_package)
    r.add_get("/api/packages/{id}", answer_on(lambda p, pkg: p.packages.get_package(pkg)))
    r.add_post("/api/packages/{id}/variants", add_variant)
    r.add_get("/api/tasks", answer(lambda p: p.tasks.list_tasks()))
    r.add_post("/api/tasks", create_task)
    r.add_get("/api/tasks/{id}", answer_on(lambda p, task: p.rollouts.get_task(task)))
    r.add_post("/api/tasks/{id}/devices", add_devices)
    r.add_post("/api/tasks/{id}/import", import_devices)
    r.add_post("/api/tasks/{id}/start", answer_on(lambda p, task: p.rollouts.start_task(task)))
    r.add_post("/api/tasks/{id}/cancel", cancel)
    r.add_get("/api/devices", answer(Platform.list_devices))
    api_rollouts.add_routes(app)  # pause/resume/stop/approve, stats, tags, versions
    return app

