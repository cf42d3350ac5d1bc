"""The platform in a child process: `start_platform(DIR, **options)` for tests, demos and
benches. The options become a `ServiceOptions` here; the child (`python -m
fota_host.platform.process`) reads it as JSON on its stdin and serves."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .client import ApiClient, read_service_info
from .options import ServiceOptions
from .validate import PlatformError


class PlatformProcess:
    """A platform service running in a child process; `start()` again after `stop()` or
    `kill()` runs it on the same data folder with the same options."""

    def __init__(self, options: ServiceOptions, timeout: float, log_path: Path | None) -> None:
        self.options = options
        self.data_dir = Path(options.data_dir)
        self.timeout = timeout
        self.log_path = log_path or self.data_dir / "platform.log"
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        # how the last child ended: 0 after a clean stop, -9 when `stop` had to kill it
        self.returncode: int | None = None

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

    def client(self) -> ApiClient:
        return ApiClient(self.info)

    def start(self) -> PlatformProcess:
        """Start the child and wait until it serves (its service.json written)."""
        self.launch()
        assert self.proc is not None
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

    def launch(self) -> subprocess.Popen:
        """Start the child without waiting for it to serve."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # service.json is left alone: it may be another running service's (which the
        # child then refuses to disturb); start() waits for this child's own pid.
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as logf:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fota_host.platform.process"], stdin=subprocess.PIPE,
                stdout=logf, stderr=subprocess.STDOUT)
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.options.to_json().encode())
        self.proc.stdin.close()
        return self.proc

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, and SIGKILL if the child has not ended `timeout` seconds later."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the crash case (no clean shutdown)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.returncode = self.proc.returncode
        self.proc = None

    def __enter__(self) -> PlatformProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_platform(data_dir: str | Path, *, timeout: float = 30.0,
                   log_path: Path | None = None, **options: Any) -> PlatformProcess:
    """Start a platform service in a child process and wait until it is ready.

    `options` are fields of `ServiceOptions` (broker, host, http_port, mqtt_port,
    public_url, ca, insecure, client_id, tls_cert, tls_key, tick) or of `Settings`
    (push_rate, retries, retry_backoff, device_timeout, token_ttl, online_window, ...,
    db="postgresql://USER:PASS@HOST[:PORT]/DB" for a PostgreSQL store, share_group,
    packages_dir). Ports default to 0 here: a free one is picked (see `.info`, the parsed
    service.json)."""
    options.setdefault("http_port", 0)
    options.setdefault("mqtt_port", 0)
    opts = ServiceOptions.build(data_dir, **options)
    return PlatformProcess(opts, timeout, log_path).start()


def _child() -> int:
    """The child's side: options on stdin, serve until SIGTERM, log on stderr."""
    opts = ServiceOptions.from_json(sys.stdin.read())
    logging.basicConfig(level="INFO", stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .service import run_service

    try:
        run_service(opts)
    except (OSError, PlatformError) as exc:
        print(f"error: cannot serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child())
