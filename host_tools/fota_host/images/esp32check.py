"""`fota pack esp32`: check a real MicroPython ESP32 app image before it reaches a device.

The checks a board would make on the first block (magic, chip id, app descriptor), plus
what only the host can see cheaply: the whole image parses (esptool: segments, checksum,
appended SHA-256), it fits the OTA slot of the board's partition table, and the version
the image carries is the one the platform will wait for (the device reports the
descriptor's version).

A combined firmware.bin (bootloader + partition table + app, what MicroPython's download
page offers for flashing over USB) is read with mp-image-tool-esp32's bootloader header and
partition table classes: the app image is taken from the first app partition that holds
one (`extract_app`), and the answer says which.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
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


@dataclass
class Extracted:
    app: bytes            # the app image, cut to its own length
    partition: str        # the partition it came from (factory, ota_0, ...)
    flash_offset: int     # where that partition starts in flash
    file_offset: int      # where the app starts in the combined file
    chip: str             # the bootloader's chip
    flash_size: int       # the flash size the bootloader header was built for


def _quiet_mpit() -> None:
    # mp-image-tool-esp32 logs table warnings (free space, short tables) as it parses.
    logging.getLogger("mp_image_tool_esp32").setLevel(logging.ERROR)


def read_table(data: bytes) -> tuple[Any, Any, int]:
    """(bootloader header, partition table, bootloader offset) of a combined firmware file;
    ImageError when it is not one."""
    from mp_image_tool_esp32.firmware_fileio import BOOTLOADER_OFFSET
    from mp_image_tool_esp32.image_header import ImageHeader
    from mp_image_tool_esp32.partition_table import (
        PART_TABLE_OFFSET,
        PART_TABLE_SIZE,
        PartitionError,
        PartitionTable,
    )

    _quiet_mpit()
    if len(data) < 24 or data[0] != IMAGE_MAGIC:
        raise ImageError("not an ESP32 firmware file (no 0xE9 bootloader header)")
    try:
        header = ImageHeader.from_bytes(data[:24])
        header.validate()
    except ValueError as exc:
        raise ImageError(f"the bootloader header is not valid: {exc}") from None
    boot = BOOTLOADER_OFFSET[header.chip_name]
    start = PART_TABLE_OFFSET - boot
    raw = data[start:start + PART_TABLE_SIZE]
    if len(raw) < PART_TABLE_SIZE:
        raise ImageError("the file ends before the partition table (flash 0x8000)")
    try:
        table = PartitionTable.from_bytes(raw, header.flash_size)
    except PartitionError as exc:
        raise ImageError(f"no valid partition table at flash 0x8000: "
                         f"{str(exc).splitlines()[0]}") from None
    return header, table, boot


def extract_app(data: bytes) -> Extracted | None:
    """The app image inside a combined firmware file, or None (not combined, or no app)."""
    if find_embedded_app(data) is None:
        return None
    try:
        header, table, boot = read_table(data)
    except ImageError:
        return None
    for part in table:
        if part.type_name != "app":
            continue
        off = part.offset - boot
        if off <= 0 or off + 0x24 > len(data):
            continue
        chunk = data[off:off + part.size]
        if chunk[0] != IMAGE_MAGIC or struct.unpack_from("<I", chunk, 0x20)[0] != \
                APP_DESC_MAGIC:
            continue
        app = esp_image.parse_app_image(chunk)
        return Extracted(chunk[:app.size], part.name, part.offset, off, header.chip_name,
                         header.flash_size)
    return None


def check_image(data: bytes, version: str | None, chip: str = "esp32",
                layout: str = "esp32-generic-ota") -> dict[str, Any]:
    """Validate an ESP32 app image for OTA; the JSON facts, or ImageError explaining why not.

    `version`: the one expected (None: whatever the image carries). A combined firmware
    file is refused here: `check_file` extracts its app first."""
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



def check_file(data: bytes, version: str | None, chip: str = "esp32",
               layout: str = "esp32-generic-ota") -> tuple[dict[str, Any], bytes]:
    """`check_image` of an app image, or of the app inside a combined firmware file (the
    facts then say where it came from under "extracted_from"); (facts, the app image)."""
    if len(data) >= 0x24 and data[0] == IMAGE_MAGIC and \
            struct.unpack_from("<I", data, 0x20)[0] != APP_DESC_MAGIC:
        found = extract_app(data)
        if found is not None:
            facts = check_image(found.app, version, chip, layout)
            facts["extracted_from"] = {
                "partition": found.partition, "flash_offset": found.flash_offset,
                "file_offset": found.file_offset, "bootloader_chip": found.chip,
                "flash_size": found.flash_size}
            return facts, found.app
    return check_image(data, version, chip, layout), data
