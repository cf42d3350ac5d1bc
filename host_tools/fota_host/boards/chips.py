"""The boards this project supports and each one's limits, with where they come from.

A *board* is what `--board` names (`esp32`, `esp32s3`, `esp32c3`, `esp32c6`, `pico_w`,
`pico2_w`); its *family* decides which device code runs (`esp32`: OTA app partitions through
`esp32.Partition`; `pico_w`: file slots) and its *port* which MicroPython stubs check it.

Sources (MicroPython v1.29 unless said otherwise):
- chip ids: the `chip_id` field of the ESP-IDF app image header (`esp_chip_id_t` in
  components/bootloader_support/include/esp_app_format.h); esptool's targets carry the same
  numbers as `IMAGE_CHIP_ID`, and this module reads them from there.
- watchdog maximum: ports/rp2/machine_wdt.c `WDT_TIMEOUT_MAX` is 8388 ms on the RP2040 and
  16777 ms on the RP2350 (a 24-bit counter that ticks twice per microsecond on the RP2040,
  once on the RP2350); ports/esp32/machine_wdt.c refuses only `timeout_ms <= 0` and hands the
  value to `esp_task_wdt_reconfigure` as a uint32, so the ESP32 family's limit is the port's
  `mp_int_t` (2**31 - 1 ms).
- flash block size: ports/esp32/esp32_partition.c `NATIVE_BLOCK_SIZE_BYTES` (4096, the SPI
  flash sector); ports/rp2/rp2_flash.c `BLOCK_SIZE_BYTES` (`FLASH_SECTOR_SIZE`, 4096).
- OTA slot size in the usual tables: ports/esp32/partitions-4MiB-ota.csv (ota_0/ota_1
  0x180000, the ESP32_GENERIC OTA variant), partitions-8MiBplus-ota.csv (0x270000),
  partitions-16MiB-ota.csv (0x280000). A 1.5 MiB slot is too small for some builds
  (MicroPython issue #12745), hence the headroom check of `fota board prepare`.
- bootloader offset in flash (where a combined firmware.bin starts): 0x1000 on the ESP32
  and ESP32-S2, 0x0 on the S3/C3/C6 (esptool's `BOOTLOADER_FLASH_OFFSET`).
- Pico W / Pico 2 W have no OTA partitions: the "slot" is a folder on the filesystem, so
  its size is the free filesystem space (none listed here).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
FLASH_BLOCK = 4096
ESP32_WDT_MAX_S = (2**31 - 1) / 1000
# OTA slot (ota_0 = ota_1) size by flash size, as MicroPython's own OTA tables have them.
OTA_SLOT_BY_FLASH = {4 * MIB: 0x180000, 8 * MIB: 0x270000, 16 * MIB: 0x280000}


@dataclass(frozen=True)
class Board:
    name: str                 # what --board takes
    title: str                # what people call it
    family: str               # "esp32" or "pico_w": which device code runs
    port: str                 # MicroPython port (stubs): "esp32" or "rp2"
    stubs: str                # the official stub package for `make typecheck`
    chip: str | None          # esptool chip name (ESP32 family only)
    chip_id: int | None       # app image header chip id
    wdt_max_s: float          # machine.WDT's largest timeout
    flash_block: int          # the flash block the slot is written in
    flash_size: int | None    # usual flash of the board (sets the simulated slot size)
    bootloader_offset: int | None

    @property
    def ota_slot(self) -> int | None:
        """The OTA slot of MicroPython's OTA table for the board's usual flash."""
        return OTA_SLOT_BY_FLASH.get(self.flash_size or 0)


def _chip_id(chip: str) -> int:
    from esptool.targets import CHIP_DEFS

    return int(CHIP_DEFS[chip].IMAGE_CHIP_ID)


def _esp(name: str, title: str, stubs: str, flash: int, boot: int) -> Board:
    return Board(name, title, "esp32", "esp32", stubs, name, _chip_id(name), ESP32_WDT_MAX_S,
                 FLASH_BLOCK, flash, boot)


BOARDS: dict[str, Board] = {
    "esp32": _esp("esp32", "ESP32", "micropython-esp32-stubs", 4 * MIB, 0x1000),
    "esp32s3": _esp("esp32s3", "ESP32-S3", "micropython-esp32-esp32-generic-s3-stubs",
                    8 * MIB, 0x0),
    "esp32c3": _esp("esp32c3", "ESP32-C3", "micropython-esp32-esp32-generic-c3-stubs",
                    4 * MIB, 0x0),
    "esp32c6": _esp("esp32c6", "ESP32-C6", "micropython-esp32-esp32-generic-c6-stubs",
                    4 * MIB, 0x0),
    "pico_w": Board("pico_w", "Pico W", "pico_w", "rp2", "micropython-rp2-rpi-pico-w-stubs",
                    None, None, 8.388, FLASH_BLOCK, None, None),
    "pico2_w": Board("pico2_w", "Pico 2 W", "pico_w", "rp2",
                     "micropython-rp2-rpi-pico2-w-stubs", None, None, 16.777, FLASH_BLOCK,
                     None, None),
}
ESP32_CHIPS = {b.chip: b for b in BOARDS.values() if b.chip}
# Chips esptool knows that a user may still pack for (no simulated board of their own).
EXTRA_CHIPS = ("esp32s2",)


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; one of {', '.join(BOARDS)}") from None


def family(name: str) -> str:
    return board(name).family


def chip_ids() -> dict[str, int]:
    """esptool chip name -> app image chip id, for every ESP32 chip `fota pack` takes."""
    out = {b.chip: b.chip_id for b in BOARDS.values() if b.chip and b.chip_id is not None}
    for chip in EXTRA_CHIPS:
        out[chip] = _chip_id(chip)
    return out
