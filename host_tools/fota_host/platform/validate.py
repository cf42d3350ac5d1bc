"""Input checks shared by the platform's modules (ids, texts, times), and `PlatformError`,
the one error an operator's bad input raises (it carries the HTTP status)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

DEVICE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
PACKAGE_RE = re.compile(r"^[0-9a-f]{20}$")
MAX_TEXT = 256


class PlatformError(ValueError):
    """Bad input from an operator (CLI/API): a clear message and an HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_time(value: str | float | None, what: str) -> float | None:
    """ISO 8601 (naive means UTC) or epoch seconds → epoch seconds."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str):
        raise PlatformError(f"{what}: expected an ISO 8601 time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PlatformError(f"{what}: {value!r} is not an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def text(value: Any, what: str, default: str = "", required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise PlatformError(f"{what} is required")
        return default
    if not isinstance(value, str):
        raise PlatformError(f"{what} must be a string")
    if len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise PlatformError(f"{what} must be at most {MAX_TEXT} printable characters")
    return value


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


def check_device_id(device: Any) -> str:
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise PlatformError(
            f"invalid device id {device!r}: 1-64 characters of A-Z a-z 0-9 _ . : @ -")
    return device

