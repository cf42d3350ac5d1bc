"""A simulated board on a serial line: `fota sim board`.

The board is the MicroPython unix port run in a folder (the board's filesystem) behind a
pseudo-terminal, so mpremote, `make deploy` and a terminal program use it as they use a
board on /dev/ttyUSB0. The unix port exits where a board reboots; the supervisor here
keeps the serial line open and starts it again, as the board's firmware would:

- power-on and hard reset (`machine.reset()`, `mpremote reset`; the process exits with
  status 3): on ESP32 the simulated bootloader picks the slot (sim/flash.py: trial boots,
  rollback), then boot.py and main.py run and the REPL follows;
- soft reset (Ctrl-D at the REPL, raw or friendly; SystemExit): "MPY: soft reboot", a
  fresh interpreter, boot.py, then main.py unless the REPL is in raw mode, in which case
  the new interpreter is put back in raw mode before the client sees it;
- Ctrl-C interrupts a running program; input after it waits until the REPL prompts, so
  nothing mpremote sends right after its Ctrl-C is lost while the REPL sets up its line.

The hardware stand-ins (firmware/sim: `esp32`, `machine`, `network`) come first on the
module path; the ESP32's frozen `umqtt` comes from the device build. On ESP32 the flash
partitions (ota_0, ota_1, otadata) live in a folder beside the board's filesystem, so an
OTA update through the deployed agent writes and boots real (simulated) slots.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from .. import paths
from ..boards import build as devicebuild
from ..boards import chips
from . import flash as simflash
from . import mprun
from .device import RESET_EXIT, parse_heap
from .ptyrelay import SerialLine, console, take_console

# By family (boards/chips.py): an ESP32-S3/C3/C6 runs as the ESP32 does, a Pico 2 W as the
# Pico W; the board itself is in the flash folder's `model` (its chip id, slot size and
# watchdog limit).
PLATFORMS = {"esp32": "esp32", "pico_w": "rp2"}
STANDINS = {"esp32": ("esp32", "machine", "network", "sim_board"),
            "pico_w": ("machine", "network", "sim_board")}
FROZEN = {"esp32": ("umqtt",), "pico_w": ()}   # what the official firmware freezes
SOFT_REBOOT = b"MPY: soft reboot\r\n"
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
FRIENDLY_BANNER = b'Type "help()" for more information.'
PROMPTS = (b">>> ", b"... ", b"\r\n>", b"\x04>")
CTRL_C = b"\x03"
EXIT_MARK = re.compile(rb"\x00sim-exit (-?\d+)\x00")
CTRL_C_WAIT = 3.0        # seconds input waits for the prompt after a Ctrl-C


class SimBoard:
    def __init__(self, board: str, root: Path, link: Path | None = None,
                 flash: Path | None = None, version: str = "1.0.0", heap: str = "256K",
                 log: IO[str] | None = None, console_log: IO[str] | None = None) -> None:
        if board not in chips.BOARDS:
            raise simflash.SimError(
                f"unknown board {board!r}; one of {', '.join(chips.BOARDS)}")
        self.board = board
        self.family = chips.family(board)
        self.root = Path(root).resolve()
        self.flash = Path(flash).resolve() if flash else \
            self.root.parent / f"{self.root.name}.flash"
        self.heap = parse_heap(heap, minimum=1)
        self.log = log
        self.console_log = console_log
        self.raw = False
        self.boots = 0
        self.stopping = False
        self.proc: subprocess.Popen | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        if simflash.init_flash(self.flash, board) and self.family == "esp32":
            simflash.seed(self.flash, version)     # the firmware the board shipped with
        devicebuild.ensure_built()
        self._standins = Path(tempfile.mkdtemp(prefix=f"fota-board-{board}-"))
        for name in STANDINS[self.family]:       # compiled, as mprun runs them
            (self._standins / f"{name}.mpy").symlink_to(paths.sim_dir() / f"{name}.mpy")
        for name in FROZEN[self.family]:
            (self._standins / name).symlink_to(paths.device_dir() / name)
        self._wake_r, self._wake_w = os.pipe()
        self.line = SerialLine(link)

    @property
    def port(self) -> str:
        return self.line.path

    def describe(self) -> dict[str, Any]:
        return {"port": self.port, "tty": self.line.tty, "board": self.board,
                "family": self.family, "root": str(self.root), "flash": str(self.flash),
                "pid": os.getpid()}

    def _say(self, text: str) -> None:
        if self.log:
            self.log.write(f"[board] {text}\n")
            self.log.flush()

    def _echo(self, data: bytes) -> None:
        """The board's console output, copied to the log (as a serial monitor would)."""
        if self.console_log:
            self.console_log.write(data.decode("utf-8", "replace"))
            self.console_log.flush()

    # -- the board's life ------------------------------------------------------------
    def run(self) -> None:
        """Power on, and start the board again after every reset, until stop()."""
        reset = "power"
        try:
            while not self.stopping:
                if reset == "soft":
                    self.line.write(SOFT_REBOOT)
                else:
                    self.raw = False
                    if self.family == "esp32":
                        st = simflash.boot(self.flash, full_status=False)
                        self._say(f"{reset} reset: running {st['running']} version "
                                  f"{st['version']}{' (trial)' if st['pending'] else ''}")
                    else:
                        self._say(f"{reset} reset")
                code = self._run_once()
                if code is None:
                    break
                if code == RESET_EXIT:
                    reset = "hard"
                elif code < 0:          # killed (out of memory, a signal): as a watchdog
                    self._say(f"interpreter killed by signal {-code}: hard reset")
                    reset = "hard"
                else:
                    reset = "soft"
        finally:
            self._halt()

    def _start(self) -> int:
        master, slave = console()
        code = (f"import sim_board\nsim_board.start(globals(), "
                f"{PLATFORMS[self.family]!r}, {self.raw})")
        parent = os.getpid()

        def preexec() -> None:
            take_console(parent)
        env = mprun.device_env(self.flash)
        env["MICROPYPATH"] = f"{self._standins}::.frozen:{self.root / 'lib'}"
        self.boots += 1
        self.proc = subprocess.Popen(
            mprun.command(["-i", "-c", code], self.heap), stdin=slave, stdout=slave,
            stderr=slave, cwd=self.root, env=env, preexec_fn=preexec, close_fds=True)
        os.close(slave)
        os.set_blocking(master, False)
        return master

    def _run_once(self) -> int | None:
        """One interpreter, relayed until it exits; its status (None: stopped)."""
        con = self._start()
        proc = self.proc
        assert proc is not None
        phase = "enter_raw" if self.raw else "run"
        held = b""          # output held while the new interpreter is put in raw mode
        pending = b""       # input not yet given to the interpreter
        gate = 0.0          # after a Ctrl-C: input waits for a prompt until this time
        tail = b""
        recent = b""        # the last bytes printed, for the exit mark split across reads
        try:
            while not self.stopping:
                if phase == "run" and gate and time.monotonic() > gate:
                    gate = 0.0
                writers = [con] if pending and phase == "run" and not gate else []
                readers = [self.line.master, self._wake_r, con]
                r, w, _ = select.select(readers, writers, [], 0.2)
                if self._wake_r in r:
                    os.read(self._wake_r, 64)
                if self.line.master in r:
                    pending += self.line.read()
                if con in w:
                    chunk = pending
                    if not tail.endswith(PROMPTS) and CTRL_C in chunk:
                        chunk = chunk[:chunk.index(CTRL_C) + 1]
                        gate = time.monotonic() + CTRL_C_WAIT
                    n = _write_some(con, chunk)
                    pending = pending[n:]
                    if n and gate and n < len(chunk):
                        gate = 0.0      # the Ctrl-C itself did not go: nothing to wait for
                if con in r:
                    data = _read_some(con)
                    if data is None:    # the console hangs up once the interpreter exits
                        return proc.wait()
                    seen = recent + data
                    recent = seen[-24:]
                    mark = EXIT_MARK.search(seen)
                    if mark:            # SystemExit in boot.py/main.py (sim_board._reset)
                        if phase == "run":
                            self.line.write(data[:max(0, mark.start() - len(seen) + len(data))])
                        self._kill(proc)
                        return int(mark.group(1))
                    if phase == "run":
                        self.line.write(data)
                        self._echo(data)
                        tail = self._track(tail, data)
                        if gate and tail.endswith(PROMPTS):
                            gate = 0.0
                    else:
                        held += data
                        if phase == "enter_raw" and held.endswith(b">>> "):
                            cut = held.rfind(b"MicroPython ")
                            self.line.write(held[:cut if cut >= 0 else len(held) - 4])
                            held = b""
                            _write_some(con, b"\x01")
                            phase = "await_raw"
                        elif phase == "await_raw" and RAW_BANNER + b">" in held:
                            self.line.write(held[held.index(RAW_BANNER):])
                            tail, held, phase = b"\r\n>", b"", "run"
            return None
        finally:
            os.close(con)

    def _track(self, tail: bytes, data: bytes) -> bytes:
        """Follow the REPL's mode from what it prints; the last 64 bytes printed."""
        s = tail + data
        raw_at, friendly_at = s.rfind(RAW_BANNER), s.rfind(FRIENDLY_BANNER)
        if raw_at != friendly_at:
            self.raw = raw_at > friendly_at
        return s[-64:]

    def stop(self) -> None:
        """From a signal handler or another thread: end the board at the next turn."""
        self.stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    @staticmethod
    def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()

    def _halt(self) -> None:
        if self.proc is not None:
            self._kill(self.proc, signal.SIGTERM)
        self.line.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        shutil.rmtree(self._standins, ignore_errors=True)


def _write_some(fd: int, data: bytes) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return len(data)        # the interpreter is gone: its input goes nowhere


def _read_some(fd: int) -> bytes | None:
    """Output of the interpreter: b"" when none is ready, None once it has exited."""
    try:
        data = os.read(fd, 4096)
    except BlockingIOError:
        return b""
    except OSError:
        return None
    return data or None
