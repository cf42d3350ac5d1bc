"""Image files for devices: synthetic sim images and app bundles, with their digests."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from . import bundle, esp_image


def digests(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


def file_digests(path: Path) -> dict[str, Any]:
    md5, sha, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return {"size": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def sim_image(board: str, version: str, size: int | None, fail_health: bool = False,
              chip: str = "esp32") -> bytes:
    """A synthetic image for a simulated board: an ESP32 app image or a Pico W bundle."""
    if board == "esp32":
        return esp_image.build_sim_image(version, size or 256 * 1024, chip, fail_health)
    if board == "pico_w":
        files = bundle.sim_app(version, fail_health)
        data = bundle.pack(version, files)
        if size is not None:
            overhead = len(data) + 2 + len("pad.bin") + 4
            if size < overhead:
                raise bundle.BundleError(f"a sim bundle needs at least {overhead} bytes")
            files["pad.bin"] = hashlib.sha256(version.encode()).digest() * (
                (size - overhead) // 32 + 1)
            files["pad.bin"] = files["pad.bin"][: size - overhead]
            data = bundle.pack(version, files)
        return data
    raise ValueError(f"unknown board {board!r}; one of esp32, pico_w")
