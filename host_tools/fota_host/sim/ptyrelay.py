"""Pseudo-terminals for a simulated board: the serial line a client (mpremote, a terminal)
opens, and the console of one MicroPython process.

The serial line's far end stays open in the supervisor for the board's whole life, so a
client may connect, disconnect and connect again, and the board's processes may come and
go behind it (a reset) without the client seeing a hang-up. What the board prints while
no client reads is dropped once the line's buffer is full, as a USB serial port does.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import termios
import tty
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):      # not Linux: no parent-death signal
    _prctl = None


class SerialLine:
    """The board side (`master`) of the pseudo-terminal a client opens as `path`."""

    def __init__(self, link: Path | None = None) -> None:
        self.master, self._far = os.openpty()
        tty.setraw(self._far)                  # what pyserial sets too: bytes as they are
        os.set_blocking(self.master, False)
        self.tty = os.ttyname(self._far)
        self.link = Path(link) if link else None
        if self.link:
            if self.link.is_symlink():
                self.link.unlink()
            self.link.symlink_to(self.tty)

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.tty

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return b""
            raise

    def write(self, data: bytes) -> None:
        """Send to the client; what does not fit in the line's buffer is lost."""
        while data:
            try:
                n = os.write(self.master, data)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EIO):
                    return
                raise
            data = data[n:]

    def close(self) -> None:
        if self.link and self.link.is_symlink() and os.readlink(self.link) == self.tty:
            self.link.unlink()
        for fd in (self.master, self._far):
            try:
                os.close(fd)
            except OSError:
                pass


def console() -> tuple[int, int]:
    """(master, slave) of a process console: raw bytes both ways (as a board's UART),
    except that Ctrl-C raises SIGINT in the process (a board's Ctrl-C interrupts a
    running program); the unix port's REPL turns that off while it reads a line."""
    master, slave = os.openpty()
    tty.setraw(slave)
    attrs = termios.tcgetattr(slave)
    attrs[3] |= termios.ISIG | termios.NOFLSH
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def take_console(parent: int) -> None:
    """In the child (preexec): a new session whose controlling terminal is fd 0, so
    Ctrl-C on it reaches the process; SIGKILL when the thread that started it dies
    (PR_SET_PDEATHSIG), so a supervisor killed outright leaves no interpreter behind."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:      # the supervisor died before the prctl
            os._exit(1)
