"""Rate-limited log lines: a source that repeats a line (a device sending junk, an address
opening connections) gets a few lines per window, then one summary:
`... and 812 more from dev-7 in the last 10 s`.

`LogRate(logger).log(level, key, msg, *args)` in place of `logger.log(level, msg, *args)`;
`flush_all()` (called by the service's clock) writes the summaries of windows that ended.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable

_LIMITERS: weakref.WeakSet[LogRate] = weakref.WeakSet()
OTHER = "(other sources)"


class LogRate:
    """At most `burst` lines per key per `window` seconds; the rest are counted."""

    def __init__(self, logger: logging.Logger, *, window: float = 10.0, burst: int = 5,
                 max_keys: int = 200, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.window = window
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self.lock = threading.Lock()
        # key -> [window start, lines let through, lines held back, level]
        self.keys: dict[str, list] = {}
        _LIMITERS.add(self)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log the line unless `key` used up its lines in this window; True when logged."""
        key = str(key)[:80]
        now = self.clock()
        with self.lock:
            self._flush(now)
            if key not in self.keys and len(self.keys) >= self.max_keys:
                key = OTHER  # many sources at once share one budget
            state = self.keys.setdefault(key, [now, 0, 0, level])
            if state[1] >= self.burst:
                state[2] += 1
                state[3] = max(state[3], level)
                return False
            state[1] += 1
        self.logger.log(level, msg, *args)
        return True

    def flush(self, final: bool = False) -> None:
        """Write the summaries of windows that ended (all of them when `final`)."""
        with self.lock:
            self._flush(self.clock(), final)

    def _flush(self, now: float, final: bool = False) -> None:
        ended = [k for k, s in self.keys.items() if final or now - s[0] >= self.window]
        for key in ended:
            start, _, held, level = self.keys.pop(key)
            if held:
                self.logger.log(level, "... and %d more from %s in the last %.0f s",
                                held, key, self.window)


def flush_all(final: bool = False) -> None:
    for limiter in list(_LIMITERS):
        limiter.flush(final)
