"""A simulated board: the device code on the unix port, rebooted like hardware.

`SimDevice` writes the device config into the flash folder, applies the simulated
bootloader (simflash.boot) before every start, runs `micropython -m fota_sim agent`
with the flash folder as its filesystem, and starts it again after a hard reset
(exit status 3) or a crash (as a watchdog would), until stopped.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlparse

from . import flash as simflash
from . import mprun
from .update import prepare

RESET_EXIT = 3


def broker_config(url: str) -> dict[str, Any]:
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"broker must look like mqtt://HOST:PORT, not {url!r}")
    tls = u.scheme == "mqtts"
    return {"host": u.hostname, "port": u.port or (8883 if tls else 1883),
            "user": u.username, "password": u.password, "tls": tls}


def device_config(device_id: str, broker_url: str, prefix: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"device_id": device_id, "broker": broker_config(broker_url),
                           "topic_prefix": prefix, "module": "MCU"}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


class SimDevice:
    def __init__(self, flash: Path, board: str, device_id: str, broker_url: str,
                 prefix: str | None = None, version: str | None = None, heap: str = "96K",
                 log: IO[str] | None = None, config: dict[str, Any] | None = None) -> None:
        self.flash = Path(flash).resolve()
        self.board = board
        self.heap = heap
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.stopping = threading.Event()
        # stop() and the power-on of a new process exclude each other: a process started
        # just after stop() looked would run on, orphaned, after the fleet is gone.
        self._power = threading.Lock()
        prepare(self.flash, board, version)
        cfg = device_config(device_id, broker_url, prefix, **(config or {}))
        (self.flash / "fota_config.json").write_text(json.dumps(cfg, indent=1))

    def _say(self, text: str) -> None:
        if self.log:
            self.log.write(f"[sim] {text}\n")
            self.log.flush()

    def boot_once(self) -> int | None:
        """One power-on until reset or crash; returns the exit status (None: stopped)."""
        st = simflash.boot(self.flash, full_status=False)
        self.boots += 1
        self._say(f"boot {self.boots}: running {st['running']} version {st['version']}"
                  f"{' (trial)' if st['pending'] else ''}")
        with self._power:
            if self.stopping.is_set():
                return None
            self.proc = proc = mprun.popen(
                ["-m", "fota_sim", "agent"], heap=self.heap, flash=self.flash, cwd=self.flash,
                stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
        return proc.wait()

    def run(self) -> None:
        """Boot, and boot again after every reset, until stop()."""
        while not self.stopping.is_set():
            code = self.boot_once()
            if self.stopping.is_set():
                break
            if code == RESET_EXIT:
                continue
            self._say(f"device exited with status {code}: rebooting as a watchdog would")
            self.stopping.wait(1.0)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self, timeout: float = 5.0) -> None:
        with self._power:
            self.stopping.set()
            proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Power cut: SIGKILL the running process (the supervisor boots it again)."""
        proc = self.proc
        if proc and proc.poll() is None:
            proc.kill()

    def status(self) -> dict[str, Any]:
        return simflash.status(self.flash)

    def wait_for(self, pred, timeout: float = 60.0, every: float = 0.1) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.status()
                if pred(st):
                    return st
            except (simflash.SimError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"device state not reached in {timeout}s: {self.status()}")
            time.sleep(every)
