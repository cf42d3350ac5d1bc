"""The console's HTTP side: `GET /console` (the app, or the sign-in page without a session),
`POST /console/login|logout`, `/console/static/...` and `GET /console/events` (server-sent
events: a snapshot of tasks, devices and the watched task whenever they change).

The page itself calls the admin API (`/api/...`) with its session cookie (auth.py).
"""

from __future__ import annotations

import asyncio
import html
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from ..apijson import dumps
from ..fileserver import PLATFORM_KEY
from ..lograte import LogRate
from ..validate import PlatformError, same_secret
from .auth import COOKIE, SESSIONS_KEY, Session, Sessions

log = logging.getLogger("fota.platform.console")
_rate = LogRate(log)  # refused sign-ins: a client can cause them as fast as it likes
ADMIN_KEY = web.AppKey("console_admin_token", str)

STATIC = Path(__file__).parent / "static"
BUNDLE = STATIC / "dist" / "app.js"
EVENT_PERIOD = 1.0  # seconds between snapshots the event stream compares
HEARTBEAT = 15.0  # seconds: a comment line keeps proxies from closing a quiet stream
STOPPING_KEY = web.AppKey("console_stopping", asyncio.Event)

_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make a form's Origin "null"
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

_SIGN_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · fota console</title><link rel="stylesheet" href="/console/static/app.css">
<link rel="icon" href="data:,">
</head><body class="signin"><main>
<h1>fota console</h1>
<form method="post" action="/console/login">
<input type="text" name="username" value="admin" autocomplete="username" hidden>
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required
 autofocus aria-describedby="token-help{err_id}">
<p id="token-help" class="help">The platform's admin token: <code>admin_token</code> in
DIR/service.json (or DIR/admin.token).</p>
{error}
<button type="submit">Sign in</button>
</form></main></body></html>
"""

_APP = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}">
<title>fota console</title><link rel="stylesheet" href="/console/static/app.css">
<link rel="icon" href="data:,">
<script type="module" src="/console/static/app.js"></script>
</head><body><a class="skip" href="#main">Skip to content</a>
<header><h1>fota console</h1>
<nav aria-label="Pages"><ul>
<li><a href="#/overview">Overview</a></li><li><a href="#/packages">Packages</a></li>
<li><a href="#/tasks">Tasks</a></li><li><a href="#/devices">Devices</a></li>
</ul></nav>
<button id="signout" type="button">Sign out</button></header>
<p id="live" class="live" role="status" aria-live="polite">Connecting…</p>
<main id="main" tabindex="-1"><noscript>The console needs JavaScript.</noscript></main>
</body></html>
"""


def _page(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=_HEADERS)


def _sign_in_page(error: str = "", status: int = 200) -> web.Response:
    err = f'<p id="token-error" class="error" role="alert">{html.escape(error)}</p>' \
        if error else ""
    return _page(_SIGN_IN.format(error=err, err_id=" token-error" if error else ""), status)


def _sessions(request: web.Request) -> Sessions:
    return request.app[SESSIONS_KEY]


def _same_origin(request: web.Request) -> bool:
    """A form post from another site (login CSRF): its Origin names that site."""
    origin = request.headers.get("Origin")
    if origin is None:  # not sent by every client (curl); SameSite=Strict still holds
        return True
    return origin == f"{request.scheme}://{request.host}"


async def index(request: web.Request) -> web.Response:
    session = _sessions(request).find(request)
    if session is None:
        return _sign_in_page()
    if not BUNDLE.exists():
        return _page("<!doctype html><title>fota console</title><p>The console is not built:"
                     " run <code>make setup</code> (it needs node and npm).</p>", 503)
    return _page(_APP.format(csrf=html.escape(session.csrf)))


async def login(request: web.Request) -> web.Response:
    sessions = _sessions(request)
    if not _same_origin(request):
        return _sign_in_page("Sign-in refused: the form came from another site.", 403)
    if (request.content_length or 0) > 4096:
        return _sign_in_page("Sign-in refused: request too large.", 413)
    try:
        form = await request.post()
    except (UnicodeDecodeError, LookupError):  # not UTF-8, or an unknown charset: no match
        form = {}
    token = form.get("token")
    if not isinstance(token, str) or not same_secret(token.strip(), request.app[ADMIN_KEY]):
        _rate.log(logging.WARNING, request.remote or "?", "console sign-in refused from %s",
                  request.remote)
        return _sign_in_page("Wrong admin token.", 401)
    cookie, _ = sessions.sign_in()
    resp = web.HTTPSeeOther("/console", headers=_HEADERS)
    resp.set_cookie(COOKIE, cookie, path="/", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=int(sessions.ttl))
    log.info("console sign-in from %s", request.remote)
    raise resp


async def logout(request: web.Request) -> web.Response:
    sessions = _sessions(request)
    refused = sessions.refusal(request)  # a CSRF header is needed: no signing out by others
    if refused is not None:
        return web.json_response({"error": refused[1]}, status=refused[0])
    sessions.end(request)
    resp = web.json_response({"ok": True})
    resp.del_cookie(COOKIE, path="/")
    return resp


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name == "app.css":  # also styles the sign-in page: no data in it
        path = STATIC / "app.css"
        ctype = "text/css"
    elif name == "app.js":
        if _sessions(request).find(request) is None:
            return web.json_response({"error": "sign in first"}, status=401)
        path = BUNDLE
        ctype = "text/javascript"
    else:
        raise web.HTTPNotFound()
    if not path.exists():
        raise web.HTTPNotFound(text="the console is not built: run make setup")
    return web.Response(body=path.read_bytes(), content_type=ctype, headers=_HEADERS)


def snapshot(request: web.Request, task_id: str | None) -> dict[str, Any]:
    """What the page shows live: every task with its counts, every device, the watched task."""
    platform = request.app[PLATFORM_KEY]
    snap: dict[str, Any] = {"tasks": platform.tasks.list_tasks(),
                            "devices": platform.list_devices()}
    if task_id:
        try:
            snap["task"] = platform.rollouts.get_task(task_id)  # as GET /api/tasks/{id}
        except PlatformError as exc:
            snap["task_error"] = str(exc)
    return snap


async def events(request: web.Request) -> web.StreamResponse:
    session: Session | None = _sessions(request).find(request)
    if session is None:
        return web.json_response({"error": "sign in first"}, status=401)
    task_id = request.query.get("task") or None
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    stopping = request.app[STOPPING_KEY]
    loop = asyncio.get_running_loop()
    last, quiet_since = "", loop.time()
    try:
        # signed out or expired: the stream ends with the session
        while not stopping.is_set() and _sessions(request).find(request) is session:
            data = dumps(snapshot(request, task_id))
            if data != last:
                await resp.write(f"event: snapshot\ndata: {data}\n\n".encode())
                last, quiet_since = data, loop.time()
            elif loop.time() - quiet_since > HEARTBEAT:
                await resp.write(b": still here\n\n")
                quiet_since = loop.time()
            try:
                await asyncio.wait_for(stopping.wait(), EVENT_PERIOD)
            except asyncio.TimeoutError:
                pass
    except ConnectionError:
        pass  # the page went away
    return resp


async def _on_shutdown(app: web.Application) -> None:
    app[STOPPING_KEY].set()  # open event streams end, so a stopping platform need not wait


def add_routes(app: web.Application, admin_token: str, max_upload: int) -> None:
    app[SESSIONS_KEY] = Sessions(admin_token, max_upload)
    app[ADMIN_KEY] = admin_token
    app[STOPPING_KEY] = asyncio.Event()
    app.on_shutdown.append(_on_shutdown)
    r = app.router
    r.add_get("/console", index)
    r.add_get("/console/", index)
    r.add_post("/console/login", login)
    r.add_post("/console/logout", logout)
    r.add_get("/console/static/{name}", asset)
    r.add_get("/console/events", events)
