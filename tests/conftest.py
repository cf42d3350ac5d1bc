from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fota_host.images.synthetic import digests  # noqa: E402
from fota_host.sim.imageserver import ImageServer  # noqa: E402
from helpers import Mosquitto  # noqa: E402
from pgserver import PgServer  # noqa: E402


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


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server for the whole session (tests/pgserver.py); fails (never
    skips) when PostgreSQL is not installed."""
    try:
        server = PgServer()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty PostgreSQL database for one test: its URL
    (postgresql://postgres:PASS@127.0.0.1:PORT/NAME), for `--db` / `Settings(db=...)`."""
    return pg_server.new_database()
