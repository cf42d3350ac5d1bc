"""Limits on what a client can hold open: connections per address and in total for the
HTTP server (the MQTT listener has its own in `broker.py`), a file-descriptor budget that
both fit in, and one rate-limited line, not a traceback, for each kind of failed accept.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .lograte import LogRate

log = logging.getLogger("fota.platform.net")
_rate = LogRate(log)
RESERVED_FDS = 64  # database, packages being read, logs, the broker link


def fd_budget(want: int = 65536) -> int:
    """Raise this process's soft open-file limit towards the hard one; the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft if soft != resource.RLIM_INFINITY else want)


@dataclass
class Caps:
    http_total: int
    http_per_address: int
    mqtt_total: int


def caps_for(fds: int, http_total: int = 1024, http_per_address: int = 256,
             mqtt_total: int = 5000) -> Caps:
    """Caps that fit in `fds` open files: a quarter of them for HTTP, the rest for MQTT."""
    room = max(fds - RESERVED_FDS, 32)
    http = max(8, min(http_total, room // 4))
    return Caps(http, max(1, min(http_per_address, http)), max(8, min(mqtt_total, room - http)))


class ConnectionGuard:
    """Counts open connections per address; refuses those over the caps."""

    def __init__(self, total: int, per_address: int, what: str = "HTTP") -> None:
        self.total = total
        self.per_address = per_address
        self.what = what
        self.open = 0
        self.by_address: dict[str, int] = {}

    def admit(self, addr: str) -> bool:
        if self.open >= self.total:
            _rate.log(logging.WARNING, addr, "%s connection from %s refused: %d open (the cap)",
                      self.what, addr, self.open)
            return False
        if self.by_address.get(addr, 0) >= self.per_address:
            _rate.log(logging.WARNING, addr, "%s connection from %s refused: %d open from it "
                      "(the cap per address)", self.what, addr, self.by_address[addr])
            return False
        self.open += 1
        self.by_address[addr] = self.by_address.get(addr, 0) + 1
        return True

    def release(self, addr: str) -> None:
        self.open -= 1
        left = self.by_address.get(addr, 0) - 1
        if left > 0:
            self.by_address[addr] = left
        else:
            self.by_address.pop(addr, None)


class _Guarded(asyncio.Protocol):
    """Puts a connection through the guard before the real protocol sees it."""

    def __init__(self, guard: ConnectionGuard, inner: Any) -> None:
        self.guard = guard
        self.inner = inner
        self.addr: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if peer else "?"
        if not self.guard.admit(addr):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.addr = addr
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.addr is None:
            return
        self.guard.release(self.addr)
        self.addr = None
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.addr is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.addr is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.SockSite):
    """aiohttp's socket site with every connection put through a `ConnectionGuard`."""

    def __init__(self, runner: web.BaseRunner, sock: Any, guard: ConnectionGuard,
                 **kwargs: Any) -> None:
        super().__init__(runner, sock, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: _Guarded(self.guard, server()), sock=self._sock,
            ssl=self._ssl_context, backlog=self._backlog)


class _BadRequests(logging.Filter):
    """aiohttp logs a traceback for every request its parser refuses (a NUL byte in a
    header, a bad request line) after answering 400: one rate-limited line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        addr = str(record.args[0]) if isinstance(record.args, tuple) and record.args else "?"
        why = str(getattr(exc, "message", "") or exc).strip().splitlines()
        _rate.log(logging.WARNING, addr, "bad HTTP request from %s (answered %s): %.120r",
                  addr, exc.code, why[0] if why else "")
        return False


def quiet_loop_errors(loop: asyncio.AbstractEventLoop) -> None:
    """A failed accept (out of file descriptors), a client gone mid-handshake: one
    rate-limited line per kind instead of a traceback each time."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", "event loop error"))
        # asyncio retries a listener that ran out of descriptors a second later; a retry
        # that fires after the listener closed fails on fd -1 (Python 3.11)
        closed = isinstance(exc, ValueError) and "file descriptor" in str(exc)
        # a task cancelled at shutdown is not an error (Python 3.11's streams callback
        # reports a cancelled connection task as one)
        cancelled = isinstance(exc, asyncio.CancelledError)
        if isinstance(exc, (OSError, EOFError)) or exc is None or closed or cancelled:
            _rate.log(logging.WARNING, message[:40], "%s: %r", message, exc)
        elif _rate.log(logging.ERROR, message[:40], "%s (traceback follows)", message):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequests) for f in server_log.filters):
        server_log.addFilter(_BadRequests())
