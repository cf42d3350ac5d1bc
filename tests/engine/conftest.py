from __future__ import annotations

from pathlib import Path

import pytest
from fota_host import images
from fota_host.imageserver import ImageServer


class Images:
    """Image files served by a real HTTP server, with their digests."""

    def __init__(self, root: Path, server: ImageServer) -> None:
        self.root = root
        self.server = server

    def add(self, name: str, data: bytes) -> dict:
        (self.root / name).write_bytes(data)
        return {"url": self.server.url(name), "path": str(self.root / name),
                **images.digests(data)}


@pytest.fixture
def served(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    with ImageServer(root) as server:
        yield Images(root, server)
