"""The admin API's one way to read a request and to answer it (`api.py`, `api_rollouts.py`):
a JSON object as the body, `{"error": message}` with a status, and handlers made from a
platform call whose result is the JSON answer."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .core import Platform
from .fileserver import PLATFORM_KEY
from .validate import PlatformError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("fota.platform.api")
_strict = functools.partial(json.dumps, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(data: Any) -> str:
    """Standard JSON only (RFC 8259 has no NaN or Infinity; JSON.parse refuses them). The
    API refuses such numbers on input, but a row stored before it did (a task `start` of
    1e400) would otherwise break every answer that shows it: it is shown as null, and a
    WARNING says so."""
    try:
        return _strict(data)
    except ValueError:
        log.warning("an answer held NaN or Infinity (stored before the API refused them): "
                    "shown as null")
        return _strict(_finite(data))


def json_response(data: Any, status: int = 200) -> web.Response:
    """`web.json_response` with `dumps` (standard JSON: NaN/Infinity shown as null)."""
    return web.json_response(data, status=status, dumps=dumps)


def error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status=status)


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body, which must be a JSON object; `{}` when `optional` and there is
    no body."""
    if optional and not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        # Whatever the decoder cannot take (bad UTF-8, too deep, too long a number): the
        # client's fault, so a 400, never a traceback.
        raise PlatformError("the request body is not valid JSON") from None
    except LookupError:  # Content-Type: ...; charset=NO-SUCH-CODEC
        raise PlatformError("the request's Content-Type names an unknown charset") from None
    if not isinstance(body, dict):
        raise PlatformError("the request body must be a JSON object")
    return body


def platform(request: web.Request) -> Platform:
    return request.app[PLATFORM_KEY]


def answer(call: Callable[[Platform], Any]) -> Handler:
    """A handler answering what `call(platform)` returns."""
    async def handle(request: web.Request) -> web.Response:
        return json_response(call(platform(request)))
    return handle


def answer_on(call: Callable[[Platform, str], Any], *, body: bool = False) -> Handler:
    """A handler answering what `call(platform, id)` returns for the path's `{id}`. With
    `body`, the request may carry one (ignored) but only a JSON object: an action that
    takes no options still refuses what it cannot read."""
    async def handle(request: web.Request) -> web.Response:
        if body:
            await json_body(request, optional=True)
        return json_response(call(platform(request), request.match_info["id"]))
    return handle
