"""Fixtures of the end-to-end tests (the helpers live in e2e_world.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from e2e_world import World  # noqa: E402


@pytest.fixture(params=["embedded", "mosquitto"])
def world(request, tmp_path):
    """The platform, a broker of each kind, and simulated devices; torn down after."""
    w = World(tmp_path, request.param)
    yield w
    w.close()
