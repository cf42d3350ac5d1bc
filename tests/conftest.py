from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fota_host.images.synthetic import digests  # noqa: E402
from fota_host.sim.imageserver import ImageServer  # noqa: E402
from helpers import Mosquitto  # noqa: E402


@pytest.fixture
def mosquitto(tmp_path: Path):
    """A fresh mosquitto broker for one test."""
    broker = Mosquitto(tmp_path).start()
    yield broker
    broker.stop()


class Images:
    """Image files served by a real HTTP server, with their digests."""

    def __init__(self, root: Path, server: ImageServer) -> None:
        self.root = root
        self.server = server

    def add(self, name: str, data: bytes) -> dict:
        (self.root / name).write_bytes(data)
        return {"url": self.server.url(name), "path": str(self.root / name),
                **digests(data)}


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    with ImageServer(root) as server:
        yield Images(root, server)
