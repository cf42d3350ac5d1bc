"""Helpers for the `fota sim board` tests: a simulated board on a pseudo-terminal, run as
the user runs it (`fota sim board ... --link PATH`), and the user's commands against it
(`make deploy`, `make hil`, mpremote)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[3]
FOTA = [sys.executable, "-m", "fota_host"]
MPREMOTE = str(Path(sys.executable).parent / "mpremote")


def _stop_with_tests() -> None:
    """The board gets SIGTERM (and stops cleanly) if the test run dies without stopping it."""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


class Board:
    """`fota sim board` in a child process; `.port` is the serial line (a symlink)."""

    def __init__(self, tmp: Path, board: str, name: str = "board") -> None:
        self.board = board
        self.root = tmp / name
        self.port = str(tmp / f"tty-{name}")
        self.log = tmp / f"{name}.log"
        self.console = tmp / f"{name}.console"
        self.flash = tmp / f"{name}.flash"
        self.proc = subprocess.Popen(
            [*FOTA, "sim", "board", "--board", board, "--root", str(self.root),
             "--link", self.port, "--log", str(self.log), "--console", str(self.console)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_stop_with_tests)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        assert line, f"fota sim board did not start: {self.proc.stderr.read()}"  # type: ignore[union-attr]
        self.info = json.loads(line)

    def __enter__(self) -> Board:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def children(self) -> list[int]:
        return children_of(self.proc.pid)

    def resets(self, kind: str) -> int:
        try:
            return self.log.read_text().count(f"[board] {kind} reset")
        except OSError:
            return 0


def children_of(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def mpremote(port: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True, text=True,
                          timeout=timeout)


def make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "-C", str(ROOT), *args], capture_output=True,
                          text=True, timeout=timeout)


def provision(tmp: Path, broker_url: str, device: str, board: str) -> Path:
    """`fota device provision`, as docs/boards.md has the user do it."""
    b = urlsplit(broker_url)
    cfg = tmp / f"{device}.json"
    proc = subprocess.run([*FOTA, "device", "provision", "--id", device, "--broker-host",
                           b.hostname or "", "--broker-port", str(b.port), "--board", board,
                           "-o", str(cfg)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return cfg


def wait_for(what: str, pred, timeout: float = 60.0, every: float = 0.3):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout:.0f}s: {what}"
        time.sleep(every)


def device_seen(client, device: str, after: float = 0.0) -> dict | None:
    for d in client.list_devices():
        if d["id"] == device and d["last_seen"] > after:
            return d
    return None


def kill_tree(pid: int) -> None:
    for child in children_of(pid):
        kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
