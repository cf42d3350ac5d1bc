"""Start-up of a simulated board behind a serial line (`fota sim board`).

The supervisor starts `micropython -i -c "import sim_board; sim_board.start(...)"`
in the board's filesystem: as a board's firmware does after every reset, this runs
boot.py, then main.py unless the REPL is in raw mode, in the REPL's own globals;
then the unix port's REPL takes the serial line. An exception or Ctrl-C in main.py
prints its traceback and falls through to the REPL; SystemExit (machine.reset() too)
ends the interpreter, which the supervisor turns into a soft or hard reset (as on a board).

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
    except SystemExit as exc:
        _reset(exc.args[0] if exc.args else 0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - a board prints and goes on
        sys.print_exception(exc)


def _reset(code):
    """SystemExit in boot.py/main.py (machine.reset() too): under -i the unix port would go
    on to its REPL where a board resets. The supervisor ends this interpreter on this line
    and takes `code` as its exit status."""
    sys.stdout.write("\x00sim-exit %d\x00" % code)
    import time

    while True:
        time.sleep(1)


def start(ns, platform, raw):
    sys.modules["sys"] = _Sys(platform)
    _run("boot.py", ns)
    if not raw:
        _run("main.py", ns)
