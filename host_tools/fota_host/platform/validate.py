"""Input checks shared by the platform's modules (ids, texts, times), and `PlatformError`,
the one error an operator's bad input raises (it carries the HTTP status)."""

from __future__ import annotations

import hmac
import math
import re
from datetime import datetime, timezone
from typing import Any

# The one device-id rule, at every entry point (task add-devices and import, the API, device
# topics, `fota device provision`, `mosquitto-config`): it is an MQTT client id, a user name
# in a passwd file and a topic level, so: a letter or digit, then letters, digits and
# `_ . : -`, 64 characters at most. `\Z`, not `$`: `$` also matches before a final newline.
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")
DEVICE_RULE = ("1-64 characters: a letter or digit first, then letters, digits, '_', '.', ':'"
               " or '-' (no spaces, no line breaks)")
PACKAGE_RE = re.compile(r"^[0-9a-f]{20}\Z")
MAX_TEXT = 256
MAX_VERSION = 64
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class PlatformError(ValueError):
    """Bad input from an operator (CLI/API): a clear message and an HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# The times the platform takes (a task's start and end, ...): 1970-01-01 to 9999-12-31 UTC,
# what an ISO 8601 date and `datetime.fromtimestamp` can show. Outside it, or NaN/Infinity
# (`1e400` in JSON), is refused: stored, it broke the API's JSON and the CLI's output.
MIN_TIME = 0.0
MAX_TIME = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


def parse_time(value: str | float | None, what: str) -> float | None:
    """ISO 8601 (naive means UTC) or epoch seconds → epoch seconds, finite and within
    1970..9999 (else `PlatformError` naming `what`)."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            out = float(value)
        except OverflowError:  # an int too large for a float
            out = math.inf
    elif not isinstance(value, str):
        raise PlatformError(f"{what}: expected an ISO 8601 time")
    else:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            out = dt.timestamp()
        except (ValueError, OverflowError):
            raise PlatformError(f"{what}: {value!r:.80} is not an ISO 8601 time") from None
    if not (math.isfinite(out) and MIN_TIME <= out <= MAX_TIME):
        raise PlatformError(f"{what}: {value!r:.40} is out of range (a time from 1970 to "
                            "9999: ISO 8601, or epoch seconds)", 422)
    return out


def same_secret(given: object, expected: str) -> bool:
    """Whether a client's secret (a header, cookie, query or form value) is `expected`;
    the one comparison for tokens. Never raises: text aiohttp decoded from bytes that are
    not UTF-8 (surrogate escapes), a lone surrogate, a non-string are all just no match."""
    if not isinstance(given, str) or not expected:
        return False
    try:
        raw = given.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(raw, expected.encode("utf-8", "surrogateescape"))


def text(value: Any, what: str, default: str = "", required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise PlatformError(f"{what} is required")
        return default
    if not isinstance(value, str):
        raise PlatformError(f"{what} must be a string")
    if len(value) > MAX_TEXT or text_problem(value):
        raise PlatformError(f"{what} must be at most {MAX_TEXT} printable characters"
                            " (valid Unicode, no control characters)")
    return value


def text_problem(value: str) -> str | None:
    """Why `value` is not acceptable text (a lone surrogate, a control character), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "not valid Unicode (a lone surrogate)"
    if _CONTROL.search(value):
        return "holds a control character"
    return None


def device_text(value: str, what: str, limit: int) -> str:
    """A device's text checked at the edge (`ValueError` with the reason): valid Unicode,
    no control characters, at most `limit` characters."""
    problem = text_problem(value)
    if problem is None and len(value) > limit:
        problem = f"longer than {limit} characters"
    if problem:
        raise ValueError(f"{what} {problem}")
    return value


def shown(value: Any, limit: int = 80) -> str:
    """Device text for a log line or a terminal: control characters, lone surrogates and
    non-printable characters escaped, cut at `limit`."""
    s = value if isinstance(value, str) else repr(value)
    if len(s) > limit:
        s = s[:limit] + "..."
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace")
                   .decode("ascii") for c in s)


def int_id(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise PlatformError(f"{what} must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise PlatformError(f"{what} must be an integer, got {value!r}") from None
    if out < 1 or out > 2**62:
        raise PlatformError(f"{what} out of range: {value!r}")
    return out


def device_id_problem(device: Any) -> str | None:
    """Why `device` is not a valid device id, or None."""
    if not isinstance(device, str):
        return f"invalid device id {device!r:.80}: not a string"
    if not DEVICE_RE.match(device):
        return f"invalid device id {device!r:.80}: {DEVICE_RULE}"
    return None


def check_group_name(group: Any) -> str:
    """`group` if it follows the device-id rule (group names do: they are tags shown and
    typed beside device ids), else `PlatformError` calling it a group name."""
    problem = device_id_problem(group)
    if problem:
        raise PlatformError(problem.replace("invalid device id", "invalid group name", 1))
    return group


def check_device_id(device: Any) -> str:
    """`device` if it follows the device-id rule, else `PlatformError` naming the rule."""
    problem = device_id_problem(device)
    if problem:
        raise PlatformError(problem)
    return device


def check_public_url(url: str | None) -> str | None:
    """`--public-url`: http(s)://HOST[:PORT][/PATH], nothing else (devices put it into every
    download request, so a malformed one would make every notice useless)."""
    if url is None:
        return None
    import urllib.parse

    bad = PlatformError(f"--public-url must look like http(s)://HOST[:PORT][/PATH], got {url!r}")
    if not isinstance(url, str) or text_problem(url) or " " in url:
        raise bad
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or parts.username or "//" not in url:
        raise bad
    try:
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise bad from None
    return url

