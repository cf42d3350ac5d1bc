"""Small helpers shared by the test suites."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from fota_host.sim.faults import FaultProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll `predicate` until it returns something true; return that, or fail the test."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class Output:
    """Collects a text-mode process's stdout in a thread, so a test can wait for a line
    with a generous timeout instead of sleeping a fixed time (a busy machine starts
    MicroPython slowly)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    def wait(self, text: str, timeout: float = 30.0) -> bool:
        """True once `text` was printed; False at the timeout or when the output ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in "".join(self.lines):
                return True
            if not self.thread.is_alive():
                return text in "".join(self.lines)
            time.sleep(0.05)
        return False

    def text(self) -> str:
        """Everything printed; call after the process ended."""
        self.thread.join(10)
        return "".join(self.lines)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Wait until something accepts on host:port (a broker or server just started).

    Generous by default: a busy 2-core machine can take many seconds to start one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def mosquitto_bin() -> str:
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if not found:
        raise RuntimeError("mosquitto is not installed: apt-get install mosquitto (.ci/run does)")
    return found


class Mosquitto:
    """A real mosquitto on a free loopback port, restartable on the same port."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.picked = port is None  # a port of our choosing may be changed once if taken
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.extra_conf = extra_conf
        self._configure(port or free_port())
        self.proc: subprocess.Popen | None = None

    def _configure(self, port: int) -> None:
        self.port = port
        # As root, mosquitto drops to its own user, who can't read pytest's folders
        # (certificates, the log): keep root for these throw-away brokers.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n{self.extra_conf}"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        """Start it and wait until it listens. On its first start a port picked by
        free_port() may have been taken meanwhile by another program (a busy machine):
        mosquitto then exits at once, and it is started again on a fresh port."""
        for attempt in range(3):
            self.proc = subprocess.Popen(
                [mosquitto_bin(), "-c", str(self.conf)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            deadline = time.monotonic() + 30
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        pass
                except OSError:
                    time.sleep(0.05)
                    continue
                time.sleep(0.1)
                if self.proc.poll() is None:  # (a listener that was not ours: it exited)
                    self.picked = False  # restarts keep this port: clients know it
                    return self
            if self.proc.poll() is None or not self.picked or attempt == 2:
                break
            self._configure(free_port())
        wait_port(self.port, timeout=0.1)  # raises, saying what does not listen
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


class StallingProxy(FaultProxy):
    """The broker path of the tests in tests/firmware: a `FaultProxy` whose connections
    opened while stalled are dropped on release (no stale CONNECT replayed to the broker).
    Those tests use the older names: `forward.clear()`/`set()` and `conns`; new tests use
    `FaultProxy(..., drop_held=True)` with `stall()`, `release()`, `connections`."""

    def __init__(self, target: int) -> None:
        super().__init__(target, drop_held=True)

    @property
    def conns(self) -> int:
        return self.connections
