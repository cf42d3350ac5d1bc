"""`fota board prepare`: any MicroPython ESP32 firmware made OTA-ready, flashed once over USB.

MicroPython's download page offers, per board, a combined `firmware.bin` (bootloader,
partition table, app) whose table usually has one `factory` app partition: such a board
cannot take an OTA update. `prepare()` writes a copy of that file with an OTA partition
table (nvs, otadata, ota_0, ota_1, vfs) through mp-image-tool-esp32's library (the same
steps as its `--table ota [--flash-size N]`), with the slot size of MicroPython's own OTA
tables for that flash size (boards/chips.py: 0x180000 on 4 MiB, 0x270000 on 8 MiB,
0x280000 on 16 MiB), after checking that the app fits a slot with room to grow: a 1.5 MiB
slot is too small for some builds (MicroPython issue #12745), and an app that fills its
slot today cannot take a larger update tomorrow.

The app stays where it was (flash 0x10000, now ota_0); the written file is flashed once
with esptool (the command is part of the answer); from then on updates go over the air.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

from ..images import esp32check, esp_image
from ..images.esp_image import ImageError
from . import chips

FLASH_SIZES = {"4M": 4 * chips.MIB, "8M": 8 * chips.MIB, "16M": 16 * chips.MIB}
# What an app must leave free in its slot: room for the next releases to grow into.
ROOM_TO_GROW = 128 * 1024


class PrepareError(RuntimeError):
    pass


def flash_size(text: str) -> int:
    size = FLASH_SIZES.get(text.upper().removesuffix("B").removesuffix("I"))
    if size is None:
        raise PrepareError(f"flash size {text!r}: one of {', '.join(FLASH_SIZES)}")
    return size


def _check_source(data: bytes, path: Path) -> esp32check.Extracted:
    if len(data) >= 0x24 and data[0] == esp_image.IMAGE_MAGIC and \
            int.from_bytes(data[0x20:0x24], "little") == esp_image.APP_DESC_MAGIC:
        raise PrepareError(
            f"{path} is an app image (micropython.bin / .app-bin), not a whole firmware: give "
            "the firmware.bin from the board's download page (bootloader, partition table "
            "and app), which is flashed over USB. The app image is what OTA sends later.")
    try:
        esp32check.read_table(data)
    except ImageError as exc:
        raise PrepareError(f"{path} is not a MicroPython ESP32 firmware file: {exc}") from None
    try:
        found = esp32check.extract_app(data)
    except ImageError as exc:
        raise PrepareError(f"{path}: its app partition holds a broken app image: {exc}") \
            from None
    if found is None:
        raise PrepareError(f"{path} has a partition table but no app image in any app "
                           "partition: it is not a complete firmware.bin")
    return found


def check_fit(app_size: int, slot: int, flash: int) -> int:
    """The bytes left in the slot; PrepareError when the app does not fit with room to grow."""
    free = slot - app_size
    bigger = [k for k, v in FLASH_SIZES.items() if v > flash]
    hint = (f"; a board with more flash takes a bigger slot (--flash-size {bigger[0]})"
            if bigger else "")
    if free < 0:
        raise PrepareError(f"the app ({app_size} bytes) does not fit the {slot:#x} byte OTA slot "
                           f"of a {flash // chips.MIB} MiB board (over by {-free} bytes){hint}")
    if free < ROOM_TO_GROW:
        raise PrepareError(
            f"the app ({app_size} bytes) leaves only {free} bytes of the {slot:#x} byte OTA "
            f"slot of a {flash // chips.MIB} MiB board, less than the {ROOM_TO_GROW} bytes a "
            f"next release needs to grow into (MicroPython issue #12745){hint}, or build "
            "with fewer frozen modules")
    return free


def prepare(firmware: Path, output: Path, size: str | None = None) -> dict[str, Any]:
    """Write `output`: `firmware` with an OTA partition table; the JSON answer."""
    from mp_image_tool_esp32 import layouts
    from mp_image_tool_esp32.argtypes import PartList
    from mp_image_tool_esp32.firmware import Firmware
    from mp_image_tool_esp32.partition_table import PartitionError

    try:
        data = firmware.read_bytes()
    except OSError as exc:
        raise PrepareError(f"cannot read {firmware}: {exc.strerror or exc}") from None
    found = _check_source(data, firmware)
    flash = flash_size(size) if size else found.flash_size
    if flash not in FLASH_SIZES.values():
        raise PrepareError(f"the firmware is built for {flash // chips.MIB} MiB of flash: pass "
                           f"--flash-size with one of {', '.join(FLASH_SIZES)}")
    slot = chips.OTA_SLOT_BY_FLASH[flash]
    free = check_fit(len(found.app), slot, flash)
    if output.resolve() == firmware.resolve():
        raise PrepareError("-o must name a new file: the original firmware stays as it was")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(firmware, output)
    fw = None
    try:
        esp32check._quiet_mpit()
        fw = Firmware(str(output))
        table = copy.copy(fw.table)
        header = fw.file.header.copy()
        if flash != header.flash_size:
            table.max_size = flash
            header.flash_size = flash
        layout = PartList(layouts.ota_layout(table, slot))
        table = layouts.new_table(table, layout, len(found.app))
        table.check(len(found.app))
        fw.update_image(table, header)
    except (PartitionError, ValueError, OSError) as exc:
        output.unlink(missing_ok=True)
        raise PrepareError(f"writing the OTA partition table failed: {exc}") from None
    finally:
        if fw is not None:
            fw.file.close()
    return _answer(output, found, flash, free)


def _answer(output: Path, found: esp32check.Extracted, flash: int, free: int) -> dict[str, Any]:
    _, table, boot = esp32check.read_table(output.read_bytes())
    slots = [{"name": p.name, "offset": p.offset, "size": p.size}
             for p in table if p.type_name == "app"]
    parts = [{"name": p.name, "type": p.type_name, "subtype": p.subtype_name,
              "offset": p.offset, "size": p.size} for p in table]
    app = esp_image.parse_app_image(found.app)
    port = "PORT"
    return {
        "file": str(output), "chip": found.chip, "flash_size": flash,
        "version": app.version, "app_size": len(found.app), "app_from": found.partition,
        "slots": slots, "slot_size": slots[0]["size"] if slots else 0, "free": free,
        "partitions": parts,
        "flash_commands": [
            f"esptool --chip {found.chip} --port {port} erase-flash",
            f"esptool --chip {found.chip} --port {port} write-flash {boot:#x} {output}",
        ],
    }
