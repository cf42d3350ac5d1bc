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


class WDT:
    """The supervisor cannot interrupt a stuck process, so feeding is only recorded."""

    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.fed = 0

    def feed(self):
        self.fed += 1
