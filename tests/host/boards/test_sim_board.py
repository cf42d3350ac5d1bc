"""`fota sim board`: the simulated board behaves on its serial line as a board does for
mpremote and a terminal: files, raw REPL, soft and hard reset, Ctrl-C, clean stop."""

from __future__ import annotations

import os
import signal
import termios
import time
from pathlib import Path

import pytest
from simboard import Board, alive, mpremote, wait_for

BOOT = 'with open("boots.txt", "a") as f:\n    f.write("b")\n'
MAIN = ('with open("boots.txt", "a") as f:\n    f.write("m")\n'
        'import time\nwhile True:\n    time.sleep_ms(50)\n')


def boots(b: Board) -> str:
    try:
        return (b.root / "boots.txt").read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("kind", ["esp32", "pico_w"])
def test_files_resets_and_platform(tmp_path: Path, kind: str) -> None:
    with Board(tmp_path, kind) as b:
        (tmp_path / "boot.py").write_text(BOOT)
        (tmp_path / "main.py").write_text(MAIN)
        p = mpremote(b.port, "fs", "cp", str(tmp_path / "boot.py"), ":boot.py", "+", "fs",
                     "cp", str(tmp_path / "main.py"), ":main.py", "+", "fs", "ls")
        assert p.returncode == 0, p.stderr
        assert "boot.py" in p.stdout and "main.py" in p.stdout
        assert (b.root / "main.py").read_text() == MAIN
        assert boots(b) == ""
        # mpremote's soft reset (raw REPL, Ctrl-D) before it runs code: boot.py, no main.py;
        # the port reads as the board's, so the device code picks the board's slot kind
        p = mpremote(b.port, "exec", "import sys; print(sys.platform)")
        assert boots(b) == "b"
        assert p.stdout.strip() == {"esp32": "esp32", "pico_w": "rp2"}[kind]
        assert mpremote(b.port, "soft-reset").returncode == 0
        assert boots(b) == "bb"             # mpremote's soft-reset: raw REPL, no main.py
        # hard reset: the board restarts, runs boot.py then main.py
        assert mpremote(b.port, "reset").returncode == 0
        wait_for("boot.py and main.py after the hard reset", lambda: boots(b) == "bbbbm")
        assert b.resets("hard") == 1
        # `resume` reaches the running main.py with Ctrl-C and keeps its globals
        p = mpremote(b.port, "resume", "exec", "print(sorted(k for k in globals() if k == 'f'))")
        assert p.returncode == 0 and p.stdout.strip() == "['f']", p
        assert boots(b) == "bbbbm"          # no reset for `resume`


def _serial(port: str) -> int:
    fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~(termios.ICANON | termios.ECHO)
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return fd


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    out = b""
    os.set_blocking(fd, False)
    deadline = time.monotonic() + timeout
    while marker not in out:
        assert time.monotonic() < deadline, f"no {marker!r} in {out!r}"
        try:
            out += os.read(fd, 4096)
        except BlockingIOError:
            time.sleep(0.05)
    return out


def test_friendly_repl_soft_reboot_runs_main(tmp_path: Path) -> None:
    """A terminal user: Ctrl-C stops main.py, Ctrl-D at >>> soft-reboots into main.py."""
    (tmp_path / "board").mkdir()
    (tmp_path / "board" / "boot.py").write_text(BOOT)
    (tmp_path / "board" / "main.py").write_text(MAIN)
    with Board(tmp_path, "esp32") as b:
        wait_for("boot.py and main.py at power-on", lambda: boots(b) == "bm")
        fd = _serial(b.port)
        try:
            os.write(fd, b"\r\x03")
            _read_until(fd, b">>> ")
            os.write(fd, b"print(6 * 7)\r")
            assert b"42" in _read_until(fd, b"42")
            os.write(fd, b"\x04")
            _read_until(fd, b"soft reboot")
            wait_for("boot.py and main.py after the soft reboot", lambda: boots(b) == "bmbm")
        finally:
            os.close(fd)
        assert b.resets("hard") == 0        # the soft reboot went through no bootloader


def test_stop_leaves_nothing_running(tmp_path: Path) -> None:
    b = Board(tmp_path, "pico_w")
    try:
        assert mpremote(b.port, "exec", "print(1)").returncode == 0
        interpreters = b.children()
        assert interpreters
    finally:
        code = b.stop()
    assert code == 0
    assert not any(alive(pid) for pid in interpreters)
    assert not os.path.lexists(b.port)          # the --link is removed
    # killed outright, the supervisor still takes its interpreter with it
    b = Board(tmp_path, "pico_w", name="again")
    try:
        assert mpremote(b.port, "exec", "print(1)").returncode == 0
        interpreters = b.children()
        os.kill(b.proc.pid, signal.SIGKILL)
        b.proc.wait()
        wait_for("the interpreter gone with its supervisor",
                 lambda: not any(alive(pid) for pid in interpreters), timeout=10)
    finally:
        b.stop()
