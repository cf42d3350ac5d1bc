"""Console sessions: the admin token buys a session cookie (HttpOnly, SameSite=Strict); the
admin API then accepts the cookie in place of `Authorization: Bearer`, and a state-changing
request must also carry the session's CSRF token in the `X-CSRF-Token` header.

Sessions live in memory: a restarted platform signs everyone out. A cookie the platform did
not hand out (forged, expired, from before a restart) is no session.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web

from ..validate import same_secret

COOKIE = "fota_console"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TTL = 12 * 3600.0  # seconds a session lives after its sign-in
MAX_SESSIONS = 64  # the oldest goes when a new one would exceed this
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    csrf: str
    expires: float
    created: float = field(default_factory=time.time)


def _key(cookie: str) -> str:
    # Looked up by digest: a dict lookup by the raw value would compare secrets byte by byte.
    return hashlib.sha256(cookie.encode("utf-8", "replace")).hexdigest()


class Sessions:
    def __init__(self, admin_token: str, max_upload: int, ttl: float = SESSION_TTL) -> None:
        self._admin = admin_token
        self.max_upload = max_upload
        self.ttl = ttl
        self._by_key: dict[str, Session] = {}

    def token_ok(self, token: str) -> bool:
        return same_secret(token, self._admin)

    def sign_in(self) -> tuple[str, Session]:
        """A new session: (cookie value, session)."""
        now = time.time()
        self._by_key = {k: s for k, s in self._by_key.items() if s.expires > now}
        while len(self._by_key) >= MAX_SESSIONS:
            oldest = min(self._by_key, key=lambda k: self._by_key[k].created)
            del self._by_key[oldest]
        cookie = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(24), now + self.ttl)
        self._by_key[_key(cookie)] = session
        return cookie, session

    def find(self, request: web.Request) -> Session | None:
        cookie = request.cookies.get(COOKIE)
        if not cookie or len(cookie) > 200:
            return None
        session = self._by_key.get(_key(cookie))
        if session is None or session.expires <= time.time():
            return None
        return session

    def end(self, request: web.Request) -> None:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            self._by_key.pop(_key(cookie), None)

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        """None when the request's session may call the API; else (status, message)."""
        session = self.find(request)
        if session is None:
            return 401, ("missing or wrong admin token (Authorization: Bearer ...) "
                         "or console session")
        if request.method not in SAFE_METHODS:
            given = request.headers.get(CSRF_HEADER, "")
            if not same_secret(given, session.csrf):
                return 403, f"console request without its {CSRF_HEADER} header (CSRF)"
            length = request.content_length
            if length is not None and length > self.max_upload:
                return 413, f"request larger than {self.max_upload} bytes"
        return None


SESSIONS_KEY = web.AppKey("console_sessions", Sessions)


def api_refusal(request: web.Request) -> tuple[int, str] | None:
    """For the API's guard, after a missing or wrong Bearer token: the console session's verdict."""
    sessions = request.app.get(SESSIONS_KEY)
    if sessions is None:
        return 401, "missing or wrong admin token (Authorization: Bearer ...)"
    return sessions.refusal(request)
