"""`fota pack esp32`: check a real MicroPython ESP32 app image before it reaches a device.

The checks a board would make on the first block (magic, chip id, app descriptor), plus
what only the host can see cheaply: the whole image parses (segments, appended SHA-256),
it fits the OTA slot of the board's partition table, and the version the image carries
is the one the platform will wait for (the device reports the descriptor's version).
"""

from __future__ import annotations

import struct
from typing import Any

from . import esp_image, synthetic
from .esp_image import APP_DESC_MAGIC, IMAGE_MAGIC, ImageError

# Where esptool puts the app in the combined firmware.bin of MicroPython's ESP32 builds:
# the file starts at the bootloader's flash address (0x1000 on the ESP32, 0x0 on the
# S2/S3/C3/C6 families) and the app partition starts at 0x10000.
_SCAN_STEP = 0x1000


def find_embedded_app(data: bytes) -> int | None:
    """File offset of an app image inside a combined firmware.bin, or None."""
    for off in range(_SCAN_STEP, len(data) - 0x24, _SCAN_STEP):
        if data[off] == IMAGE_MAGIC and struct.unpack_from("<I", data, off + 0x20)[0] == \
                APP_DESC_MAGIC:
            return off
    return None


def _explain_combined(data: bytes) -> str:
    at = find_embedded_app(data)
    where = f" (an app image starts at file offset 0x{at:x})" if at is not None else ""
    return (
        "this is not an app image: byte 0 is the 0xE9 magic but there is no app "
        "descriptor (0xABCD5432) at offset 0x20. It looks like the combined firmware.bin "
        f"that starts with the bootloader{where}; that file is for flashing over USB with "
        "esptool once. For OTA upload the app image alone: micropython.bin in the build "
        "folder (ports/esp32/build-<BOARD>-<VARIANT>/micropython.bin), or the .app-bin "
        "download of the board's OTA variant."
    )


def check_image(data: bytes, version: str | None, chip: str = "esp32",
                layout: str = "esp32-generic-ota") -> dict[str, Any]:
    """Validate an ESP32 app image for OTA; the JSON facts, or ImageError explaining why not.

    `version`: the one expected (None: whatever the image carries)."""
    if chip not in esp_image.CHIP_IDS:
        raise ImageError(f"unknown chip {chip!r}; one of {', '.join(esp_image.CHIP_IDS)}")
    if layout not in esp_image.PARTITION_LAYOUTS:
        raise ImageError(f"unknown partition layout {layout!r}; one of "
                         f"{', '.join(esp_image.PARTITION_LAYOUTS)}")
    if len(data) >= 0x24 and data[0] == IMAGE_MAGIC and \
            struct.unpack_from("<I", data, 0x20)[0] != APP_DESC_MAGIC:
        raise ImageError(_explain_combined(data))
    app = esp_image.parse_app_image(data)
    if app.chip_id != esp_image.CHIP_IDS[chip]:
        raise ImageError(
            f"the image is built for {app.chip} (chip id {app.chip_id}), not {chip}: a board "
            f"refuses it. Build for {chip}, or pass --chip {app.chip} if the boards are that chip."
        )
    slot = esp_image.PARTITION_LAYOUTS[layout]
    if len(data) > slot:
        raise ImageError(
            f"{len(data)} bytes does not fit the {slot} byte OTA slot of layout {layout} "
            f"(over by {len(data) - slot} bytes): freeze fewer modules, or use a board and "
            "layout with bigger OTA slots."
        )
    if version is not None and app.version != version:
        raise ImageError(
            f"the image carries version {app.version!r} in its app descriptor, not "
            f"{version!r}: the device reports the descriptor's version after the update, so "
            f"the platform would never see {version!r}. Pass --version {app.version!r}, or "
            "build with that version (PROJECT_VER / MICROPY_GIT_TAG)."
        )
    return {
        **synthetic.digests(data),
        "version": app.version,
        "chip": app.chip,
        "project": app.project,
        "idf_version": app.idf_version,
        "layout": layout,
        "slot_size": slot,
        "free": slot - len(data),
        "trailing_bytes": len(data) - app.size,
        "secure_version": struct.unpack_from("<I", data, 0x24)[0],
        **_signature(data),
    }


def _signature(data: bytes) -> dict[str, Any]:
    from . import signing

    info = signing.signature_info(data)
    return {"signed": info.signed, "key_digests": info.key_digests}

