"""What an image file says about itself, for the platform: its format, the version a device
reports after installing it (ESP32 app descriptor, app bundle header), its anti-rollback
`secure_version`, and whether it is signed and by which key digests."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import bundle, delta, esp_image, signing
from .esp_image import APP_DESC_MAGIC, IMAGE_MAGIC


@dataclass
class ImageFacts:
    format: str                       # "esp32", "bundle", "compressed", "delta" or "unknown"
    version: str | None = None        # what a device reports after installing it
    secure_version: int | None = None
    signed: bool = False
    key_digests: list[str] = field(default_factory=list)


def image_facts(data: bytes) -> ImageFacts:
    """The facts of `data`; an unknown format is not an error (the platform serves any file)."""
    info = signing.signature_info(data)
    facts = ImageFacts("unknown", signed=info.signed, key_digests=info.key_digests)
    if delta.is_container(data):
        facts.format = "compressed"
        try:
            facts.format = delta.describe(data)["kind"]
        except delta.FormatError:
            pass
    elif len(data) >= 0x50 and data[0] == IMAGE_MAGIC and \
            struct.unpack_from("<I", data, 0x20)[0] == APP_DESC_MAGIC:
        facts.format = "esp32"
        try:    # esptool's parse: the version and counter of an image that is whole
            app = esp_image.parse_app_image(data)
            facts.version, facts.secure_version = app.version, app.secure_version
        except esp_image.ImageError:    # served as given; the device refuses a bad one
            facts.version = data[0x30:0x50].split(b"\0", 1)[0].decode("utf-8", "replace")
            facts.secure_version = struct.unpack_from("<I", data, 0x24)[0]
    elif data[:4] == bundle.MAGIC and len(data) >= bundle.HEADER:
        facts.format = "bundle"
        facts.version = bundle.header_version(data)
        try:
            facts.secure_version = bundle.secure_version(data)
        except (bundle.BundleError, ValueError, struct.error):
            facts.secure_version = None
    return facts
