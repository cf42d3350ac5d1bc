"""Start-up of a simulated board behind a serial line (`fota sim board`).

The supervisor starts `micropython -i -c "import sim_board; sim_board.start(...)"`
in the board's filesystem: as a board's firmware does after every reset, this runs
boot.py, then main.py unless the REPL is in raw mode, in the REPL's own globals;
then the unix port's REPL takes the serial line. An exception or Ctrl-C in main.py
prints its traceback and falls through to the REPL; SystemExit ends the process,
which the supervisor turns into a soft reboot (as on a board).

`sys.platform` reads as the board's ("esp32", "rp2"), so the device code picks the
slot kind and watchdog limits it picks on hardware.
"""
import sys


class _Sys:
    """The `sys` module as the board's port shows it: everything from the unix port's
    `sys` but `platform`."""

    def __init__(self, platform):
        self.platform = platform

    def __getattr__(self, name):
        return getattr(sys, name)


def _run(name, ns):
    try:
        f = open(name)
    except OSError:
        return
    with f:
        src = f.read()
    try:
        exec(src, ns)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - a board prints and goes on
        sys.print_exception(exc)


def start(ns, platform, raw):
    sys.modules["sys"] = _Sys(platform)
    _run("boot.py", ns)
    if not raw:
        _run("main.py", ns)
