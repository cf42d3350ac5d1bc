from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import Mosquitto  # noqa: E402


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A fresh mosquitto broker for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()
