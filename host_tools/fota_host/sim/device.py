"""A simulated board: the device code on the unix port, rebooted like hardware.

`SimDevice` writes the device config into the flash folder, applies the simulated
bootloader (simflash.boot) before every start, runs `micropython -m fota_sim agent ID`
with the flash folder as its filesystem, and starts it again after a hard reset
(exit status 3) or a crash (as a watchdog would), until stopped.

Every device process names its device on its command line (`fota_sim agent dev-001`),
runs in its own process group (a Ctrl-C in the terminal reaches only the supervisor,
which stops the devices in order) and is killed by the kernel when the thread that
started it dies (PR_SET_PDEATHSIG), so a supervisor killed with SIGKILL leaves no
device running.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
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
# The agent's smallest working heap on the 64-bit unix port (`make bench`:
# agent_min_heap_kib); below it a device would only crash and reboot, once a second.
MIN_AGENT_HEAP = 64 * 1024
_PR_SET_PDEATHSIG = 1
try:
    _prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):      # not Linux: no parent-death signal
    _prctl = None


def parse_heap(text: str, minimum: int = MIN_AGENT_HEAP, what: str = "--heap") -> str:
    """A MicroPython heap size (`96K`, `1M`, `65536`), checked against `minimum` bytes;
    returns it as given to `-X heapsize=`."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise ValueError(f"{what} must be a size such as 96K, 1M or 98304, not {text!r}")
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if size < minimum:
        raise ValueError(f"{what} {text} is too small: the device code needs at least "
                         f"{minimum // 1024}K on the unix port")
    return f"{m.group(1)}{m.group(2).upper()}"


def broker_config(url: str) -> dict[str, Any]:
    """The config's `broker` section from mqtt[s]://[USER:PASS@]HOST[:PORT]."""
    u = urlparse(url)
    hint = "mqtt://HOST:PORT (mqtts:// for TLS, mqtt://USER:PASSWORD@HOST:PORT with a login)"
    if u.scheme not in ("mqtt", "mqtts"):
        cause = f"unknown scheme {u.scheme + '://'!r}" if u.scheme else "no scheme"
        raise ValueError(f"broker {url!r}: {cause}; give {hint}")
    try:
        port = u.port
    except ValueError:
        raise ValueError(f"broker {url!r}: the port is not a number from 1 to 65535; "
                         f"give {hint}") from None
    if not u.hostname:
        raise ValueError(f"broker {url!r}: no host name; give {hint}")
    tls = u.scheme == "mqtts"
    return {"host": u.hostname, "port": port or (8883 if tls else 1883),
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


# Runs the device's own config check (firmware/fota/config.py) on the unix port, so the
# host refuses exactly what the board would refuse, with the board's words.
_CHECK_CONFIG = """import json, os
from fota import config
try:
    config.validate(json.loads(os.getenv("FOTA_CHECK_CONFIG")))
    print("ok")
except config.ConfigError as exc:
    print("error:", exc)
"""


def config_problem(cfg: dict[str, Any]) -> str | None:
    """Why the device would refuse `cfg` (and run with OTA disabled), or None when it takes
    it. The check is the firmware's own `fota.config.validate`, run once on the unix port;
    SimError when it cannot run."""
    try:
        out = mprun.run(["-c", _CHECK_CONFIG], env={"FOTA_CHECK_CONFIG": json.dumps(cfg)},
                        timeout=120)
    except subprocess.TimeoutExpired:
        raise simflash.SimError("the device config check on the unix port did not answer "
                                "in 120 s (is the machine overloaded?)") from None
    text = out.stdout.strip()
    if out.returncode != 0 or not text.startswith(("ok", "error:")):
        raise simflash.SimError("the device config check did not run on the unix port: "
                                f"{out.stderr.strip()[-300:] or 'no output'}")
    return text[len("error: "):] if text.startswith("error:") else None


class SimDevice:
    def __init__(self, flash: Path, board: str, device_id: str, broker_url: str,
                 prefix: str | None = None, version: str | None = None, heap: str = "128K",
                 log: IO[str] | None = None, config: dict[str, Any] | None = None) -> None:
        self.flash = Path(flash).resolve()
        self.board = board
        self.device_id = device_id
        self.heap = parse_heap(heap, minimum=1)   # the CLI enforces the working minimum
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        self.stopping = threading.Event()
        # stop() and the power-on of a new process exclude each other: a process started
        # just after stop() looked would run on, orphaned, after the fleet is gone.
        self._power = threading.Lock()
        cfg = device_config(device_id, broker_url, prefix, **(config or {}))  # checked first:
        prepare(self.flash, board, version)        # a bad broker leaves no flash folder behind
        self.board = simflash.board_of(self.flash)   # esp32s3 runs the esp32 family's code
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
            # the id after `agent` is ignored by the device and names it in ps/pgrep
            self.proc = proc = mprun.popen(
                ["-m", "fota_sim", "agent", self.device_id], heap=self.heap, flash=self.flash,
                cwd=self.flash, stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
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

    def interrupt(self) -> None:
        """From a signal handler: stop rebooting and SIGTERM the running process, without
        waiting (the thread that waits for it may be the one the handler interrupted)."""
        self.stopping.set()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

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


def _die_with_parent(parent: int) -> Any:
    """A preexec_fn: the child gets SIGKILL when its parent thread dies, and exits at once
    if the parent is already gone. Only a prctl call and getppid: nothing that takes a lock
    another thread of the supervisor could hold."""
    if _prctl is None:
        return None
    prctl, sig = _prctl, int(signal.SIGKILL)

    def setup() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return setup
