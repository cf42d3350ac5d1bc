"""Firmware-shaped files for the tests, built with the tools users have: a combined
firmware.bin as MicroPython's ESP32 builds write it (bootloader, partition table, app),
merged by esptool's own `merge-bin`, with a partition table written by mp-image-tool-esp32
(the layout of MicroPython's ports/esp32/partitions-4MiB.csv: one `factory` app)."""

from __future__ import annotations

import hashlib
import struct

from fota_host.boards import chips

MIB = 1024 * 1024
_FLASH_ID = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4}


def bootloader(chip: str = "esp32", flash_mb: int = 4) -> bytes:
    """A second-stage bootloader image: 0xE9 header with the chip id and flash size, one
    DRAM segment starting with esp_bootloader_desc_t (magic byte 0x50), checksum, SHA-256;
    no app descriptor (0xABCD5432) at 0x20."""
    from esptool.targets import CHIP_DEFS

    rom = CHIP_DEFS[chip]
    seg = bytes([0x50, 0, 0, 0]) + struct.pack("<I", 1) + b"v5.2-sim".ljust(32, b"\0")
    seg = seg.ljust(0x2000, b"\x11")
    header = struct.pack("<BBBBI", 0xE9, 1, 2, (_FLASH_ID[flash_mb] << 4) | 0,
                         rom.IROM_MAP_START)
    header += struct.pack("<BBBBHBHH4xB", 0xEE, 0, 0, 0, rom.IMAGE_CHIP_ID, 0, 0, 0xFFFF, 1)
    checksum = 0xEF
    for b in seg:
        checksum ^= b
    body = header + struct.pack("<II", rom.DROM_MAP_START - 0x100000, len(seg)) + seg
    body += b"\0" * (15 - len(body) % 16) + bytes([checksum])
    return body + hashlib.sha256(body).digest()


def partition_table(flash_mb: int = 4, factory: int = 0x1F0000) -> bytes:
    """MicroPython's plain table (nvs, phy_init, factory, vfs), by mp-image-tool-esp32."""
    from mp_image_tool_esp32.partition_table import PartitionTable

    table = PartitionTable(flash_mb * MIB)
    table.add_part("nvs", "nvs", 0x6000, 0x9000)
    table.add_part("phy_init", "phy", 0x1000, 0xF000)
    table.add_part("factory", "factory", factory, 0x10000)
    table.add_part("vfs", "fat", 0)
    return table.to_bytes()


def combined(app: bytes, chip: str = "esp32", flash_mb: int = 4,
             table: bytes | None = None) -> bytes:
    """firmware.bin: esptool's merge-bin of bootloader, table and app, starting at the
    bootloader's flash offset (0x1000 on the ESP32, 0 on the S3/C3/C6)."""
    from esptool.cmds import merge_bin

    boot = chips.ESP32_CHIPS[chip].bootloader_offset or 0
    parts = [(boot, bootloader(chip, flash_mb)),
             (0x8000, partition_table(flash_mb) if table is None else table),
             (0x10000, app)]
    out = merge_bin(parts, chip, output=None, target_offset=boot)
    assert isinstance(out, bytes)
    return out
