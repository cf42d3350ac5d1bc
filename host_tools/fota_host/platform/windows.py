"""Maintenance windows: recurring times when a rollout task may send notices.

A window is `DAYS START-END [ZONE]`, e.g. `mon-fri 22:00-05:00 Europe/Berlin`:
- DAYS: `daily` (or `*`), a day (`mon` ... `sun`), a range (`mon-fri`, `fri-mon` wraps),
  or a comma list of those (`mon,wed,sat-sun`);
- START-END: 24-hour `HH:MM`; an END at or before START crosses midnight, the window
  belonging to the day it starts on (`fri 22:00-02:00` is Friday night until Saturday 02:00);
  `00:00-24:00` is the whole day;
- ZONE: an IANA time zone name (zoneinfo), default UTC; daylight saving time follows it.
A task with several windows may send while any of them is open.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .validate import PlatformError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    spec: str
    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after midnight
    end: int
    zone: ZoneInfo

    def open_at(self, epoch: float) -> bool:
        local = datetime.fromtimestamp(epoch, self.zone)
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        if self.end > self.start:
            return today in self.days and self.start <= minute < self.end
        yesterday = (today - 1) % 7
        return (today in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end)

    def next_open(self, epoch: float) -> float:
        """The next time (epoch seconds, to the minute) this window opens, within 8 days."""
        t = (int(epoch) // 60 + 1) * 60
        for _ in range(8 * 24 * 60):
            if self.open_at(t):
                return float(t)
            t += 60
        return float("inf")


def _minutes(text: str, spec: str) -> int:
    m = _TIME.match(text)
    if not m or (m.group(1) == "24" and m.group(2) != "00"):
        raise PlatformError(f"window {spec!r}: {text!r} is not a HH:MM time", 422)
    return int(m.group(1)) * 60 + int(m.group(2))


def _days(text: str, spec: str) -> frozenset[int]:
    if text in ("daily", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in text.split(","):
        ends = part.split("-")
        if len(ends) > 2 or any(e not in DAYS for e in ends):
            raise PlatformError(f"window {spec!r}: {part!r} is not a day or a range of days"
                                f" ({', '.join(DAYS)}, or daily)", 422)
        first, last = DAYS.index(ends[0]), DAYS.index(ends[-1])
        days.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(days)


def parse(spec: object) -> Window:
    if not isinstance(spec, str) or len(spec) > 100:
        raise PlatformError(f"window {spec!r:.100}: expected 'DAYS HH:MM-HH:MM [ZONE]'", 422)
    parts = spec.strip().lower().split()
    raw = spec.strip().split()
    if len(parts) not in (2, 3) or parts[1].count("-") != 1:
        raise PlatformError(f"window {spec!r}: expected 'DAYS HH:MM-HH:MM [ZONE]',"
                            " e.g. 'mon-fri 22:00-05:00 Europe/Berlin'", 422)
    start_s, end_s = parts[1].split("-")
    start, end = _minutes(start_s, spec), _minutes(end_s, spec)
    if start == 24 * 60:
        raise PlatformError(f"window {spec!r}: a window can't start at 24:00", 422)
    try:
        zone = ZoneInfo(raw[2] if len(raw) == 3 else "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise PlatformError(f"window {spec!r}: unknown time zone {raw[2]!r}", 422) from None
    return Window(spec.strip(), _days(parts[0], spec), start, end, zone)


def parse_all(specs: object) -> list[Window]:
    if specs in (None, ""):
        return []
    if not isinstance(specs, list) or len(specs) > 20:
        raise PlatformError("windows must be a list of at most 20 window specs", 422)
    return [parse(s) for s in specs]


def open_now(windows: list[Window], epoch: float) -> bool:
    return not windows or any(w.open_at(epoch) for w in windows)


def next_open(windows: list[Window], epoch: float) -> float:
    return min((w.next_open(epoch) for w in windows), default=epoch)


def describe_wait(windows: list[Window], epoch: float) -> str:
    """Why the task waits, and until when (UTC)."""
    nxt = next_open(windows, epoch)
    until = "" if nxt == float("inf") else " until " + datetime.fromtimestamp(
        nxt, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "outside its maintenance windows (" + "; ".join(w.spec for w in windows) + ")" + until
