"""Stand-in for `machine` on the unix port: a hard reset ends the process with status 3,
and the simulation's supervisor (fota sim device) boots the board again."""
import sys

RESET_EXIT = 3
PWRON_RESET = 1
WDT_RESET = 3
_cause = PWRON_RESET


def reset():
    print("machine: hard reset")
    sys.exit(RESET_EXIT)


def soft_reset():
    sys.exit(RESET_EXIT)


def reset_cause():
    return _cause


def unique_id():
    return b"\x00\x00sim\x00"


def _board(name="board"):
    import os

    try:
        with open((os.getenv("FOTA_FLASH") or ".") + "/" + name) as f:
            return f.read().strip()
    except OSError:
        return None


class WDT:
    """The watchdog, checked at each feed: a feed that comes later than `timeout`
    after the previous one resets the board as the hardware would have (a little
    late: the supervisor cannot interrupt a stuck process). As on the rp2 port, a
    simulated Pico W refuses a timeout above 8388 ms (RP2040 hardware) with ValueError.
    """

    def __init__(self, id=0, timeout=5000):
        from time import ticks_ms

        if _board() == "pico_w":
            # rp2 port, machine_wdt.c WDT_TIMEOUT_MAX: 8388 ms on the RP2040, 16777 ms on
            # the RP2350 (a Pico 2 W's flash folder says `pico2_w` in its `model` file).
            limit = 16777 if _board("model") == "pico2_w" else 8388
            if timeout > limit:
                raise ValueError("timeout exceeds %d" % limit)
        self.timeout = timeout
        self.fed = 0
        self._at = ticks_ms()

    def feed(self):
        from time import ticks_diff, ticks_ms

        now = ticks_ms()
        gap = ticks_diff(now, self._at)
        if gap > self.timeout:
            print("machine: watchdog reset: not fed for %d ms (timeout %d ms)" % (
                gap, self.timeout))
            sys.exit(RESET_EXIT)
        self._at = now
        self.fed += 1
