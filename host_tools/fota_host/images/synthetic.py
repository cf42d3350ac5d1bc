"""Synthetic images for simulated boards (an ESP32 app image or a Pico W bundle of a given
version and size), and the digests of an image."""

from __future__ import annotations

import hashlib
from typing import Any

from . import bundle, esp_image


def digests(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


def sim_image(board: str, version: str, size: int | None, fail_health: bool = False,
              chip: str = "esp32", *, payload: bytes | None = None,
              secure_version: int | None = None) -> bytes:
    """A synthetic image for a simulated board: an ESP32 app image or a Pico W bundle.

    `payload`: the ESP32 image's segment data (a Pico W bundle carries it as payload.bin);
    `secure_version`: the anti-rollback counter (app descriptor, or the bundle's
    manifest.json). `board`: esp32, pico_w, or any board of boards/chips.py (an esp32s3's
    image carries the S3's chip id)."""
    from ..boards import chips

    spec = chips.BOARDS.get(board)
    if spec is not None and board not in ("esp32", "pico_w"):
        chip, board = spec.chip or chip, spec.family
    if board == "esp32":
        image = esp_image.build_sim_image(version, size or (None if payload else 256 * 1024),
                                          chip, fail_health, payload)
        if secure_version is not None:
            from . import signing

            image = signing.set_secure_version(image, secure_version)
        return image
    if board == "pico_w":
        files = bundle.sim_app(version, fail_health)
        if payload is not None:
            files["payload.bin"] = payload
        bundle.add_manifest(files, version, secure_version)
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
