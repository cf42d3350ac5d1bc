"""The platform in a child process: `start_platform(...)` for tests, demos and benches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def read_service_info(data_dir: Path) -> dict[str, Any] | None:
    path = Path(data_dir) / "service.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlatformProcess:
    """A platform running in a child process (`python -m fota_host.platform serve ...`)."""

    def __init__(self, data_dir: Path, args: list[str], timeout: float,
                 log_path: Path | None) -> None:
        self.data_dir = Path(data_dir)
        self.args = args
        self.timeout = timeout
        self.log_path = log_path or self.data_dir / "platform.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    @property
    def api(self) -> str:
        return self.info["api"]

    @property
    def broker(self) -> str:
        return self.info["broker"]

    @property
    def admin_token(self) -> str:
        return self.info["admin_token"]

    @property
    def file_base(self) -> str:
        return self.info["file_base"]

    def client(self) -> Any:
        from .client import ApiClient

        return ApiClient(self.info)

    def start(self) -> PlatformProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "service.json").unlink(missing_ok=True)
        logf = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fota_host.platform", "serve", "--data", str(self.data_dir),
             *self.args], stdout=logf, stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            info = read_service_info(self.data_dir)
            if info and info.get("pid") == self.proc.pid:
                self.info = info
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"platform did not start; log tail:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case (no clean shutdown)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> PlatformProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_platform(data_dir: str | Path, *, broker: str | None = None, http_port: int = 0,
                   mqtt_port: int = 0, host: str = "127.0.0.1", extra_args: list[str] | None = None,
                   timeout: float = 30.0, log_path: Path | None = None,
                   **options: Any) -> PlatformProcess:
    """Start `fota platform serve` in a child process and wait until it is ready.

    `options` map to the serve flags: push_rate=600 → `--push-rate 600`, etc. With http_port
    or mqtt_port 0 a free port is picked (see `.info`, the parsed service.json).
    """
    args = ["--host", host, "--http-port", str(http_port)]
    if broker:
        args += ["--broker", broker]
    else:
        args += ["--mqtt-port", str(mqtt_port)]
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    args += extra_args or []
    return PlatformProcess(Path(data_dir), args, timeout, log_path).start()
