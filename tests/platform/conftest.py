from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fota_host.platform import start_platform  # noqa: E402
from helpers import Mosquitto  # noqa: E402


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "fw-2.0.0.bin"
    path.write_bytes(os.urandom(150_000))
    return path


class Env:
    """A platform on a real broker (embedded amqtt or mosquitto) in a temp folder."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.mosquitto: Mosquitto | None = None
        self.proc: Any = None
        self.options: dict[str, Any] = {}
        if kind == "mosquitto":
            (tmp_path / "mq").mkdir()
            self.mosquitto = Mosquitto(tmp_path / "mq").start()

    def start(self, **options: Any) -> Any:
        self.options = options or self.options
        broker = self.mosquitto.url if self.mosquitto else None
        self.proc = start_platform(self.data, broker=broker, **self.options)
        return self.proc

    @property
    def broker(self) -> str:
        return self.proc.broker

    @property
    def api(self) -> Any:
        return self.proc.client()

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
        if self.mosquitto:
            self.mosquitto.stop()


@pytest.fixture(params=["embedded", "mosquitto"])
def env(request: pytest.FixtureRequest, tmp_path: Path):
    e = Env(request.param, tmp_path)
    yield e
    e.stop()


@pytest.fixture
def embedded(tmp_path: Path):
    e = Env("embedded", tmp_path)
    yield e
    e.stop()
