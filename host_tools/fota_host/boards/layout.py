"""The OTA layout of an ESP32 board: its two app slots, read from a partition table or
taken from boards/chips.py. `fota hil` checks an image against it before any task.

Where the layout comes from (the first that applies):
- `table="board"`: the partition table in the connected board's flash at 0x8000, read
  over the serial port by mp-image-tool-esp32 (through esptool: the board is reset into
  its ROM bootloader for the read and reset back after it);
- `table=FILE`: a firmware file (the firmware.bin `fota board prepare` writes, or any
  MicroPython ESP32 firmware.bin) or a bare partition table (`esptool read-flash 0x8000
  0xc00 table.bin`), read by mp-image-tool-esp32;
- `flash_size="8M"`: MicroPython's own OTA table for that flash (chips.OTA_SLOT_BY_FLASH);
- otherwise the board's usual flash (chips.py: 4 MiB, 8 MiB on the ESP32-S3).

A table without two OTA app partitions (a factory-only MicroPython firmware, say) is an
error that says how to make the board OTA-ready.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import chips

FLASH_SIZES = {"4M": 4 * chips.MIB, "8M": 8 * chips.MIB, "16M": 16 * chips.MIB}
TABLE_OFFSET = 0x8000
TABLE_SIZE = 0xC00                    # what ESP-IDF reserves for the table's records
_PART_MAGIC = b"\xaa\x50"


class LayoutError(ValueError):
    pass


@dataclass
class Layout:
    source: str                       # where it was read: "chips.py ...", a file, a port
    flash_size: int
    slots: list[dict[str, Any]] = field(default_factory=list)   # ota_N: name/offset/size

    @property
    def slot_size(self) -> int:
        return min(s["size"] for s in self.slots)

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "flash_size": self.flash_size,
                "slot_size": self.slot_size, "slots": self.slots}


def flash_bytes(text: str) -> int:
    size = FLASH_SIZES.get(text.upper().removesuffix("B").removesuffix("I"))
    if size is None:
        raise LayoutError(f"flash size {text!r}: one of {', '.join(FLASH_SIZES)}")
    return size


def from_chips(board: str, flash_size: str | None = None) -> Layout:
    """MicroPython's OTA table for `flash_size`, or for the board's usual flash."""
    spec = chips.board(board)
    flash = flash_bytes(flash_size) if flash_size else spec.flash_size
    if spec.family != "esp32" or not flash:
        raise LayoutError(f"{board} has no OTA partitions: its slots are folders")
    slot = chips.OTA_SLOT_BY_FLASH[flash]
    where = (f"--flash-size {flash_size}" if flash_size else
             f"the {spec.title}'s usual {flash // chips.MIB} MiB flash")
    return Layout(f"chips.py: MicroPython's OTA table for {where}", flash,
                  [{"name": "ota_0", "offset": 0x10000, "size": slot},
                   {"name": "ota_1", "offset": 0x10000 + slot, "size": slot}])


def _from_table(table: Any, flash: int, source: str) -> Layout:
    slots = [{"name": p.name, "offset": p.offset, "size": p.size} for p in table
             if p.type_name == "app" and p.subtype_name.startswith("ota_")]
    has_otadata = any(p.type_name == "data" and p.subtype_name == "ota" for p in table)
    if len(slots) < 2 or not has_otadata:
        have = ", ".join(f"{p.name} ({p.type_name}/{p.subtype_name}, {p.size:#x})"
                         for p in table)
        missing = "two OTA app partitions (ota_0, ota_1)" if len(slots) < 2 else \
            "an otadata partition"
        raise LayoutError(
            f"{source}: the partition table has no {missing}, so the board cannot take an "
            f"OTA update (its partitions: {have}). Make the firmware OTA-ready once: "
            "`fota board prepare firmware.bin -o ota.bin` and flash ota.bin over USB "
            "(docs/boards.md).")
    return Layout(source, flash, slots)


def from_file(path: Path, board: str, flash_size: str | None = None) -> Layout:
    """The layout in a firmware file or a bare partition table dump."""
    from mp_image_tool_esp32.partition_table import PartitionError, PartitionTable

    from ..images import esp32check
    from ..images.esp_image import IMAGE_MAGIC, ImageError

    spec = chips.board(board)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LayoutError(f"cannot read {path}: {exc.strerror or exc}") from None
    esp32check._quiet_mpit()
    if data[:2] == _PART_MAGIC:
        flash = flash_bytes(flash_size) if flash_size else (spec.flash_size or 0)
        try:
            table = PartitionTable.from_bytes(data[:TABLE_SIZE].ljust(TABLE_SIZE, b"\xff"),
                                              flash)
        except PartitionError as exc:
            raise LayoutError(f"{path}: not a valid partition table: "
                              f"{str(exc).splitlines()[0]}") from None
        return _from_table(table, flash, str(path))
    if data[:1] != bytes([IMAGE_MAGIC]):
        raise LayoutError(
            f"{path} is neither an ESP32 firmware file nor a partition table: give the "
            "firmware.bin flashed on the board (fota board prepare writes one) or the "
            f"table read from it (esptool read-flash {TABLE_OFFSET:#x} {TABLE_SIZE:#x} "
            "table.bin)")
    try:
        header, table, _boot = esp32check.read_table(data)
    except ImageError as exc:
        raise LayoutError(f"{path}: {exc}") from None
    if header.chip_name != spec.chip:
        raise LayoutError(f"{path} is a firmware for {header.chip_name}, not for the "
                          f"{spec.title} (--board {board})")
    return _from_table(table, header.flash_size, str(path))


def from_board(port: str, board: str) -> Layout:
    """The partition table in the flash of the board on `port`, read through esptool."""
    from mp_image_tool_esp32.firmware import Firmware

    real = os.path.realpath(port)
    if not real.startswith("/dev/") or real.startswith("/dev/pts/"):
        raise LayoutError(
            f"{port} is not a USB serial port ({real}): esptool reads the partition table "
            "from a board's ROM bootloader, which a simulated board has not; pass --table "
            "FILE (the firmware.bin flashed on it) or --flash-size")
    from ..images import esp32check

    esp32check._quiet_mpit()
    try:
        fw = Firmware(real)
    except (OSError, ValueError, RuntimeError) as exc:
        raise LayoutError(f"reading the partition table from {port} through esptool "
                          f"failed: {exc}") from None
    try:
        chip = fw.header.chip_name
        if chip != chips.board(board).chip:
            raise LayoutError(f"the board on {port} is an {chip}, not --board {board}")
        return _from_table(fw.table, fw.header.flash_size, f"the board on {port}")
    finally:
        fw.file.close()


def resolve(board: str, port: str | None, table: str | None,
            flash_size: str | None) -> Layout:
    """The layout `fota hil` checks the image against (see the module's docstring)."""
    if table == "board":
        if flash_size:
            raise LayoutError("--flash-size and --table board: the board's table decides")
        return from_board(port or "", board)
    if table:
        return from_file(Path(table), board, flash_size)
    return from_chips(board, flash_size)
