from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from platform_fakes import Env  # noqa: E402


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "fw-2.0.0.bin"
    path.write_bytes(os.urandom(150_000))
    return path


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
